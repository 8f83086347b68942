"""The authorizer's SQLite store: what must survive a restart."""

from ext_authz.anchoring.store import AnchorStore


def test_the_store_claims_an_approval_once_and_forgets_it_after_it_expires(tmp_path):
    store = AnchorStore(tmp_path / "a.sqlite3")
    assert store.claim_approval("alice/j1", exp=200, now=100) is True
    assert store.claim_approval("alice/j1", exp=200, now=150) is False
    assert AnchorStore(tmp_path / "a.sqlite3").claim_approval("alice/j1", exp=200, now=199) is False  # reopened: still used
    assert store.claim_approval("alice/j1", exp=400, now=201) is True  # expired entries are dropped

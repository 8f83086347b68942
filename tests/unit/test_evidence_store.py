"""The evidence store (SQLite engine): whole tokens with their anchor-queue rows, found by every index."""

import pytest

from ext_authz.anchoring.store import AnchorStore
from ext_authz.evidence.commit import GroupCommitter
from ext_authz.evidence.sqlite import SqliteEvidenceStore
from ext_authz.evidence.store import EvidenceQuery, EvidenceRecord, EvidenceUnavailable


def record(i, **kw):
    base = dict(jti=f"j{i}", kind="sae", token=f"tok.{i}.sig", token_hash=i.to_bytes(32, "big"), issued_at=100 + i,
                reason="OK", agent="spiffe://td/agent/a", target="payments-api")
    base.update(kw)
    return EvidenceRecord(**base)


def test_one_append_stores_the_tokens_and_their_anchor_queue_rows(tmp_path):
    db = tmp_path / "e.sqlite3"
    store = SqliteEvidenceStore(db)
    store.append([record(1), record(2, kind="denial", reason="AMOUNT_OVER_LIMIT")])
    assert store.get("j1").token == "tok.1.sig"
    assert store.by_hash((2).to_bytes(32, "big")).reason == "AMOUNT_OVER_LIMIT"
    anchor = AnchorStore(db)
    assert anchor.counts()["unbatched"] == 2  # the anchorer sees both leaves
    assert anchor.proof_for((1).to_bytes(32, "big")).status == "queued"


def test_records_are_found_by_agent_session_parent_target_reason_and_time(tmp_path):
    store = SqliteEvidenceStore(tmp_path / "e.sqlite3")
    store.append([record(1), record(2, agent="spiffe://td/agent/b", session="s1"),
                  record(3, parent="ab" * 32, target="ledger"), record(4, kind="denial", reason="RISK_TOO_HIGH")])
    jtis = lambda **q: [r.jti for r in store.find(EvidenceQuery(**q))]  # noqa: E731
    assert jtis(agent="spiffe://td/agent/b") == ["j2"]
    assert jtis(session="s1") == ["j2"]
    assert jtis(parent="ab" * 32) == ["j3"]
    assert jtis(target="ledger") == ["j3"]
    assert jtis(reason="RISK_TOO_HIGH") == ["j4"]
    assert jtis(kind="denial") == ["j4"]
    assert jtis(since=102, until=104) == ["j2", "j3"]
    assert jtis(agent="spiffe://td/agent/a", limit=2) == ["j1", "j3"]


def test_retention_drops_only_anchored_tokens_older_than_the_cutoff(tmp_path):
    db = tmp_path / "e.sqlite3"
    store = SqliteEvidenceStore(db)
    store.append([record(i) for i in range(1, 5)])
    anchor = AnchorStore(db)
    root, first, last, _ = anchor.cut_batch(2)  # j1, j2 batched and anchored; j3, j4 still queued
    anchor.mark_anchored(root, "0x" + "11" * 32, 7)
    assert store.purge(before=10_000) == 2
    assert [r.jti for r in store.find(EvidenceQuery())] == ["j3", "j4"]  # never an unanchored one
    assert anchor.proof_for((1).to_bytes(32, "big")).status == "anchored"  # the hash and proof stay


def test_the_store_claims_an_approval_once_and_forgets_it_after_it_expires(tmp_path):
    store = SqliteEvidenceStore(tmp_path / "e.sqlite3")
    assert store.claim_approval("alice/j1", exp=200, now=100) is True
    assert store.claim_approval("alice/j1", exp=200, now=150) is False
    assert SqliteEvidenceStore(tmp_path / "e.sqlite3").claim_approval("alice/j1", exp=200, now=199) is False
    assert store.claim_approval("alice/j1", exp=400, now=201) is True  # expired entries are dropped


def test_a_store_that_cannot_write_raises_evidence_unavailable(tmp_path):
    db = tmp_path / "e.sqlite3"
    store = SqliteEvidenceStore(db)
    store.probe()
    readonly = SqliteEvidenceStore(f"file:{db}?mode=ro")  # opened read-only: every write fails
    with pytest.raises(EvidenceUnavailable):
        readonly.append([record(1)])
    with pytest.raises(EvidenceUnavailable):
        readonly.probe()
    assert store.get("j1") is None


def test_group_commit_resolves_every_future_after_one_transaction(tmp_path):
    store = SqliteEvidenceStore(tmp_path / "e.sqlite3")
    writer = GroupCommitter(store)
    futures = [writer.submit(record(i)) for i in range(1, 51)]  # queued before the writer runs: one group
    writer.start()
    for f in futures:
        assert f.result(timeout=10) is None
    writer.stop()
    assert writer.commits == 1 and writer.committed == 50
    assert store.count() == 50


class FailingStore:
    def append(self, records):
        raise EvidenceUnavailable("disk full")


def test_group_commit_fails_every_decision_of_a_failed_write_closed():
    writer = GroupCommitter(FailingStore())
    writer.start()
    futures = [writer.submit(record(i)) for i in range(3)]
    for f in futures:
        with pytest.raises(EvidenceUnavailable):
            f.result(timeout=10)
    assert writer.last_error == "disk full"
    writer.stop()


def test_the_writer_applies_the_retention_setting_on_its_own(tmp_path):
    import time

    db = tmp_path / "e.sqlite3"
    store = SqliteEvidenceStore(db)
    store.append([record(1), record(2, issued_at=int(time.time()))])  # one issued long ago, one now
    anchor = AnchorStore(db)
    root, *_ = anchor.cut_batch(10)
    anchor.mark_anchored(root, "0x" + "22" * 32, 9)
    writer = GroupCommitter(store, retention_seconds=3600, purge_interval_seconds=0.05)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while store.get("j1") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.stop()
    assert store.get("j1") is None and store.get("j2") is not None  # older than the retention: its token dropped


def test_a_group_larger_than_one_statement_is_still_one_transaction(tmp_path):
    db = tmp_path / "e.sqlite3"
    store = SqliteEvidenceStore(db)
    store.append([record(i) for i in range(1, 1200)])  # three statements of at most 512 rows, one transaction
    assert store.count() == 1199 and AnchorStore(db).counts()["unbatched"] == 1199

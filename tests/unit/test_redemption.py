"""The SQLite redemption store: first use once, concurrent callers batched, errors fail closed."""

import concurrent.futures
import sqlite3

import pytest

from ext_authz.errors import ConfigError
from ext_authz.sdk.redemption import RETENTION_SKEW_SECONDS, RedemptionUnavailable, SqliteRedemptions, open_redemptions


def test_a_jti_is_redeemed_once_and_stays_redeemed_for_the_next_process(tmp_path):
    store = SqliteRedemptions(tmp_path / "r.sqlite3")
    assert store.redeem("a", 2_000_000_000) is True
    assert store.redeem("a", 2_000_000_000) is False
    store.close()
    again = SqliteRedemptions(tmp_path / "r.sqlite3")
    assert again.redeem("a", 2_000_000_000) is False and again.redeem("b", 2_000_000_000) is True
    again.close()


def test_concurrent_redemptions_of_one_jti_have_exactly_one_winner(tmp_path):
    store = SqliteRedemptions(tmp_path / "r.sqlite3")
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: store.redeem(f"j{i % 10}", 2_000_000_000), range(500)))
    assert results.count(True) == 10 and store.count() == 10
    store.close()


def test_expired_entries_are_purged_but_live_ones_kept(tmp_path):
    store = SqliteRedemptions(tmp_path / "r.sqlite3")
    store.redeem("old", 1000)  # exp + skew long past
    store.redeem("live", 2_000_000_000)
    assert store.count() == 1
    db = sqlite3.connect(tmp_path / "r.sqlite3")
    assert db.execute("SELECT exp FROM redeemed WHERE jti='live'").fetchone() == (2_000_000_000 + RETENTION_SKEW_SECONDS,)
    store.close()


def test_a_store_that_cannot_write_fails_closed(tmp_path):
    store = SqliteRedemptions(tmp_path / "r.sqlite3")
    store._db.execute("DROP TABLE redeemed")  # any write error: the caller must refuse, not allow
    with pytest.raises(RedemptionUnavailable):
        store.redeem("x", 2_000_000_000)
    store.close()


@pytest.mark.parametrize("url", ["memcached://x", "postgres://db/x"], ids=["memcached", "postgres_not_supported"])
def test_unknown_store_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="expected sqlite"):
        open_redemptions(url)


def test_sqlite_urls(tmp_path):
    store = open_redemptions(f"sqlite://{tmp_path / 'u.sqlite3'}")
    assert store.redeem("x", 2_000_000_000) and (tmp_path / "u.sqlite3").exists()
    store.close()


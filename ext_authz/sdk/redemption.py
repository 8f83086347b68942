"""Single use of an SAE: a jti is redeemed once, durably, in a store every enforcement point of a target shares.

`redeem(jti, exp)` answers True exactly once per jti for as long as the SAE could still verify (until `exp`
plus the verifiers' clock skew); every later call, from any worker, process, restart or replica sharing the
store, answers False. A store that cannot answer raises RedemptionUnavailable and the caller refuses the
request (fail closed).

- `sqlite:///path` (embedded default): one host. WAL with synchronous=FULL, so a redemption survives a
  crash or power loss of the host once `redeem` returned; every Envoy worker's verifier and every process on
  the host shares the file.
- `redis://host:port/db`: replicas on several hosts. `SET key 1 NX EXAT exp` is the atomic first-use test;
  run Redis with `appendonly yes` and `appendfsync always` so an acknowledged redemption survives its restart.

Only the standard library is imported here; the Redis client is loaded when a redis:// store is opened.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from ext_authz.errors import ConfigError, SealgateError

# SAEs live at most 300 s (seed design); entries are kept this long past exp so no verifier's skew reopens one
RETENTION_SKEW_SECONDS = 60
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS redeemed (
    jti TEXT PRIMARY KEY,
    exp INTEGER NOT NULL,
    redeemed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS redeemed_exp ON redeemed(exp);
"""


class RedemptionUnavailable(SealgateError):
    """The store could not record or check a redemption: refuse the request."""


class RedemptionStore(Protocol):
    def submit(self, jti: str, exp: int) -> concurrent.futures.Future[bool]:
        """Starts a redemption; the future holds True on first use (or raises RedemptionUnavailable)."""
        ...

    def redeem(self, jti: str, exp: int) -> bool: ...

    def close(self) -> None: ...


class SqliteRedemptions:
    """Redemptions in a SQLite file on the PEP's host (shared by its verifier threads, processes and restarts).

    Group commit: one writer thread takes every redemption waiting and commits them in one transaction, so
    one fsync serves all requests in flight instead of one each.
    """

    MAX_BATCH = 512

    def __init__(self, path: str | Path, timeout_seconds: float = 2.0):
        self._path = Path(path)
        self._timeout = timeout_seconds
        self._queue: queue.Queue[tuple[str, int, concurrent.futures.Future[bool]] | None] = queue.Queue()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self._path, timeout=5.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # NORMAL lost committed rows after a disk error here
            self._db.executescript(SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"redemption store {self._path}: {e}") from e
        self._db_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="sealgate-redeem", daemon=True)
        self._writer.start()

    def submit(self, jti: str, exp: int) -> concurrent.futures.Future[bool]:
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._queue.put((jti, int(exp) + RETENTION_SKEW_SECONDS, future))
        return future

    def redeem(self, jti: str, exp: int) -> bool:
        try:
            return self.submit(jti, exp).result(timeout=self._timeout)
        except concurrent.futures.TimeoutError as e:
            raise RedemptionUnavailable(f"redemption store {self._path}: no commit within {self._timeout} s") from e

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._commit(batch)

    def _insert(self, rows: list[tuple[str, int]]) -> list[bool]:
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                now = time.time()
                results = [self._db.execute("INSERT OR IGNORE INTO redeemed(jti, exp, redeemed_at) VALUES (?, ?, ?)",
                                            (jti, exp, now)).rowcount == 1 for jti, exp in rows]
                self._db.execute("DELETE FROM redeemed WHERE exp < ?", (int(now),))
                self._db.execute("COMMIT")
                return results
            except sqlite3.Error as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise RedemptionUnavailable(f"redemption store {self._path}: {e}") from e

    def _commit(self, batch: list[tuple[str, int, concurrent.futures.Future[bool]]]) -> None:
        try:
            results = self._insert([(jti, exp) for jti, exp, _ in batch])
        except RedemptionUnavailable as e:
            for _, _, future in batch:
                future.set_exception(e)
            return
        for (_, _, future), first_use in zip(batch, results, strict=True):
            future.set_result(first_use)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM redeemed").fetchone()[0])

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=5)
        self._db.close()


class RedisRedemptions:
    """Redemptions in Redis, shared by PEP replicas on several hosts."""

    PREFIX = "sealgate:sae:"

    def __init__(self, url: str, timeout_seconds: float = 0.5):
        import redis

        self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                                 socket_connect_timeout=timeout_seconds)
        self._url = url
        self._executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="sealgate-redis")

    def submit(self, jti: str, exp: int) -> concurrent.futures.Future[bool]:
        return self._executor.submit(self.redeem, jti, exp)

    def redeem(self, jti: str, exp: int) -> bool:
        import redis

        try:
            return bool(self._client.set(self.PREFIX + jti, 1, nx=True, exat=int(exp) + RETENTION_SKEW_SECONDS))
        except redis.RedisError as e:
            raise RedemptionUnavailable(f"redemption store {self._url}: {e}") from e

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()


def open_redemptions(url: str) -> RedemptionStore:
    """`sqlite:///abs/path`, `sqlite:relative/path` or a bare path; `redis://host:port/db`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("redis", "rediss"):
        return RedisRedemptions(url)
    if parsed.scheme == "sqlite":
        return SqliteRedemptions(parsed.path if parsed.netloc == "" else parsed.netloc + parsed.path)
    if parsed.scheme == "":
        return SqliteRedemptions(url)
    raise ConfigError(f"redemption store {url!r}: expected sqlite:///path or redis://host:port/db")

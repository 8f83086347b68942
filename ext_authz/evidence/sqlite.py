"""The embedded evidence store: SQLite, in the same file as the anchor queue (`anchor.db_path`).

Durability settings, chosen after measuring (DESIGN.md, "Storage and chain"; tests/integration/test_evidence_disk.py):
WAL with `synchronous=FULL`, so every commit fsyncs the WAL before it returns. With `synchronous=NORMAL` an ext4
error wiped committed transactions (and reused sequence numbers); with FULL none were lost. One statement
writes the tokens and (by a trigger) their `leaves` rows, so the evidence and the anchor queue are one fsync
(`ext_authz.evidence.commit` batches concurrent decisions into it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ext_authz.anchoring.store import SCHEMA as ANCHOR_SCHEMA
from ext_authz.anchoring.store import connect
from ext_authz.evidence.store import EvidenceQuery, EvidenceRecord, EvidenceUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence (
    jti TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('sae', 'denial')),
    hash BLOB NOT NULL UNIQUE,
    token TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    agent TEXT,
    target TEXT,
    session TEXT,
    parent TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_agent ON evidence(agent, issued_at);
CREATE INDEX IF NOT EXISTS evidence_session ON evidence(session) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS evidence_parent ON evidence(parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS evidence_target ON evidence(target, issued_at);
CREATE INDEX IF NOT EXISTS evidence_reason ON evidence(reason, issued_at);
CREATE INDEX IF NOT EXISTS evidence_time ON evidence(issued_at);
-- approvals already turned into an SAE: single use across restarts (and processes sharing the file)
CREATE TABLE IF NOT EXISTS used_approvals (
    jti TEXT PRIMARY KEY,
    exp INTEGER NOT NULL
);
-- the anchor-queue row of each record, in the same statement (so one write stores both)
CREATE TRIGGER IF NOT EXISTS evidence_leaf AFTER INSERT ON evidence BEGIN
    INSERT OR IGNORE INTO leaves(hash, kind, decision_id, created) VALUES (NEW.hash, NEW.kind, NEW.jti, NEW.created);
END;
-- readiness: one row rewritten by probe(), a durable write that fails while the disk does
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL,
    pad BLOB
);
"""

log = logging.getLogger("sealgate.evidence")
_COLUMNS = "jti, kind, hash, token, issued_at, reason, agent, target, session, parent"
_INSERT = f"INSERT OR IGNORE INTO evidence({_COLUMNS}, created) VALUES "
_ROW = "(?,?,?,?,?,?,?,?,?,?,?)"
_ROWS_PER_STATEMENT = 512  # 11 parameters each, well under SQLite's 32766


def _record(row: tuple[Any, ...]) -> EvidenceRecord:
    jti, kind, digest, token, iat, reason, agent, target, session, parent = row
    return EvidenceRecord(jti, kind, token, bytes(digest), iat, reason, agent, target, session, parent)


class SqliteEvidenceStore:
    """`EvidenceStore` on SQLite (one connection per thread; a connection that failed is reopened)."""

    CHECKPOINT_SECONDS = 1.0

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._checkpointing: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            conn = self._conn()
            conn.executescript(ANCHOR_SCHEMA + SCHEMA)
        except sqlite3.Error as e:
            self._drop()
            raise EvidenceUnavailable(f"evidence store {self.path}: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, autocheckpoint=self._checkpointing is None)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        """After an error the connection may hold a broken transaction or a stale WAL view: reopen next time."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _write(self, what: str, fn: Any) -> Any:
        try:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                return fn(conn)
        except sqlite3.Error as e:
            self._drop()
            raise EvidenceUnavailable(f"{what} not persisted to {self.path}: {e}") from e

    def append(self, records: Sequence[EvidenceRecord]) -> None:
        """One statement per up to 512 records, its own transaction when it is the only one: the trigger adds the
        anchor-queue rows inside it. One sqlite3 call is one GIL hand-off: the writer thread otherwise waited for
        the busy event loop at every statement of the transaction."""
        if not records:
            return
        now = time.time()
        params = [value for r in records for value in (r.jti, r.kind, r.token_hash, r.token, r.issued_at, r.reason,
                                                        r.agent, r.target, r.session, r.parent, now)]
        width = 11
        chunks = [params[i:i + width * _ROWS_PER_STATEMENT] for i in range(0, len(params), width * _ROWS_PER_STATEMENT)]

        def insert(conn: sqlite3.Connection, chunk: list[Any]) -> None:
            conn.execute(_INSERT + ",".join([_ROW] * (len(chunk) // width)), chunk)

        if len(chunks) == 1:  # autocommit: the statement is the transaction
            try:
                insert(self._conn(), chunks[0])
            except sqlite3.Error as e:
                self._drop()
                raise EvidenceUnavailable(f"{len(records)} evidence records not persisted to {self.path}: {e}") from e
            return
        def insert_all(conn: sqlite3.Connection) -> None:
            for chunk in chunks:
                insert(conn, chunk)

        self._write(f"{len(records)} evidence records", insert_all)

    def claim_approval(self, key: str, exp: int, now: float) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM used_approvals WHERE exp < ?", (int(now),))
            return bool(conn.execute("INSERT OR IGNORE INTO used_approvals(jti, exp) VALUES (?, ?)",
                                     (key, exp)).rowcount == 1)

        return bool(self._write("approval claim", claim))

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            self._drop()
            raise EvidenceUnavailable(f"evidence store {self.path}: {e}") from e

    def get(self, jti: str) -> EvidenceRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM evidence WHERE jti=?", (jti,))
        return _record(rows[0]) if rows else None

    def by_hash(self, token_hash: bytes) -> EvidenceRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM evidence WHERE hash=?", (token_hash,))
        return _record(rows[0]) if rows else None

    def find(self, query: EvidenceQuery) -> list[EvidenceRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("jti", query.jti), ("agent", query.agent), ("session", query.session),
                              ("parent", query.parent), ("target", query.target), ("reason", query.reason),
                              ("kind", query.kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            where.append("issued_at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("issued_at < ?")
            params.append(query.until)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT {_COLUMNS} FROM evidence{clause} ORDER BY issued_at, rowid LIMIT ?",
                          (*params, max(0, query.limit)))
        return [_record(r) for r in rows]

    def purge(self, before: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                "DELETE FROM evidence WHERE issued_at < ? AND hash IN (SELECT l.hash FROM leaves l "
                "JOIN batches b ON b.root = l.batch_root WHERE b.status = 'anchored')", (before,)).rowcount)

        return int(self._write("retention purge", delete))

    PROBE_BYTES = 256 * 1024  # about one busy group's worth: a one-page write can fit where a group does not

    def probe(self) -> None:
        self._write("readiness probe", lambda conn: conn.execute(
            "INSERT OR REPLACE INTO probe(id, at, pad) VALUES (1, ?, zeroblob(?))", (time.time(), self.PROBE_BYTES)))

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM evidence", ())[0][0])

    def start_checkpoints(self) -> None:
        """Copies the WAL into the database from a thread of its own, every CHECKPOINT_SECONDS: a commit that ran
        SQLite's automatic checkpoint waited for it (writes of up to 4 MB and an fsync, the p99 of every decision
        in its group). Connections opened after this call leave checkpoints to this thread."""
        self._drop()  # this thread's connection is reopened without automatic checkpoints
        self._checkpointing = threading.Thread(target=self._checkpoint_loop, name="sealgate-checkpoint", daemon=True)
        self._checkpointing.start()

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(self.CHECKPOINT_SECONDS):
            try:
                self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:  # the commits report the disk's state; this only retries
                self._drop()
                log.warning("WAL checkpoint failed, will retry: %s", e)

    def close(self) -> None:
        self._stop.set()
        self._drop()

"""Asynchronous anchoring: durable SQLite queue -> Merkle batch -> SaeAnchor transaction.

The decision path only appends to an in-memory deque (~0.1 us); a writer thread in
the authorizer persists it every `LeafQueue.FLUSH_SECONDS`. A separate process
(`sealgate anchor`, holding the anchoring wallet key) cuts batches and anchors them;
a batch is written to the store *before* its transaction is sent, so a restart
resumes it (and recognises a root already anchored on-chain instead of sending
it twice).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from .chain import ChainClient
from .errors import AnchorError, ChainError
from .merkle import MerkleTree

log = logging.getLogger("sealgate.anchor")

SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    created REAL NOT NULL,
    batch_root BLOB
);
CREATE INDEX IF NOT EXISTS leaves_unbatched ON leaves(seq) WHERE batch_root IS NULL;
CREATE INDEX IF NOT EXISTS leaves_batch ON leaves(batch_root);
CREATE TABLE IF NOT EXISTS batches (
    root BLOB PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    leaf_count INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'anchored')),
    tx_hash TEXT,
    block INTEGER,
    created REAL NOT NULL
);
-- approvals already turned into an SAE: single use across restarts (and processes sharing the file)
CREATE TABLE IF NOT EXISTS used_approvals (
    jti TEXT PRIMARY KEY,
    exp INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class InclusionProof:
    sae_hash: bytes
    root: bytes
    proof: list[bytes]
    status: str
    tx_hash: str | None
    block: int | None


class AnchorStore:
    """SQLite store of leaves and batches (WAL; one connection per thread)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def claim_approval(self, jti: str, exp: int, now: float) -> bool:
        """Records an approval as used; False if it was used before. Expired entries are dropped."""
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM used_approvals WHERE exp < ?", (int(now),))
            return conn.execute("INSERT OR IGNORE INTO used_approvals(jti, exp) VALUES (?, ?)", (jti, exp)).rowcount == 1

    def add_leaves(self, rows: list[tuple[bytes, str, str, float]]) -> None:
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO leaves(hash, kind, decision_id, created) VALUES (?,?,?,?)", rows)

    def cut_batch(self, max_leaves: int) -> tuple[bytes, int, int, list[bytes]] | None:
        """Groups the oldest unbatched leaves into a pending batch; returns it."""
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT seq, hash FROM leaves WHERE batch_root IS NULL ORDER BY seq LIMIT ?", (max_leaves,)
            ).fetchall()
            if not rows:
                return None
            # the contract requires a contiguous range: stop at the first gap
            first = rows[0][0]
            rows = [r for i, r in enumerate(rows) if r[0] == first + i]
            values = [r[1] for r in rows]
            root = MerkleTree.build(values).root
            last = rows[-1][0]
            conn.execute(
                "INSERT INTO batches(root, first_seq, last_seq, leaf_count, status, created) VALUES (?,?,?,?, 'pending', ?)",
                (root, first, last, len(rows), time.time()),
            )
            conn.execute("UPDATE leaves SET batch_root=? WHERE seq BETWEEN ? AND ?", (root, first, last))
        return root, first, last, values

    def pending_batches(self) -> list[tuple[bytes, int, int, int]]:
        return self._conn().execute(
            "SELECT root, first_seq, last_seq, leaf_count FROM batches WHERE status='pending' ORDER BY first_seq"
        ).fetchall()

    def mark_anchored(self, root: bytes, tx_hash: str, block: int) -> None:
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE batches SET status='anchored', tx_hash=?, block=? WHERE root=?", (tx_hash, block, root))

    def proof_for(self, sae_hash: bytes) -> InclusionProof | None:
        conn = self._conn()
        row = conn.execute("SELECT batch_root FROM leaves WHERE hash=?", (sae_hash,)).fetchone()
        if row is None:
            return None
        root = row[0]
        if root is None:
            return InclusionProof(sae_hash, b"", [], "queued", None, None)
        status, tx_hash, block = conn.execute("SELECT status, tx_hash, block FROM batches WHERE root=?", (root,)).fetchone()
        values = [r[0] for r in conn.execute("SELECT hash FROM leaves WHERE batch_root=? ORDER BY seq", (root,))]
        tree = MerkleTree.build(values)
        return InclusionProof(sae_hash, root, tree.proof(sae_hash), status, tx_hash, block)

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {
            "leaves": conn.execute("SELECT count(*) FROM leaves").fetchone()[0],
            "unbatched": conn.execute("SELECT count(*) FROM leaves WHERE batch_root IS NULL").fetchone()[0],
            "batches_pending": conn.execute("SELECT count(*) FROM batches WHERE status='pending'").fetchone()[0],
            "batches_anchored": conn.execute("SELECT count(*) FROM batches WHERE status='anchored'").fetchone()[0],
        }


class LeafQueue:
    """Decision-path side: an in-memory deque persisted to the store by a writer thread.

    Lives in the authorizer process, which holds no wallet key; the separate
    anchoring process (`sealgate anchor`) reads the same store.
    """

    FLUSH_SECONDS = 0.2  # a crash loses at most this much of the queue; see README

    def __init__(self, store: AnchorStore):
        self.store = store
        self._queue: collections.deque[tuple[bytes, str, str, float]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def enqueue(self, sae_hash: bytes, kind: str, decision_id: str) -> None:
        """Decision path: never blocks, never touches disk or chain."""
        self._queue.append((sae_hash, kind, decision_id, time.time()))

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self) -> int:
        rows = []
        while self._queue:
            rows.append(self._queue.popleft())
        if rows:
            try:
                self.store.add_leaves(rows)
            except sqlite3.Error:
                self._queue.extendleft(reversed(rows))  # keep them for the next attempt
                raise
        return len(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sealgate-leaves", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_SECONDS):
            try:
                self.flush()
                self.last_error = None
            except sqlite3.Error as e:
                self.last_error = str(e)
                log.warning("persisting anchor leaves failed, will retry: %s", e)


class Anchorer:
    """Anchoring side: cuts batches of persisted leaves and sends them to SaeAnchor."""

    def __init__(self, store: AnchorStore, client: ChainClient, anchor_address: str, account: LocalAccount,
                 *, interval_seconds: float = 1.0, batch_max_leaves: int = 512):
        self.store = store
        self._client = client
        self._anchor = client.contract("SaeAnchor", anchor_address)
        self._account = account
        self._interval = interval_seconds
        self._batch_max = batch_max_leaves
        self.last_error: str | None = None

    def anchor_pending(self) -> int:
        """Cuts batches of persisted leaves and anchors every pending batch. Returns batches anchored."""
        while self.store.cut_batch(self._batch_max):
            pass
        done = 0
        for root, first, last, count in self.store.pending_batches():
            already = self._anchor.functions.batchOf(root).call()
            if already[0] != 0:  # anchored before a restart: recover the tx from the event
                logs = self._anchor.events.BatchAnchored().get_logs(
                    from_block=already[0], to_block=already[0], argument_filters={"root": root}
                )
                tx = Web3.to_hex(logs[0]["transactionHash"]) if logs else ""
                self.store.mark_anchored(root, tx, already[0])
            else:
                receipt = self._client.transact(self._account, self._anchor.functions.anchor(root, count, first, last))
                self.store.mark_anchored(root, Web3.to_hex(receipt.transactionHash), receipt.blockNumber)
            done += 1
        return done

    def run(self, stop: threading.Event) -> None:
        """Anchors every `interval_seconds` until `stop` is set, then once more."""
        while True:
            stopping = stop.wait(self._interval)
            try:
                self.anchor_pending()
                self.last_error = None
            except (ChainError, AnchorError, sqlite3.Error) as e:
                self.last_error = str(e)
                log.warning("anchoring failed, will retry: %s", e)
            except Exception as e:  # keep going: the leaves are safe in the store
                self.last_error = f"unexpected: {e!r}"
                log.exception("anchoring error")
            if stopping:
                return

"""The anchor store: SAE / denial hashes, Merkle batches and their on-chain transactions (SQLite).

The authorizer writes the `leaves` rows together with the tokens themselves, in one durable transaction of the
evidence store (`ext_authz.evidence.sqlite`, same file); the anchoring worker reads and batches them here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ext_authz.anchoring.merkle import MerkleTree

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
-- status: pending (cut, maybe sent: tx_hash is the last one sent) -> mined (in block `block`, hash
-- `block_hash`, waiting for confirmations; back to pending if a reorg drops it) -> anchored (confirmed).
-- chain_first/chain_last: the range SaeAnchor assigned (its own counter; local seqs are only the order).
CREATE TABLE IF NOT EXISTS batches (
    root BLOB PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    leaf_count INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'mined', 'anchored')),
    tx_hash TEXT,
    block INTEGER,
    created REAL NOT NULL,
    block_hash TEXT,
    chain_first INTEGER,
    chain_last INTEGER
);
"""
INSERT_LEAF = "INSERT OR IGNORE INTO leaves(hash, kind, decision_id, created) VALUES (?,?,?,?)"


def connect(path: str, autocheckpoint: bool = True) -> sqlite3.Connection:
    """WAL, and `synchronous=FULL`: a commit is on disk when it returns. With NORMAL an ext4 error wiped committed
    rows and reused sequence numbers (overlapping on-chain ranges); with FULL nothing committed was lost.
    `autocheckpoint` False: this connection's commits never copy the WAL into the database (someone else
    checkpoints, off the commit path: the evidence store does, so no decision waits for a checkpoint)."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


@dataclass(frozen=True)
class InclusionProof:
    sae_hash: bytes
    root: bytes
    proof: list[bytes]
    status: str
    tx_hash: str | None
    block: int | None
    chain_first: int | None = None  # the range SaeAnchor gave the batch
    chain_last: int | None = None


class AnchorStore:
    """SQLite store of leaves and batches (WAL, synchronous=FULL; one connection per thread)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def add_leaves(self, rows: list[tuple[bytes, str, str, float]]) -> None:
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(INSERT_LEAF, rows)

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

    def mark_anchored(self, root: bytes, tx_hash: str, block: int, block_hash: str | None = None,
                      chain_range: tuple[int, int] | None = None, status: str = "anchored") -> None:
        """Records the transaction that anchored `root`; status 'mined' until it has its confirmations."""
        first, last = chain_range if chain_range is not None else (None, None)
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE batches SET status=?, tx_hash=?, block=?, block_hash=?, chain_first=?, chain_last=? "
                         "WHERE root=?", (status, tx_hash, block, block_hash, first, last, root))

    def mark_sent(self, root: bytes, tx_hash: str) -> None:
        """The last transaction sent for a pending batch (a restart looks for it before sending again)."""
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE batches SET tx_hash=? WHERE root=? AND status='pending'", (tx_hash, root))

    def mark_confirmed(self, root: bytes) -> None:
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE batches SET status='anchored' WHERE root=? AND status='mined'", (root,))

    def reset_batch(self, root: bytes) -> None:
        """A reorg dropped the batch's transaction: it is pending again (same leaves, same root)."""
        conn = self._conn()
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE batches SET status='pending', tx_hash=NULL, block=NULL, block_hash=NULL, chain_first=NULL, "
                         "chain_last=NULL WHERE root=?", (root,))

    def mined_batches(self) -> list[tuple[bytes, str, int, str | None]]:
        """(root, tx_hash, block, block_hash) of batches mined but not yet confirmed."""
        return self._conn().execute(
            "SELECT root, tx_hash, block, block_hash FROM batches WHERE status='mined' ORDER BY first_seq").fetchall()

    def batch_values(self, root: bytes) -> list[bytes]:
        return [r[0] for r in self._conn().execute("SELECT hash FROM leaves WHERE batch_root=? ORDER BY seq", (root,))]

    def sent_tx(self, root: bytes) -> str | None:
        row = self._conn().execute("SELECT tx_hash FROM batches WHERE root=?", (root,)).fetchone()
        return row[0] if row else None

    def backlog(self, now: float) -> tuple[int, float | None]:
        """Leaves not yet in a confirmed batch, and the age in seconds of the oldest of them."""
        row = self._conn().execute(
            "SELECT count(*), min(l.created) FROM leaves l LEFT JOIN batches b ON l.batch_root = b.root "
            "WHERE b.status IS NULL OR b.status != 'anchored'").fetchone()
        return row[0], (None if row[1] is None else max(0.0, now - row[1]))

    def anchored_batches(self) -> list[tuple[bytes, int, int, int, str, int]]:
        """(root, leaf_count, chain_first, chain_last, tx_hash, block) of confirmed batches, in chain order."""
        return self._conn().execute(
            "SELECT root, leaf_count, chain_first, chain_last, tx_hash, block FROM batches WHERE status='anchored' "
            "ORDER BY chain_first").fetchall()

    def proof_for(self, sae_hash: bytes) -> InclusionProof | None:
        conn = self._conn()
        row = conn.execute("SELECT batch_root FROM leaves WHERE hash=?", (sae_hash,)).fetchone()
        if row is None:
            return None
        root = row[0]
        if root is None:
            return InclusionProof(sae_hash, b"", [], "queued", None, None)
        status, tx_hash, block, first, last = conn.execute(
            "SELECT status, tx_hash, block, chain_first, chain_last FROM batches WHERE root=?", (root,)).fetchone()
        values = [r[0] for r in conn.execute("SELECT hash FROM leaves WHERE batch_root=? ORDER BY seq", (root,))]
        tree = MerkleTree.build(values)
        return InclusionProof(sae_hash, root, tree.proof(sae_hash), status, tx_hash, block, first, last)

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {
            "leaves": conn.execute("SELECT count(*) FROM leaves").fetchone()[0],
            "unbatched": conn.execute("SELECT count(*) FROM leaves WHERE batch_root IS NULL").fetchone()[0],
            "batches_pending": conn.execute("SELECT count(*) FROM batches WHERE status='pending'").fetchone()[0],
            "batches_mined": conn.execute("SELECT count(*) FROM batches WHERE status='mined'").fetchone()[0],
            "batches_anchored": conn.execute("SELECT count(*) FROM batches WHERE status='anchored'").fetchone()[0],
        }


"""In-memory queue between the decision path and the anchor store."""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time

from ext_authz.anchoring.store import AnchorStore

log = logging.getLogger("sealgate.anchoring")


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


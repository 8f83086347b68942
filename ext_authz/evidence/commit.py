"""Group commit: decisions wait for their record to be durable, and one fsync serves every decision that
arrived while the previous one ran.

`submit(record)` hands a record to the writer thread and returns a future; the writer takes everything queued
(at most `max_group`), writes it in one `EvidenceStore.append` transaction and resolves the futures: with None
once durable, with `EvidenceUnavailable` if the write failed. There is no timer: under load the group is what
queued during the previous fsync, idle a lone record is written at once. The caller answers only after its
future resolved (`ext_authz.server.grpc_service`), so an allowed action never runs without its record.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque

from ext_authz.evidence.store import EvidenceRecord, EvidenceStore, EvidenceUnavailable

log = logging.getLogger("sealgate.evidence")


class GroupCommitter:
    def __init__(self, store: EvidenceStore, *, max_group: int = 512, retention_seconds: int = 0,
                 purge_interval_seconds: float = 3600.0):
        self.store = store
        self._max_group = max_group
        self._retention = retention_seconds  # 0: keep forever
        self._purge_interval = purge_interval_seconds
        self._next_purge = time.monotonic() + min(60.0, purge_interval_seconds)
        self._pending: deque[tuple[EvidenceRecord, concurrent.futures.Future[None]]] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None  # the last write's failure; None after a write succeeded
        self.commits = 0  # transactions (fsyncs) done
        self.committed = 0  # records made durable
        self.commit_seconds: deque[float] = deque(maxlen=1024)  # the last transactions' durations (/status)

    def submit(self, record: EvidenceRecord) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cv:
            if self._stopping:
                future.set_exception(EvidenceUnavailable("the evidence writer is stopping"))
                return future
            self._pending.append((record, future))
            self._cv.notify()
        return future

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sealgate-evidence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Writes what is queued, then stops."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _take(self) -> list[tuple[EvidenceRecord, concurrent.futures.Future[None]]]:
        with self._cv:
            while not self._pending and not self._stopping:
                self._cv.wait(timeout=self._purge_wait())
                if not self._pending and not self._stopping:
                    return []
            n = min(len(self._pending), self._max_group)
            return [self._pending.popleft() for _ in range(n)]

    def _purge_wait(self) -> float:
        return max(0.05, self._next_purge - time.monotonic())

    def _run(self) -> None:
        while True:
            group = self._take()
            if group:
                self._commit(group)
            elif self._stopping:
                return
            if self._retention and time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + self._purge_interval
                try:
                    purged = self.store.purge(int(time.time()) - self._retention)
                    if purged:
                        log.info("retention: dropped %d anchored evidence records", purged)
                except EvidenceUnavailable as e:
                    log.warning("retention purge failed: %s", e)

    def commit_ms(self) -> dict[str, float]:
        """p50 and p99 of the last transactions' durations, in ms (what each answer waited for, at least)."""
        times = sorted(self.commit_seconds)
        if not times:
            return {}
        return {"p50": round(times[len(times) // 2] * 1000, 3), "p99": round(times[int(len(times) * 0.99)] * 1000, 3)}

    def _commit(self, group: list[tuple[EvidenceRecord, concurrent.futures.Future[None]]]) -> None:
        started = time.perf_counter()
        try:
            self.store.append([record for record, _ in group])
        except EvidenceUnavailable as e:
            self.last_error = str(e)
            log.error("evidence not persisted, %d decisions fail closed: %s", len(group), e)
            for _, future in group:
                future.set_exception(e)
            return
        except Exception as e:  # never leave a decision waiting: fail closed
            self.last_error = f"unexpected: {e!r}"
            log.exception("evidence writer failed")
            for _, future in group:
                future.set_exception(EvidenceUnavailable(self.last_error))
            return
        self.commit_seconds.append(time.perf_counter() - started)
        self.last_error = None
        self.commits += 1
        self.committed += len(group)
        for _, future in group:
            future.set_result(None)

#!/usr/bin/env python3
"""`sealgate serve` with the evidence path as it was before issue 10, for bench/evidence_bench.py only.

The decision's hash goes to the in-memory LeafQueue (written to SQLite every 0.2 s) and the answer does not wait
for it; nothing else differs from `sealgate serve`. Never use it for anything but the side-by-side baseline:
a crash loses what is queued.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ext_authz.server.app as app  # noqa: E402
from ext_authz.anchoring.queue import LeafQueue  # noqa: E402
from ext_authz.anchoring.store import AnchorStore  # noqa: E402
from ext_authz.evidence.store import EvidenceRecord  # noqa: E402


class QueueCommitter:
    """The GroupCommitter's interface over the former queue: submit() returns None, so nobody waits."""

    def __init__(self, store: Any, **_: Any):
        self._queue = LeafQueue(AnchorStore(store.path))
        self.last_error: str | None = None
        self.commits = self.committed = 0

    def submit(self, record: EvidenceRecord) -> None:
        self._queue.enqueue(record.token_hash, record.kind, record.jti)

    def commit_ms(self) -> dict[str, float]:
        return {}

    @property
    def queued(self) -> int:
        return self._queue.queued

    def start(self) -> None:
        self._queue.start()

    def stop(self) -> None:
        self._queue.stop()


app.GroupCommitter = QueueCommitter  # type: ignore[misc,assignment]

from ext_authz.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The group commit alone, in one process: what a decision waits for its record, at a fixed rate.

    .venv/bin/python bench/group_commit_bench.py [--rate 200] [--requests 1000]

An asyncio loop stands in for the authorizer's gRPC loop: each request spends 0.8 ms of CPU on the loop (about a
decision), then submits its record (a 1.3 KB token) to the GroupCommitter over a real SqliteEvidenceStore in a
temporary directory and awaits it. Run with the default 5 ms GIL switch interval and with 0.5 ms, interleaved
(the authorizer keeps the default: the difference did not hold up, see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.evidence.commit import GroupCommitter  # noqa: E402
from ext_authz.evidence.sqlite import SqliteEvidenceStore  # noqa: E402
from ext_authz.evidence.store import EvidenceRecord  # noqa: E402


def run(rate: float, requests: int, switch: float) -> dict[str, float]:
    sys.setswitchinterval(switch)
    with tempfile.TemporaryDirectory(prefix="sealgate-gc-") as tmp:
        store = SqliteEvidenceStore(Path(tmp) / "e.sqlite3")
        store.start_checkpoints()
        writer = GroupCommitter(store)
        writer.start()
        waits: list[float] = []

        async def one(i: int) -> None:
            busy = time.perf_counter()
            while time.perf_counter() - busy < 0.0008:
                pass
            record = EvidenceRecord(f"j{i}", "sae", "x" * 1300, os.urandom(32), 1, "OK", "spiffe://td/agent/a", "api")
            started = time.perf_counter()
            await asyncio.wrap_future(writer.submit(record))
            waits.append(time.perf_counter() - started)

        async def load() -> None:
            start, tasks = time.perf_counter(), []
            for i in range(requests):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)

        asyncio.run(load())
        writer.stop()
        store.close()
    waits.sort()
    return {"p50": statistics.median(waits) * 1e3, "p99": waits[int(len(waits) * 0.99)] * 1e3,
            "per_fsync": writer.committed / max(writer.commits, 1), **{f"commit_{k}": v for k, v in writer.commit_ms().items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[float, list[dict[str, float]]] = {0.005: [], 0.0005: []}
    for _ in range(args.rounds):
        for switch in results:
            results[switch].append(run(args.rate, args.requests, switch))
    print("| GIL switch interval | wait p50 ms | wait p99 ms | records per fsync | commit p50 ms | commit p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for switch, runs in results.items():
        mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        print(f"| {switch * 1000:g} ms | {mean['p50']:.2f} | {mean['p99']:.2f} | {mean['per_fsync']:.2f} | "
              f"{mean['commit_p50']:.2f} | {mean['commit_p99']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

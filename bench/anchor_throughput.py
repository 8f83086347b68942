#!/usr/bin/env python3
"""Anchoring throughput, store -> anvil, and issue -> anchored latency, root-only and leaves mode in one run.

    .venv/bin/python bench/anchor_throughput.py [--rate 4000] [--seconds 8] [--rounds 2] [--batch 4096]

A producer process writes anchored values into the SQLite anchor store at `--rate` per second (open loop, in
10 ms chunks, as the authorizer's writer would); the anchorer (the real `Anchorer`, one confirmation) runs in
this process against anvil. Modes take turns in blocks of `--seconds`, `--rounds` each, each mode with its own
store; after each block the backlog drains before the next starts. Throughput is a block's leaves divided by
the time from the block's start to its last leaf anchored (the tail counts); latency counts from a leaf's
`created` time to the moment its
batch counted as anchored. At the end every leaf is checked: in exactly one anchored batch, the on-chain ranges
disjoint and summing to the leaf count (zero loss, nothing twice).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from ext_authz.anchoring.anchorer import Anchorer, AnchoringPolicy  # noqa: E402
from ext_authz.anchoring.store import AnchorStore  # noqa: E402
from ext_authz.chain.dev import DEV_KEYS  # noqa: E402
from ext_authz.local.stack import LocalStack  # noqa: E402


def produce(db: str, rate: int, seconds: float, tag: int, start_index: int, done: multiprocessing.Value) -> None:
    store = AnchorStore(db)
    chunk = max(1, rate // 100)
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        due = t0 + (n // chunk) * 0.01
        time.sleep(max(0.0, due - time.monotonic()))
        now = time.time()
        rows = [(hashlib.sha256(f"{tag}-{start_index + n + i}".encode()).digest(), "sae", f"b{tag}-{start_index + n + i}",
                 now) for i in range(chunk)]
        store.add_leaves(rows)
        n += chunk
    done.value = n


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def check_nothing_lost_or_twice(stack: LocalStack, store: AnchorStore) -> tuple[int, int]:
    conn = store._conn()
    leaves = conn.execute("SELECT count(*) FROM leaves").fetchone()[0]
    anchored = conn.execute("SELECT count(*) FROM leaves l JOIN batches b ON l.batch_root=b.root WHERE b.status='anchored'"
                            ).fetchone()[0]
    batches = store.anchored_batches()
    on_chain = 0
    for root, count, first, last, _tx, block in batches:
        b = stack.anchor.functions.batchOf(root).call()
        assert tuple(b) == (block, count, first, last), "store and chain disagree"
        on_chain += last - first + 1
    ranges = sorted((b[2], b[3]) for b in batches)
    assert all(a[1] < c[0] for a, c in zip(ranges, ranges[1:], strict=False)), "overlapping ranges"
    assert leaves == anchored == on_chain, f"{leaves} leaves, {anchored} anchored, {on_chain} on-chain"
    return leaves, len(batches)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=4000, help="offered SAEs per second")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096, help="anchor.batch_max_leaves")
    ap.add_argument("--interval", type=float, default=0.05, help="anchor.interval_seconds")
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {m: {"rate": [], "lat": []} for m in ("root", "leaves")}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(tmp)
        try:
            stack.make_pki()
            stack.start_chain()
            anchorers, confirmed_at = {}, {}
            for mode in ("root", "leaves"):
                store = AnchorStore(Path(tmp) / f"{mode}.sqlite3")
                a = Anchorer(store, stack.chain, stack.manifest.anchor, Account.from_key(DEV_KEYS["anchorer"]),
                             interval_seconds=args.interval, batch_max_leaves=args.batch,
                             policy=AnchoringPolicy(mode=mode, poll_seconds=0.002))
                times: dict[bytes, float] = {}
                original = store.mark_confirmed

                def mark(root: bytes, _orig=original, _times=times) -> None:
                    _orig(root)
                    _times[root] = time.time()

                store.mark_confirmed = mark  # type: ignore[method-assign]
                anchorers[mode], confirmed_at[mode] = a, times
            stop = threading.Event()
            threads = [threading.Thread(target=a.run, args=(stop,), daemon=True) for a in anchorers.values()]
            for t in threads:
                t.start()
            produced = {"root": 0, "leaves": 0}
            for rnd in range(args.rounds):
                for tag, mode in enumerate(("root", "leaves")):
                    store = anchorers[mode].store
                    done = multiprocessing.Value("i", 0)
                    t0 = time.time()
                    p = multiprocessing.Process(target=produce, args=(store.path, args.rate, args.seconds, tag,
                                                                      produced[mode], done))
                    p.start()
                    p.join()
                    t1 = time.time()
                    produced[mode] += done.value
                    while store.backlog(time.time())[0]:
                        time.sleep(0.01)
                    rows = store._conn().execute("SELECT l.created, l.batch_root FROM leaves l WHERE l.created >= ?",
                                                 (t0,)).fetchall()
                    drained = max(confirmed_at[mode][root] for _c, root in rows)
                    # sustained: every leaf of the block anchored, divided by first leaf -> last anchored (tail included)
                    results[mode]["rate"].append(len(rows) / (drained - t0))
                    results[mode]["lat"] += [confirmed_at[mode][root] - created for created, root in rows]
                    print(f"round {rnd + 1} {mode:6s}: offered {done.value / (t1 - t0):7.0f}/s, all anchored after "
                          f"{drained - t0:5.2f} s: {len(rows) / (drained - t0):7.0f}/s, "
                          f"{store.counts()['batches_anchored']} batches so far", flush=True)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            print()
            print("| mode | offered SAEs/s | sustained anchored SAEs/s (block start -> its last leaf anchored, mean) "
                  "| issue->anchored p50 ms | p99 ms | SAEs | batches | lost / twice |")
            print("|---|---:|---:|---:|---:|---:|---:|---|")
            for mode, a in anchorers.items():
                leaves, batches = check_nothing_lost_or_twice(stack, a.store)
                lat = results[mode]["lat"]
                print(f"| {mode} | {args.rate:,} | {statistics.mean(results[mode]['rate']):,.0f} | "
                      f"{percentile(lat, 0.5) * 1000:,.0f} | {percentile(lat, 0.99) * 1000:,.0f} | {leaves:,} | {batches} | 0 / 0 |")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

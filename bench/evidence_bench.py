#!/usr/bin/env python3
"""Durable before response vs the former in-memory queue: decision latency and authorizer CPU, side by side.

    .venv/bin/python bench/evidence_bench.py [--rate 200] [--seconds 2] [--rounds 10]

One process set (anvil, target, two authorizers, two sidecar Envoys, no PEP). Both authorizers are
`sealgate serve` on the same chain, key and config: `durable` answers only once the decision's record (the whole
token and its anchor-queue row) is committed with synchronous=FULL, one fsync per group of concurrent decisions
(ext_authz.evidence.commit); `queue` is the path before issue 10 (bench/queue_authorizer.py): the hash is
queued in memory, written every 0.2 s, the answer does not wait. Every request is an agent's POST /v1/transfers
over mTLS to the sidecar (varied amounts), open-loop at a fixed rate from 8 kept-alive connections; the two
take turns in short blocks (this VM drifts by tens of percent over minutes). CPU is utime+stime of each
authorizer process (/proc/<pid>/stat) over its blocks, per request, all threads included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import connect_pool, cpu_seconds, pct, run_load  # noqa: E402

from ext_authz.local.net import free_port, http_get_json, wait_until  # noqa: E402
from ext_authz.local.stack import LocalStack  # noqa: E402
from ext_authz.mesh.configs import SidecarPorts  # noqa: E402

HERE = Path(__file__).resolve().parent


def spawn_queue_authorizer(stack: LocalStack, name: str, admin: int) -> str:
    """The baseline authorizer: the same argv as LocalStack.spawn_authorizer, through bench/queue_authorizer.py."""
    grpc = stack.socket(name)
    raw = {**stack.config_raw, "anchor": {**stack.config_raw["anchor"], "db_path": str(stack.workdir / f"{name}.sqlite3")}}
    config = stack.workdir / f"{name}.json"
    config.write_text(json.dumps(raw, indent=2))
    stack._spawn(name, [sys.executable, str(HERE / "queue_authorizer.py"), "serve", "--config", str(config),
                        "--manifest", str(stack.workdir / "addresses.json"), *stack._signer_args(),
                        "--grpc", grpc, "--admin", f"127.0.0.1:{admin}"])
    wait_until(lambda: stack._check_alive(name) and http_get_json(f"http://127.0.0.1:{admin}/status")["healthy"],
               60, f"{name} healthy")
    return grpc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=2, help="length of one block")
    ap.add_argument("--rounds", type=int, default=10, help="blocks per variant, taken in turns")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealgate-evidence-bench-") as tmp, \
            LocalStack(tmp, target_checks_sae=False) as stack:
        queue_admin = free_port()
        queue_grpc = spawn_queue_authorizer(stack, "authorizer_queue", queue_admin)
        durable_port, queue_port = free_port(), free_port()
        stack.spawn_sidecar("envoy_durable", SidecarPorts(durable_port, free_port(), stack.authz_socket, stack.ports.target))
        stack.spawn_sidecar("envoy_queue", SidecarPorts(queue_port, free_port(), queue_grpc, stack.ports.target))
        variants = {"queue": (queue_port, stack.procs["authorizer_queue"].pid, queue_admin),
                    "durable": (durable_port, stack.procs["authorizer"].pid, stack.ports.authz_admin)}
        pools = {name: connect_pool(stack, port) for name, (port, _, _) in variants.items()}
        for name, (port, _, _) in variants.items():
            run_load(stack, port, 100, 1.0, pool=pools[name])  # warm up
        before = {name: http_get_json(f"http://127.0.0.1:{admin}/status") for name, (_, _, admin) in variants.items()}
        results = {name: {"latencies": [], "errors": {}, "sent": 0, "cpu": 0.0} for name in variants}
        for rnd in range(args.rounds):
            for name, (port, pid, _) in variants.items():
                cpu0 = cpu_seconds(pid)
                r = run_load(stack, port, args.rate, args.seconds, pool=pools[name])
                agg = results[name]
                agg["cpu"] += cpu_seconds(pid) - cpu0
                agg["latencies"] += r["latencies"]
                agg["sent"] += r["sent"]
                for k, v in r["errors"].items():
                    agg["errors"][k] = agg["errors"].get(k, 0) + v
                print(f"round {rnd + 1} {name:<8} p50 {pct(r['latencies'], .5):6.2f} ms  p99 "
                      f"{pct(r['latencies'], .99):6.2f} ms  errors {r['errors'] or 0}", flush=True)
        after = http_get_json(f"http://127.0.0.1:{stack.ports.authz_admin}/status")
    commits = after["evidence_commits"] - before["durable"]["evidence_commits"]
    committed = after["evidence_committed"] - before["durable"]["evidence_committed"]
    print(f"\nrate {args.rate}/s, {args.rounds} rounds of {args.seconds} s each, interleaved")
    print("| variant | requests | ok | p50 ms | p99 ms | authorizer CPU us/req |\n|---|---:|---:|---:|---:|---:|")
    for name, agg in results.items():
        lat = agg["latencies"]
        print(f"| {name} | {agg['sent']} | {len(lat)} | {pct(lat, .5):.3f} | {pct(lat, .99):.3f} | "
              f"{agg['cpu'] / agg['sent'] * 1e6:.1f} |")
    q, d = results["queue"], results["durable"]
    print(f"\ndurable - queue: p50 {pct(d['latencies'], .5) - pct(q['latencies'], .5):+.3f} ms, "
          f"p99 {pct(d['latencies'], .99) - pct(q['latencies'], .99):+.3f} ms; CPU "
          f"{(d['cpu'] / d['sent']) / (q['cpu'] / q['sent']):.3f}x; "
          f"{committed} records in {commits} fsyncs ({committed / max(commits, 1):.2f} per fsync); "
          f"one commit (write + fsync) took p50 {after['evidence_commit_ms'].get('p50')} ms, "
          f"p99 {after['evidence_commit_ms'].get('p99')} ms (last 1024)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

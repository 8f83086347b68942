#!/usr/bin/env python3
"""Egress enforcement benchmark (root): connect() cost with and without the programs, and
event throughput at a fixed rate of denied connects.

    .venv/bin/python bench/egress_bench.py [--calls 200000] [--rounds 5] [--rate 20000] [--seconds 5]

Both connect() runs use the same binary in the same run, interleaved: once in an agent
cgroup (programs attached at its parent; the destination is allowlisted so the call
succeeds), once in a sibling cgroup outside the attach point (no programs run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.egress.config import EgressConfig, agent_cgroup, parent_cgroup
from ext_authz.egress.enforcer import EgressEnforcer, uninstall
from ext_authz.egress.kernel import cgroup2_mount, require

HERE = Path(__file__).resolve().parent


def run_in(cgroup: Path, argv: list[str]) -> str:
    def enter() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(argv, preexec_fn=enter, capture_output=True, text=True, check=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "egress.json"))
    args = ap.parse_args()
    require()

    tag = f"sg-bench-{os.getpid()}"
    port = 15999
    config = EgressConfig.from_dict({"pin_dir": f"/sys/fs/bpf/{tag}", "cgroup_parent": tag, "agents": [
        {"id": "bench", "allow": [{"addr": "127.0.0.1", "port": port, "proto": "udp"}]}]})
    events = 0

    def count(_doc: dict) -> None:
        nonlocal events
        events += 1

    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "connect_loop"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "connect_loop.c")], check=True)
        baseline = cgroup2_mount() / f"{tag}-baseline"
        baseline.mkdir()
        enforcer = EgressEnforcer(config, sink=count)
        try:
            enforcer.load()
            enforcer.attach()
            enforcer.sync_maps()
            agent_cg = agent_cgroup(config, "bench")
            samples: dict[str, list[tuple[float, float]]] = {"without programs": [], "with programs": []}
            for _ in range(args.rounds):
                for name, cg in (("without programs", baseline), ("with programs", agent_cg)):
                    p50, mean = run_in(cg, [str(binary), "time", str(args.calls), str(port)]).split()
                    samples[name].append((float(p50), float(mean)))
            enforcer.start_reader()
            drops_before = enforcer.drops()
            sent, elapsed = run_in(agent_cg, [str(binary), "deny", str(args.rate), str(args.seconds)]).split()
            deadline = time.monotonic() + 10
            while events < int(sent) and time.monotonic() < deadline:
                time.sleep(0.1)
            dropped = enforcer.drops() - drops_before
        finally:
            enforcer.close(detach=True)
            uninstall(config)
            for cg in (agent_cgroup(config, "bench"), parent_cgroup(config), baseline):
                try:
                    cg.rmdir()
                except OSError:
                    pass

    rows = {name: {"p50_ns": statistics.median(s[0] for s in v), "mean_ns": statistics.median(s[1] for s in v)}
            for name, v in samples.items()}
    added_p50 = rows["with programs"]["p50_ns"] - rows["without programs"]["p50_ns"]
    added_mean = rows["with programs"]["mean_ns"] - rows["without programs"]["mean_ns"]
    print("| connect() to an allowed destination | p50 ns | mean ns |")
    print("|---|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ns']:.0f} | {r['mean_ns']:.1f} |")
    print(f"\nadded per allowed connect: p50 {added_p50:.0f} ns, mean {added_mean:.1f} ns (budget 500 ns)")
    achieved = int(sent) / float(elapsed)
    print(f"denied connects: {sent} sent in {float(elapsed):.2f}s ({achieved:.0f}/s); events received {events}; "
          f"ring buffer drops {dropped}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "connect": rows, "added_p50_ns": added_p50,
                                          "added_mean_ns": added_mean, "denied_sent": int(sent),
                                          "denied_rate_per_s": round(achieved), "events_received": events,
                                          "drops": dropped, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                         indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

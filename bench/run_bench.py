#!/usr/bin/env python3
"""Decision-path benchmark: p50/p99 latency and authorizer CPU per request, side by side.

Scenarios, all over the agent's mTLS connection to an Envoy sidecar, run in the
same process set and interleaved round by round (this 2-core machine is noisy):

  direct     Envoy (mTLS) -> target                                   baseline
  allow_all  Envoy + ext_authz -> authorizer answering OK -> target   the same authorizer, no decision
  decision   Envoy + ext_authz -> authorizer deciding (pyrevm policy, Ed25519 SAE, anchor queue) -> target
  full       as decision, then -> PEP Envoy (jwt_authn + Lua) -> target

Open-loop load at a fixed rate; latency is measured from each request's scheduled
start (so queueing behind a slow request counts). Scenarios take turns in short
blocks (default 2 s x 10 rounds each) over connections opened once, so slow drifts
of this machine's speed hit every scenario alike. The load generator shares the
machine, so read the numbers as ratios.

    .venv/bin/python bench/run_bench.py [--rate 200] [--seconds 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.local.net import free_port, http_get_json
from ext_authz.local.stack import AUTHORITY, LocalStack
from ext_authz.mesh.configs import SidecarPorts
from ext_authz.signing.pkcs11 import HSM_PIN_ENV, HsmKey, generate_hsm_key

# varied amounts, so no layer can answer from a cache of identical requests
BODIES = [json.dumps({"amount_cents": 1_000 + 7 * i, "to": "vendor-42"}).encode() for i in range(997)]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def connect_pool(stack: LocalStack, port: int, workers: int = 8) -> list:
    """Kept-alive mTLS connections, opened once: handshakes stay out of the measured blocks."""
    pool = []
    for _ in range(workers):
        conn = stack.agent_connection("procurement-01", port)
        conn.connect()
        pool.append(conn)
    return pool


def run_load(stack: LocalStack, port: int, rate: float, seconds: float, workers: int = 8, pool: list | None = None) -> dict:
    """Open-loop load at `rate` for `seconds` over `workers` connections (the pool's, when given)."""
    conns = pool if pool is not None else [stack.agent_connection("procurement-01", port) for _ in range(workers)]
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))
    lock = threading.Lock()

    def worker(slot: int) -> None:
        conn = conns[slot]
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = "?"
            try:
                conn.request("POST", "/v1/transfers", body=BODIES[i % len(BODIES)],
                             headers={"host": AUTHORITY, "content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                status = str(r.status)
            except Exception as e:  # count it, reconnect, go on
                status = type(e).__name__
                conn.close()
                conn = conns[slot] = stack.agent_connection("procurement-01", port)
            elapsed = time.perf_counter() - due
            with lock:
                if status == "200":
                    latencies.append(elapsed)
                else:
                    errors[status] = errors.get(status, 0) + 1
        if pool is None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": errors, "sent": total}


def softhsm_key(workdir: str) -> HsmKey:
    """A SoftHSM2 token in `workdir` holding the SAE key (environment set for this process and its children)."""
    tokens = Path(workdir) / "softhsm"
    tokens.mkdir()
    (tokens / "softhsm2.conf").write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ.update({"SOFTHSM2_CONF": str(tokens / "softhsm2.conf"), HSM_PIN_ENV: "1234"})
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin", "12345678"],
                   check=True, capture_output=True)
    spec = HsmKey("/usr/lib/softhsm/libsofthsm2.so", "bench", "sae-ed25519")
    generate_hsm_key(spec)
    return spec


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=2, help="length of one block")
    ap.add_argument("--rounds", type=int, default=10, help="blocks per scenario, taken in turns")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "latest.json"))
    ap.add_argument("--hsm", action="store_true", help="sign SAEs in a SoftHSM2 token (PKCS#11) instead of a key file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="sealgate-bench-") as tmp, \
            LocalStack(tmp, hsm=softhsm_key(tmp) if args.hsm else None, target_checks_sae=False) as stack:
        allow_grpc, allow_admin = stack.socket("authorizer-allow-all"), free_port()
        stack.spawn_authorizer("authorizer_allow_all", allow_grpc, allow_admin, True, Path(tmp) / "allow.sqlite3")
        direct_port, allow_port, decision_port = free_port(), free_port(), free_port()
        stack.spawn_sidecar("envoy_direct", SidecarPorts(direct_port, free_port(), None, stack.ports.target))
        stack.spawn_sidecar("envoy_allow_all", SidecarPorts(allow_port, free_port(), allow_grpc, stack.ports.target))
        stack.spawn_sidecar("envoy_decision", SidecarPorts(decision_port, free_port(), stack.authz_socket, stack.ports.target))
        scenarios = {
            "direct": (direct_port, None),
            "allow_all": (allow_port, stack.procs["authorizer_allow_all"].pid),
            "decision": (decision_port, stack.procs["authorizer"].pid),
            "full": (stack.ports.sidecar, stack.procs["authorizer"].pid),
        }
        pools = {name: connect_pool(stack, port) for name, (port, _) in scenarios.items()}
        for name, (port, _) in scenarios.items():  # warm up caches and the pinned EVM
            run_load(stack, port, 100, 1.0, pool=pools[name])
        results = {name: {"latencies": [], "errors": {}, "sent": 0, "cpu": 0.0, "ok": 0} for name in scenarios}
        for rnd in range(args.rounds):
            for name, (port, pid) in scenarios.items():
                cpu0 = cpu_seconds(pid) if pid else 0.0
                r = run_load(stack, port, args.rate, args.seconds, pool=pools[name])
                cpu1 = cpu_seconds(pid) if pid else 0.0
                agg = results[name]
                agg["latencies"] += r["latencies"]
                agg["sent"] += r["sent"]
                agg["ok"] += len(r["latencies"])
                agg["cpu"] += cpu1 - cpu0
                for k, v in r["errors"].items():
                    agg["errors"][k] = agg["errors"].get(k, 0) + v
                print(f"round {rnd + 1} {name:<9} p50 {pct(r['latencies'], .5):6.2f} ms  p99 {pct(r['latencies'], .99):6.2f} ms"
                      f"  errors {r['errors'] or 0}", flush=True)
        anchored = http_get_json(f"http://127.0.0.1:{stack.ports.authz_admin}/status")["decisions"]

    rows = []
    for name, agg in results.items():
        lat = agg["latencies"]
        cpu_us = agg["cpu"] / agg["sent"] * 1e6 if scenarios[name][1] else None
        rows.append({"scenario": name, "requests": agg["sent"], "ok": agg["ok"], "errors": agg["errors"],
                     "p50_ms": round(pct(lat, .5), 3), "p99_ms": round(pct(lat, .99), 3),
                     "mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else None,
                     "authorizer_cpu_us_per_req": round(cpu_us, 1) if cpu_us is not None else None})
    by = {r["scenario"]: r for r in rows}
    summary = {
        "full_minus_direct_p50_ms": round(by["full"]["p50_ms"] - by["direct"]["p50_ms"], 3),
        "decision_cpu_ratio_vs_allow_all": round(by["decision"]["authorizer_cpu_us_per_req"]
                                                 / by["allow_all"]["authorizer_cpu_us_per_req"], 3),
        "pep_hop_p50_ms": round(by["full"]["p50_ms"] - by["decision"]["p50_ms"], 3),
        "budget": {"full_minus_direct_p50_ms": 1.5, "decision_cpu_ratio_vs_allow_all": 1.3},
    }
    print("\n| scenario | requests | ok | p50 ms | p99 ms | authorizer CPU us/req |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = "-" if r["authorizer_cpu_us_per_req"] is None else r["authorizer_cpu_us_per_req"]
        print(f"| {r['scenario']} | {r['requests']} | {r['ok']} | {r['p50_ms']} | {r['p99_ms']} | {cpu} |")
    print(f"\nfull path adds {summary['full_minus_direct_p50_ms']} ms p50 over direct (budget 1.5); "
          f"decision CPU {summary['decision_cpu_ratio_vs_allow_all']}x allow-all (budget 1.3); "
          f"the PEP hop adds {summary['pep_hop_p50_ms']} ms p50")
    print(f"authorizer decisions during the run: {anchored}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary,
                                          "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The latency floor of the architecture on this machine: what any decision and PEP must add to.

    .venv/bin/python bench/floor.py [--rounds 10] [--seconds 2] [--rate 200]

Same load as run_bench.py (agent mTLS -> sidecar Envoy, 2 s blocks taken in turns):

  direct            Envoy -> target                                               the budget's baseline
  two_envoys        Envoy -> router-only Envoy -> target                          cost of the PEP's Envoy process alone
  allow_all         Envoy + ext_authz (authorizer answering OK) -> target         cost of the gRPC ext_authz hop alone
  allow_all_hop     Envoy + ext_authz allow-all -> router-only Envoy -> target    a full path whose decision and PEP filters cost nothing

`allow_all_hop - direct` is a lower bound for `full - direct` with a Python grpcio
authorizer and a separate PEP Envoy: the decision and the PEP's filters only add to it.

CPU: the allow-all authorizer's CPU per request (utime+stime over its blocks), and
the CPU of the two things no decision can skip (the pyrevm view call of
PolicyRegistry.evaluate and the Ed25519 signature of an SAE-sized message),
measured in this process with the calls paced at the same rate, as the authorizer
sees them. `(allow_all + mandatory) / allow_all` is a lower bound for the decision's
CPU ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import connect_pool, cpu_seconds, pct, run_load  # noqa: E402

from ext_authz.local.net import free_port
from ext_authz.local.stack import LocalStack
from ext_authz.mesh.configs import PepPorts, SidecarPorts, pep_config
from ext_authz.policy.abi import PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy
from ext_authz.signing.file_key import Ed25519Signer


def mandatory_decision_cpu_us(stack: LocalStack, rate: float, calls: int = 1000) -> float:
    """Median thread CPU of one policy view call plus one Ed25519 signature, paced at `rate`."""
    m = stack.manifest
    policy = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
    policy.refresh()
    signer = Ed25519Signer(os.urandom(32))
    sae_sized = os.urandom(700)
    agent = text_id(stack.spiffe_id("procurement-01"))
    key = stack.agent_fingerprints["procurement-01"]
    samples = []
    for i in range(calls):
        time.sleep(1 / rate)
        t0 = time.thread_time_ns()
        verdict = policy.evaluate(PolicyAction(agent, key, text_id("payment.transfer"), text_id("payments-api"), 1000 + i, 1, 0))
        signer.sign(sae_sized)
        samples.append((time.thread_time_ns() - t0) / 1000)
        if verdict.decision != "ALLOW":
            raise SystemExit(f"policy answered {verdict}: the floor must measure an allowed action")
    return statistics.median(samples[calls // 10:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="blocks per scenario, taken in turns")
    ap.add_argument("--seconds", type=float, default=2, help="length of one block")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "floor.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealgate-floor-") as tmp, LocalStack(tmp, target_checks_sae=False) as stack:
        allow_grpc = stack.socket("authorizer-allow-all")
        stack.spawn_authorizer("authorizer_allow_all", allow_grpc, free_port(), True, Path(tmp) / "allow.sqlite3")
        hop_port, hop_admin = free_port(), free_port()
        conf = pep_config(PepPorts(hop_port, hop_admin, stack.ports.target), stack.jwks, "payments-api", verifier=None)
        hcm = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = hcm["http_filters"][-1:]  # router only: an Envoy hop with no PEP filters
        stack._start_envoy("router_hop", conf, hop_admin)
        scenarios: dict[str, int] = {}
        for name, authz, upstream in (("direct", None, stack.ports.target), ("two_envoys", None, hop_port),
                                      ("allow_all", allow_grpc, stack.ports.target), ("allow_all_hop", allow_grpc, hop_port)):
            port = free_port()
            stack.spawn_sidecar(f"sidecar_{name}", SidecarPorts(port, free_port(), authz, upstream))
            scenarios[name] = port
        pools = {name: connect_pool(stack, port) for name, port in scenarios.items()}
        for name, port in scenarios.items():
            run_load(stack, port, 100, 1, pool=pools[name])
        latencies: dict[str, list[float]] = {name: [] for name in scenarios}
        authz_pid = stack.procs["authorizer_allow_all"].pid
        authz_cpu, authz_requests = 0.0, 0
        for rnd in range(args.rounds):
            for name, port in scenarios.items():
                cpu0 = cpu_seconds(authz_pid)
                out = run_load(stack, port, args.rate, args.seconds, pool=pools[name])
                if name.startswith("allow_all"):
                    authz_cpu += cpu_seconds(authz_pid) - cpu0
                    authz_requests += out["sent"]
                if out["errors"]:
                    raise SystemExit(f"{name}: errors {out['errors']}")
                latencies[name] += out["latencies"]
            print(f"round {rnd + 1}: " + "  ".join(f"{n} {pct(latencies[n], .5):.2f}" for n in scenarios) + " ms p50 so far", flush=True)
        mandatory_us = mandatory_decision_cpu_us(stack, args.rate)
    p50 = {name: pct(lat, .5) for name, lat in latencies.items()}
    print("\n| scenario | requests | p50 ms | p99 ms | p50 over direct ms |\n|---|---:|---:|---:|---:|")
    for name, lat in latencies.items():
        print(f"| {name} | {len(lat)} | {p50[name]:.3f} | {pct(lat, .99):.3f} | {p50[name] - p50['direct']:+.3f} |")
    floor = p50["allow_all_hop"] - p50["direct"]
    allow_all_us = authz_cpu / authz_requests * 1e6
    ratio_floor = (allow_all_us + mandatory_us) / allow_all_us
    print(f"\nlower bound for full - direct on this machine: {floor:.3f} ms p50 (budget 1.5)")
    print(f"allow-all authorizer CPU {allow_all_us:.0f} us/req; view call + Ed25519 signature, paced: {mandatory_us:.0f} us"
          f" -> decision CPU ratio at least {ratio_floor:.2f}x (budget 1.3)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "p50_ms": p50, "floor_ms": floor,
                                          "allow_all_cpu_us_per_req": allow_all_us, "mandatory_decision_cpu_us": mandatory_us,
                                          "cpu_ratio_floor": ratio_floor}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

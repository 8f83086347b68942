#!/usr/bin/env python3
"""Where the PEP hop's latency goes: the full path with three PEP variants side by side.

    .venv/bin/python bench/pep_hop.py [--rounds 3] [--seconds 6] [--rate 200]

bare: an Envoy with only the router; jwt_only: + jwt_authn (and an empty Lua filter);
lua: + the Lua typ/binding filter (envoy/pep.lua), the PEP as it was without a verifier;
full: + the verifier (`sealgate pep serve`: body digest, single use in SQLite with group commit), today's PEP.
Interleaved round by round.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import pct, run_load  # noqa: E402

from ext_authz.local.net import free_port
from ext_authz.local.stack import LocalStack
from ext_authz.mesh.configs import PepPorts, SidecarPorts, pep_config


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rate", type=float, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalStack(tmp, target_checks_sae=False) as stack:
        variants: dict[str, int] = {}
        for name, lua in (("bare", None), ("jwt_only", "function envoy_on_request(h) end"), ("lua", None), ("full", None)):
            pep_port, pep_admin = free_port(), free_port()
            conf = pep_config(PepPorts(pep_port, pep_admin, stack.ports.target), stack.jwks, "payments-api", lua,
                              verifier=stack.pep_verifier if name == "full" else None)
            if name == "bare":
                hcm = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
                hcm["http_filters"] = hcm["http_filters"][-1:]  # router only
            stack._start_envoy(f"pep_{name}", conf, pep_admin)
            sidecar = free_port()
            stack.spawn_sidecar(f"sidecar_{name}", SidecarPorts(sidecar, free_port(), stack.authz_socket, pep_port))
            variants[name] = sidecar
        for port in variants.values():
            run_load(stack, port, 100, 1)
        latencies: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, port in variants.items():
                out = run_load(stack, port, args.rate, args.seconds)
                if out["errors"]:
                    raise SystemExit(f"{name}: errors {out['errors']}")
                latencies[name] += out["latencies"]
    print("| PEP variant | p50 ms | p99 ms |\n|---|---:|---:|")
    for name, lat in latencies.items():
        print(f"| {name} | {pct(lat, .5):.3f} | {pct(lat, .99):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`sealgate deploy`: the contracts, the Safe and the timelock; writes the address manifest."""

from __future__ import annotations

import argparse
from typing import Any

from ext_authz.cli.common import command


def register(sub: Any) -> None:
    p = command(sub, "deploy", "deploy the contracts (idempotent: a live manifest is reused) and write the address manifest",
                "sealgate deploy --rpc http://127.0.0.1:8545 --manifest addresses.json   # local anvil, dev keys")
    p.add_argument("--rpc", default="http://127.0.0.1:8545", metavar="URL", help="JSON-RPC endpoint of the chain")
    p.add_argument("--manifest", default="addresses.json", metavar="FILE", help="address manifest to write (or reuse)")
    p.add_argument("--delay-seconds", type=int, default=24 * 3600, metavar="SECONDS", help="timelock delay")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    from ext_authz.chain.deploy import deploy_all

    manifest = deploy_all(args.rpc, args.manifest, delay_seconds=args.delay_seconds)
    print(manifest.to_json(), end="")
    return 0

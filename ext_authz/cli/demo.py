"""`sealgate demo`: the local stack on embedded defaults, the scripted scenario, shut down."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command


def register(sub: Any) -> None:
    p = command(sub, "demo", "start the local stack (anvil, authorizer, Envoys, target), run the scenario, shut down",
                "sealgate demo --workdir .sealgate/demo",
                env="ANVIL_BIN  the anvil binary (make demo points it at node_modules)\nENVOY_BIN  the envoy binary")
    p.add_argument("--workdir", default=".sealgate/demo", metavar="DIR", help="keys, chain state and logs of the run")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ext_authz.local.demo import run_demo

    return run_demo(Path(args.workdir))

"""`sealgate deploy`: the contracts, the Safe and the timelock; writes the address manifest."""

from __future__ import annotations

import argparse
from typing import Any

from ext_authz.cli.common import command
from ext_authz.errors import UsageError

DEFAULT_DEV_DELAY_SECONDS = 24 * 3600

EXAMPLE = """\
sealgate deploy --plan plan.yaml --rpc https://mainnet.base.org --manifest addresses.json   # production
sealgate deploy --rpc http://127.0.0.1:8545 --manifest addresses.json                        # local anvil (31337)"""

ENV = """\
VAR               as named by the plan's deployer_key: `env: VAR` holds the deployer's hex private key;
                  `keystore: FILE` with `password_env: VAR` holds the keystore's password (no secret goes in the plan)
SEALGATE_HSM_PIN  the token's user PIN for `deployer_key: {pkcs11: ...}` (never on the command line)"""

DESCRIPTION = """\
Deploys the registries, the policy, the anchor, a Safe and a timelock, seeds the plan's initial
models, agents, rules and approvers, then hands every admin role to the timelock and renounces the
deployer's. Everything is checked before the first transaction; exit 2 and nothing sent when:
the RPC's chain id is not the plan's; a development key or account would be used on a chain other
than anvil's 31337 (their keys are public); the manifest exists but is unreadable, invalid, for
another chain, or points at contracts without code. A valid manifest whose contracts are live is
reused (nothing is sent). Without --plan, anvil's development keys deploy (local chain 31337 only)."""


def register(sub: Any) -> None:
    p = command(sub, "deploy", "deploy the contracts (idempotent: a live manifest is reused) and write the address manifest",
                EXAMPLE, env=ENV)
    p.description = DESCRIPTION
    p.add_argument("--plan", metavar="FILE", default=argparse.SUPPRESS,
                   help="deploy plan (YAML: chain id, Safe owners and threshold, guardian, anchorer, timelock delay, "
                        "deployer key source, initial state; see deploy/plan.example.yaml). Without it: anvil's "
                        "development keys, chain 31337 only")
    p.add_argument("--rpc", default="http://127.0.0.1:8545", metavar="URL", help="JSON-RPC endpoint of the chain")
    p.add_argument("--manifest", default="addresses.json", metavar="FILE",
                   help="address manifest to write, or to reuse when it is valid and its contracts are live")
    p.add_argument("--delay-seconds", type=int, default=argparse.SUPPRESS, metavar="SECONDS",
                   help=f"timelock delay in seconds, without --plan only (the plan sets timelock_delay_seconds) "
                        f"(default: {DEFAULT_DEV_DELAY_SECONDS}, 24 h)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    from ext_authz.chain.deploy import deploy_all, deploy_plan

    plan, delay = getattr(args, "plan", None), getattr(args, "delay_seconds", None)
    if plan:
        if delay is not None:
            raise UsageError("--delay-seconds is for the development deploy; with --plan set timelock_delay_seconds "
                             "in the plan")
        from ext_authz.chain.plan import load_plan

        manifest = deploy_plan(load_plan(plan), args.rpc, args.manifest)
    else:
        delay = DEFAULT_DEV_DELAY_SECONDS if delay is None else delay
        if delay < 1:
            raise UsageError(f"--delay-seconds must be at least 1, found {delay}")
        manifest = deploy_all(args.rpc, args.manifest, delay_seconds=delay)
    print(manifest.to_json(), end="")
    return 0

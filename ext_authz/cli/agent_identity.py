"""`sealgate agent publish` / `sealgate agent resolve`: a Sealgate agent in an ERC-8004 Identity Registry."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import Any

from ext_authz.cli.common import command
from ext_authz.errors import ChainError, UsageError

PUBLISHER_ENV = "SEALGATE_PUBLISHER_KEY"


def register(agent: Any) -> None:
    """Adds the ERC-8004 commands to the `sealgate agent` group."""
    p = command(agent, "publish", "publish a registered agent to an ERC-8004 Identity Registry (its SPIFFE ID and the "
                                  "Sealgate AgentRegistry in the registration file); prints the agentId",
                "SEALGATE_PUBLISHER_KEY=0x... sealgate agent publish --manifest addresses.json \\\n"
                "    --identity-registry 0x8004... --spiffe-id spiffe://sealgate.local/agent/procurement-01 \\\n"
                "    --org acme --role procurement",
                env=f"{PUBLISHER_ENV}  hex key of the account that will own the agent's ERC-8004 token")
    p.add_argument("--manifest", required=True, metavar="FILE", help="address manifest (`sealgate deploy`): RPC, AgentRegistry")
    p.add_argument("--identity-registry", required=True, metavar="ADDRESS", help="the ERC-8004 Identity Registry")
    p.add_argument("--spiffe-id", required=True, metavar="URI", help="the agent, active in the Sealgate AgentRegistry")
    p.add_argument("--org", required=True, help="its organisation (as registered)")
    p.add_argument("--role", required=True, help="its role (as registered)")
    p.add_argument("--endpoint", metavar="URL", help="a service endpoint to list in the registration file")
    p.set_defaults(func=cmd_agent_publish)
    p = command(agent, "resolve", "resolve an ERC-8004 agentId to its Sealgate agent, checked against the Sealgate registry",
                "sealgate agent resolve --rpc http://127.0.0.1:8545 --identity-registry 0x8004... --agent-id 1")
    p.add_argument("--rpc", required=True, metavar="URL", help="the chain's JSON-RPC endpoint")
    p.add_argument("--identity-registry", required=True, metavar="ADDRESS", help="the ERC-8004 Identity Registry")
    p.add_argument("--agent-id", required=True, type=int, help="the ERC-8004 agentId (token id)")
    p.add_argument("--sealgate-registry", metavar="ADDRESS",
                   help="the Sealgate AgentRegistry you trust: refuse a registration naming any other")
    p.set_defaults(func=cmd_agent_resolve)


def cmd_agent_publish(args: argparse.Namespace) -> int:
    from eth_account import Account

    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.erc8004 import publish
    from ext_authz.chain.manifest import Manifest

    key = os.environ.get(PUBLISHER_ENV)
    if not key:
        raise UsageError(f"set {PUBLISHER_ENV} to the publishing account's key (never on the command line)")
    manifest = Manifest.load(args.manifest)
    chain = ChainClient(manifest.rpc_url)
    agent_id = publish(chain, Account.from_key(key), args.identity_registry, manifest.registry, args.spiffe_id,
                       org=args.org, role=args.role, endpoint=args.endpoint)
    print(json.dumps({"agentId": agent_id, "identityRegistry": args.identity_registry}))
    return 0


def cmd_agent_resolve(args: argparse.Namespace) -> int:
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.erc8004 import resolve

    try:
        agent = resolve(ChainClient(args.rpc), args.identity_registry, args.agent_id,
                        trusted_registry=args.sealgate_registry)
    except ChainError as e:
        print(f"UNRESOLVED: {e}")
        return 1
    print(json.dumps(asdict(agent), indent=2, sort_keys=True))
    return 0 if agent.status == "active" else 1

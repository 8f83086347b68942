"""`sealgate gov`: changes through the Safe multisig and the timelock; the guardian's emergency actions."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command
from ext_authz.errors import SealgateError, UsageError

GOV_KEY_ENV = "SEALGATE_GOV_KEY"


def register(sub: Any) -> None:
    gov = sub.add_parser("gov", help="governance: Safe multisig -> timelock; guardian emergency actions",
                         description="governance: Safe multisig -> timelock; guardian emergency actions "
                                     "(docs/governance.md)")
    gov.add_argument("--manifest", required=True, metavar="FILE", help="address manifest written by `sealgate deploy`")
    gov.add_argument("--dir", default=".sealgate/gov", metavar="DIR", help="where proposals are kept for the other owners")
    gov.add_argument("--key-env", default=GOV_KEY_ENV, metavar="VAR",
                     help="environment variable holding the signer's hex secp256k1 key (owner or guardian)")
    gov.add_argument("--dev-account", type=int, metavar="N", help="anvil development account index (chain id 31337 only)")
    govsub = gov.add_subparsers(dest="gov_cmd", required=True, metavar="COMMAND")
    _register_propose(govsub)
    env = f"{GOV_KEY_ENV}  the signer's hex key (or the variable named by --key-env)"
    p = command(govsub, "approve", "an owner approves; the approval reaching the threshold schedules the operation",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json approve 0x3f2a9c", env=env)
    p.add_argument("proposal", metavar="ID", help="proposal id (the Safe transaction hash) or a prefix of >= 6 characters")
    p.set_defaults(func=cmd_gov_approve)
    p = command(govsub, "execute", "run a scheduled operation once its delay has passed (anyone may)",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json execute 0x3f2a9c", env=env)
    p.add_argument("proposal", metavar="ID", help="proposal id or a prefix of >= 6 characters")
    p.set_defaults(func=cmd_gov_execute)
    p = command(govsub, "pending", "timelock operations scheduled and not yet executed or cancelled",
                "sealgate gov --manifest addresses.json pending")
    p.set_defaults(func=cmd_gov_pending)
    for name, action, flag, what in (("revoke", "revoke", "--agent", "an agent (SPIFFE ID)"),
                                     ("revoke-approver", "revoke-approver", "--name", "an approver"),
                                     ("pause", "pause", None, "the current policy"),
                                     ("deprecate-model", "deprecate", "--model-id", "a model")):
        example = f"SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json {name}"
        example += f" {flag} X" if flag else ""
        p = command(govsub, name, f"guardian: {name.split('-')[0]} {what} now, without the timelock", example, env=env)
        if flag:
            p.add_argument(flag, required=True, help=what)
        p.set_defaults(func=cmd_gov_guardian, action=action)


def _register_propose(govsub: Any) -> None:
    env = f"{GOV_KEY_ENV}  not needed: proposing only reads the chain and writes the proposal file"
    p = command(govsub, "propose", "propose a timelocked change through the Safe; prints the proposal id",
                "sealgate gov --manifest addresses.json propose set-rule --role procurement --action-type payment \\\n"
                "    --target payments-api --max-amount 100000", env=env)
    kinds = p.add_subparsers(dest="what", required=True, metavar="CHANGE")
    k = command(kinds, "upgrade-policy", "point the policy id at a new implementation",
                "sealgate gov --manifest m.json propose upgrade-policy --implementation 0xPolicy")
    k.add_argument("--implementation", required=True, metavar="ADDRESS", help="the new IActionPolicy contract")
    k = command(kinds, "set-rule", "set the rule for a role, action type and target on the current policy",
                "sealgate gov --manifest m.json propose set-rule --role finance --action-type payment \\\n"
                "    --target payments-api --max-amount 5000000 --approval-threshold 1000000")
    k.add_argument("--role", required=True, help="the agent role the rule applies to")
    k.add_argument("--action-type", required=True, help="action type of the route (e.g. payment)")
    k.add_argument("--target", required=True, help="target service of the route")
    k.add_argument("--max-amount", type=int, required=True, metavar="UNITS", help="largest amount allowed (route units, e.g. cents)")
    k.add_argument("--approval-threshold", type=int, default=0, metavar="UNITS",
                   help="above this amount a person must approve (0: never)")
    k.add_argument("--data-classes", default="public,internal", metavar="LIST", help="comma-separated data classes allowed")
    k.add_argument("--max-risk", type=int, default=100, metavar="0-100", help="highest risk score allowed")
    k.add_argument("--utc-hours", type=lambda v: int(v, 0), default=0x00FFFFFF, metavar="MASK",
                   help="bitmask of allowed UTC hours (bit n: hour n)")
    k.add_argument("--required-model", metavar="MODEL_ID", help="only agents running this model")
    k.add_argument("--disable", action="store_true", help="write the rule disabled")
    k = command(kinds, "reactivate", "reactivate a revoked agent", "sealgate gov --manifest m.json propose reactivate --agent spiffe://...")
    k.add_argument("--agent", required=True, metavar="SPIFFE_ID", help="the agent")
    k = command(kinds, "register-approver", "let a person approve held actions (key from `sealgate approver keygen`)",
                "sealgate gov --manifest m.json propose register-approver --name treasury-lead --key-x <x of the JWK>")
    k.add_argument("--name", required=True, help="the approver's name (1-64 of a-z 0-9 . - _)")
    k.add_argument("--key-x", required=True, metavar="B64URL", help="the `x` of the approver's public JWK")
    for name, verb in (("grant-anchorer", "let a wallet anchor batches (e.g. a new HSM wallet)"),
                       ("revoke-anchorer", "take anchoring away from a wallet (e.g. the old hot key)")):
        k = command(kinds, name, verb, f"sealgate gov --manifest m.json propose {name} --address 0xWallet")
        k.add_argument("--address", required=True, metavar="ADDRESS", help="the wallet")
    command(kinds, "unpause", "unpause the current policy", "sealgate gov --manifest m.json propose unpause")
    k = command(kinds, "register-model", "register a model artifact hash",
                "sealgate gov --manifest m.json propose register-model --model-id m-7 --sha256 <hex> --sbom https://...")
    k.add_argument("--model-id", required=True, help="model id agents are registered with")
    k.add_argument("--sha256", required=True, metavar="HEX", help="SHA-256 of the model artifact")
    k.add_argument("--sbom", required=True, metavar="REF", help="where the model's SBOM is published")
    k = command(kinds, "register-agent", "register an agent",
                "sealgate gov --manifest m.json propose register-agent --agent spiffe://td/agents/a1 --org acme \\\n"
                "    --role procurement --model-id m-7 --key-fingerprint <hex>")
    k.add_argument("--agent", required=True, metavar="SPIFFE_ID", help="the agent's SPIFFE ID")
    k.add_argument("--org", required=True, help="its organization")
    k.add_argument("--role", required=True, help="its role (the rules are per role)")
    k.add_argument("--model-id", required=True, help="the model it runs (registered in the ModelRegistry)")
    k.add_argument("--key-fingerprint", metavar="HEX", help="SHA-256 of the agent certificate's SPKI (omit: SPIFFE ID only)")
    p.set_defaults(func=cmd_gov_propose)


def _gov(args: argparse.Namespace):
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.governance import Governance
    from ext_authz.chain.manifest import Manifest

    manifest = Manifest.load(args.manifest)
    return Governance(ChainClient(manifest.rpc_url), manifest), Path(args.dir)


def _account(args: argparse.Namespace, gov) -> object:
    """The signing account: a key from an environment variable, or a dev account on a local anvil."""
    from eth_account import Account

    from ext_authz.chain.dev import dev_account

    if args.dev_account is not None:
        if gov.manifest.chain_id != 31337:
            raise UsageError("--dev-account is for the local anvil chain (31337) only")
        return dev_account(args.dev_account)
    key = os.environ.get(args.key_env)
    if not key:
        raise UsageError(f"no signing key: set {args.key_env} (hex) or use --dev-account on anvil")
    return Account.from_key(key)


def cmd_gov_propose(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import rule_tuple
    from ext_authz.server.config import DATA_CLASSES

    gov, directory = _gov(args)
    if args.what == "upgrade-policy":
        call = gov.call_upgrade_policy(args.implementation)
    elif args.what == "set-rule":
        classes = tuple(DATA_CLASSES.index(c) for c in args.data_classes.split(","))
        rule = rule_tuple(args.max_amount, args.approval_threshold, classes, args.max_risk, args.utc_hours,
                          args.required_model, not args.disable)
        call = gov.call_set_rule(args.role, args.action_type, args.target, rule)
    elif args.what == "reactivate":
        call = gov.call_reactivate(args.agent)
    elif args.what == "register-approver":
        call = gov.call_register_approver(args.name, args.key_x)
    elif args.what in ("grant-anchorer", "revoke-anchorer"):
        call = gov.call_anchorer(args.address, grant=args.what == "grant-anchorer")
    elif args.what == "unpause":
        call = gov.call_unpause()
    elif args.what == "register-model":
        call = gov.call_register_model(args.model_id, args.sha256, args.sbom)
    elif args.what == "register-agent":
        key = bytes.fromhex(args.key_fingerprint.removeprefix("0x")) if args.key_fingerprint else bytes(32)
        if len(key) != 32:
            raise UsageError("--key-fingerprint must be 32 bytes of hex (SHA-256 of the certificate's SPKI)")
        call = gov.call_register_agent(args.agent, args.org, args.role, args.model_id, key)
    else:
        raise SealgateError(f"unknown proposal kind {args.what}")
    proposal = gov.propose(call)
    path = proposal.save(directory)
    print(f"proposal {proposal.id}\n  {proposal.description}\n  timelock operation {proposal.operation_id}, "
          f"delay {proposal.delay}s\n  saved to {path}; owners approve with: sealgate gov approve {proposal.id[:12]}")
    return 0


def cmd_gov_approve(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposal = Proposal.load(directory, args.proposal)
    owner = _account(args, gov)
    gov.approve(proposal, owner)
    approvals = gov.approvals(proposal)
    print(f"approved by {owner.address}: {len(approvals)}/{gov.manifest.threshold}")
    if len(approvals) >= gov.manifest.threshold and gov.state(proposal) == "Unset":
        receipt = gov.submit(proposal, owner)
        ready = gov.timelock.functions.getTimestamp(bytes.fromhex(proposal.operation_id[2:])).call()
        print(f"threshold reached: scheduled in block {receipt.blockNumber}; executable from unix time {ready}")
    return 0


def cmd_gov_execute(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposal = Proposal.load(directory, args.proposal)
    state = gov.state(proposal)
    if state != "Ready":
        approvals = len(gov.approvals(proposal))
        print(f"not executable: operation is {state} ({approvals}/{gov.manifest.threshold} approvals)")
        return 1
    receipt = gov.execute(proposal, _account(args, gov))
    print(f"executed in block {receipt.blockNumber}: {proposal.description}")
    return 0


def cmd_gov_pending(args: argparse.Namespace) -> int:
    gov, _ = _gov(args)
    ops = gov.pending()
    for op in ops:
        print(f"{op['operation_id']} {op['state']:<7} ready_at {op['ready_at']} target {op['target']} "
              f"scheduled in block {op['scheduled_block']}")
    if not ops:
        print("no pending timelock operations")
    return 0


def cmd_gov_guardian(args: argparse.Namespace) -> int:
    """Emergency actions: no timelock (revoke an agent or an approver, pause the policy, deprecate a model)."""
    from ext_authz.policy.abi import text_id

    gov, _ = _gov(args)
    guardian = _account(args, gov)
    if args.action == "revoke":
        fn = gov.registry.functions.revoke(text_id(args.agent))
    elif args.action == "revoke-approver":
        fn = gov.approvers.functions.revoke(text_id(args.name))
    elif args.action == "pause":
        fn = gov.current_policy().functions.pause()
    else:
        fn = gov.models.functions.deprecate(text_id(args.model_id))
    receipt = gov.client.transact(guardian, fn)
    print(f"{args.action}: done in block {receipt.blockNumber}")
    return 0



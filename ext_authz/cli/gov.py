"""`sealgate gov`: changes through the Safe multisig and the timelock; the guardian's emergency actions."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from ext_authz.cli.common import command
from ext_authz.cli.gov_changes import GOV_KEY_ENV, NO_KEY_HELP, batch_changes, register_propose
from ext_authz.errors import ConfigError, SealgateError, UsageError

ENV_HELP = f"{GOV_KEY_ENV}  the signer's hex key (or the variable named by --key-env)"


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
    register_propose(govsub, cmd_gov_propose)
    p = command(govsub, "approve", "an owner approves; the approval reaching the threshold submits the Safe transaction "
                "(schedules the operation, or cancels it for a cancel proposal) and prints the local ready time",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json approve 0x3f2a9c", env=ENV_HELP)
    p.add_argument("proposal", metavar="ID", help="proposal id (the Safe transaction hash) or a prefix of >= 6 characters")
    p.add_argument("--print-eip712", action="store_true", help="print the Safe transaction as EIP-712 typed data for a "
                   "hardware wallet or offline signer (eth_signTypedData_v4) and exit: no key, nothing sent")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.set_defaults(func=cmd_gov_approve)
    p = command(govsub, "submit", "submit a proposal's Safe transaction with owners' offline EIP-712 signatures "
                "(from `approve --print-eip712`) joined to the on-chain approvals; anyone may send it",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json submit 0x3f2a9c --signature 0x.. "
                "--signature 0x..", env=ENV_HELP)
    p.add_argument("proposal", metavar="ID", help="proposal id or a prefix of >= 6 characters")
    p.add_argument("--signature", action="append", default=[], metavar="HEX",
                   help="an owner's 65-byte EIP-712 signature of the Safe transaction (repeat per owner)")
    p.set_defaults(func=cmd_gov_submit)
    p = command(govsub, "guardian-cancel", "guardian: cancel a scheduled timelock operation now (CANCELLER_ROLE); "
                "refused for a guardian rotation", "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json "
                "guardian-cancel 0x<operation id from gov pending>", env=ENV_HELP)
    p.add_argument("operation", metavar="OPERATION_ID", help="the timelock operation id (0x + 64 hex)")
    p.set_defaults(func=cmd_gov_guardian_cancel)
    p = command(govsub, "execute", "run a scheduled operation (one call or a batch) once its delay has passed (anyone "
                "may); before that, prints when it becomes ready (local time and unix time) and exits 1",
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json execute 0x3f2a9c", env=ENV_HELP)
    p.add_argument("proposal", metavar="ID", help="proposal id or a prefix of >= 6 characters")
    p.set_defaults(func=cmd_gov_execute)
    p = command(govsub, "cancel", "propose cancelling a scheduled operation: a Safe transaction calling "
                "timelock.cancel (the Safe is the canceller); owners approve it like a proposal and the approval "
                "reaching the threshold cancels at once, with no delay",
                "sealgate gov --manifest addresses.json cancel 0x3f2a9c      # prints the cancel proposal's id\n"
                "SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json approve <that id>   # each owner",
                env=NO_KEY_HELP)
    p.add_argument("proposal", metavar="ID", help="the proposal whose operation to cancel (id or prefix of >= 6 "
                   "characters), or a timelock operation id (0x + 64 hex, as `gov pending` prints)")
    p.set_defaults(func=cmd_gov_cancel)
    p = command(govsub, "repropose", "make a stale proposal again (its Safe nonce was taken by another Safe transaction): "
                "same calls, same operation id, the Safe's current nonce; owners approve the new id",
                "sealgate gov --manifest addresses.json repropose 0x3f2a9c", env=NO_KEY_HELP)
    p.add_argument("proposal", metavar="ID", help="the stale proposal's id or a prefix of >= 6 characters")
    p.set_defaults(func=cmd_gov_repropose)
    p = command(govsub, "pending", "scheduled timelock operations not yet executed or cancelled, each call decoded "
                "(contract.function(arguments)), with state and ready time in local time; then the proposals in --dir "
                "still waiting for approvals", "sealgate gov --manifest addresses.json pending")
    p.set_defaults(func=cmd_gov_pending)
    for name, action, flag, what in (("revoke", "revoke", "--agent", "an agent (SPIFFE ID)"),
                                     ("revoke-approver", "revoke-approver", "--name", "an approver"),
                                     ("pause", "pause", None, "the current policy"),
                                     ("deprecate-model", "deprecate", "--model-id", "a model")):
        example = f"SEALGATE_GOV_KEY=0x... sealgate gov --manifest addresses.json {name}"
        example += f" {flag} X" if flag else ""
        p = command(govsub, name, f"guardian: {name.split('-')[0]} {what} now, without the timelock", example, env=ENV_HELP)
        if flag:
            p.add_argument(flag, required=True, help=what)
        p.set_defaults(func=cmd_gov_guardian, action=action)
    from ext_authz.cli.gov_keys import register_guardian  # signing keys: cli/gov_keys.py

    register_guardian(govsub, ENV_HELP)


# ------------------------------------------------------------------ batch files


# ------------------------------------------------------------------ commands


def _gov(args: argparse.Namespace):
    from ext_authz.chain.client import ChainClient
    from ext_authz.chain.governance import Governance
    from ext_authz.chain.manifest import Manifest

    manifest = Manifest.load(args.manifest)
    return Governance(ChainClient(manifest.rpc_url), manifest), Path(args.dir)


def _account(args: argparse.Namespace, gov) -> Any:
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


def _hex32(value: str, flag: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError as e:
        raise UsageError(f"{flag} must be hex ({what}), found {value!r}") from e
    if len(raw) != 32:
        raise UsageError(f"{flag} must be 32 bytes of hex ({what}), found {len(raw)} bytes")
    return raw


def _changes(gov, args: argparse.Namespace) -> list[tuple]:
    """One change kind's flags -> its calls: (target, call, description) each (most kinds are one call)."""
    if args.what == "upgrade-policy":
        return gov.upgrade_policy_changes(args.implementation, keep_paused=True if args.keep_paused else None)
    if args.what == "rotate-guardian":
        old = args.old
        if old is None:
            current = gov.guardians()
            if len(current) != 1:
                raise UsageError(f"rotate-guardian: {len(current)} guardians now ({', '.join(current)}): say which with --old")
            old = current[0]
        return gov.rotate_guardian_changes(old, args.new)
    return [_change(gov, args)]


def _change(gov, args: argparse.Namespace) -> tuple:
    """One single-call change kind's flags -> (target, call, description)."""
    from ext_authz.chain.governance import rule_tuple
    from ext_authz.server.config import DATA_CLASSES

    if args.what == "restore-model":
        return gov.call_restore_model(args.model_id)
    if args.what in ("add-owner", "remove-owner", "swap-owner", "change-threshold"):
        fields = {f: getattr(args, f) for f in ("address", "old", "new", "threshold") if hasattr(args, f)}
        return gov.call_safe_owners(args.what, **fields)
    if args.what == "set-rule":
        try:
            classes = tuple(DATA_CLASSES.index(c.strip()) for c in args.data_classes.split(","))
        except ValueError as e:
            raise UsageError(f"--data-classes: each of {args.data_classes!r} must be one of {', '.join(DATA_CLASSES)}") from e
        rule = rule_tuple(args.max_amount, args.approval_threshold, classes, args.max_risk, args.utc_hours,
                          args.required_model, not args.disable)
        return gov.call_set_rule(args.role, args.action_type, args.target, rule)
    if args.what == "reactivate":
        return gov.call_reactivate(args.agent)
    if args.what == "set-key":
        if args.cert:
            from ext_authz.authz.identity import spki_fingerprint

            try:
                return gov.call_set_key(args.agent, spki_fingerprint(Path(args.cert).read_text()))
            except (OSError, SealgateError) as e:
                raise UsageError(f"--cert {args.cert}: {e}") from e
        return gov.call_set_key(args.agent, _hex32(args.key_fingerprint, "--key-fingerprint", "SHA-256 of the SPKI"))
    if args.what == "set-model":
        return gov.call_set_model(args.agent, args.model_id)
    if args.what == "register-approver":
        return gov.call_register_approver(args.name, args.key_x)
    if args.what in ("grant-anchorer", "revoke-anchorer"):
        return gov.call_anchorer(args.address, grant=args.what == "grant-anchorer")
    if args.what == "unpause":
        return gov.call_unpause()
    if args.what == "register-model":
        return gov.call_register_model(args.model_id, args.sha256, args.sbom)
    if args.what == "register-agent":
        key = _hex32(args.key_fingerprint, "--key-fingerprint", "SHA-256 of the SPKI") if args.key_fingerprint else bytes(32)
        return gov.call_register_agent(args.agent, args.org, args.role, args.model_id, key)
    from ext_authz.cli.gov_keys import key_change  # signing keys: cli/gov_keys.py

    if (change := key_change(gov, args)) is not None:
        return change
    raise SealgateError(f"unknown proposal kind {args.what}")


def _warnings(gov, entries: list[argparse.Namespace], changes: list[tuple]) -> list[str]:
    from ext_authz.policy.abi import text_id

    out = gov.preflight(changes)
    registered = {e.model_id for e in entries if e.what == "register-model"}
    for e in entries:
        if e.what == "set-model" and e.model_id not in registered \
                and not gov.models.functions.isApproved(text_id(e.model_id)).call():
            out.append(f"model {e.model_id!r} is not approved in the ModelRegistry (unregistered or deprecated): once "
                       f"this runs, {e.agent} is denied MODEL_NOT_APPROVED until it is (add register-model to the batch)")
    return out


def _print_calls(gov, proposal, indent: str = "  ") -> None:
    """Every call decoded from its calldata against the target's ABI (what will run); the file's own
    descriptions follow, marked as the proposer's unverified words."""
    names = gov.names(proposal.calls)
    labels = gov.labels(names)
    how = "scheduleBatch" if proposal.batch else "schedule"
    print(f"{indent}{'batch of ' + str(len(proposal.calls)) + ' calls' if proposal.batch else 'one call'}, "
          f"one timelock operation ({how}):")
    for i, call in enumerate(proposal.calls, 1):
        print(f"{indent}  {i}. {gov.describe(call, names, labels)}")
        if call.value:
            print(f"{indent}     sends {call.value} wei")
        if call.description:
            print(f"{indent}     (the file says: {call.description!r})")


def _print_verified(gov, proposal) -> None:
    """What an owner signs, recomputed from the calls: printed before any approval or signature."""
    from ext_authz.chain.proposals import duration

    what = ("CANCELS timelock operation " + proposal.operation_id + ", which would run:") if proposal.action == "cancel" \
        else f"schedules timelock operation {proposal.operation_id}, delay {proposal.delay}s ({duration(proposal.delay)}):"
    print(f"Safe transaction {proposal.id} (nonce {proposal.safe_nonce}, recomputed from the calls) {what}")
    _print_calls(gov, proposal)
    from ext_authz.chain.proposals import is_guardian_rotation

    if proposal.action == "schedule" and is_guardian_rotation(proposal.calls):
        print("  a guardian rotation: the guardian cannot cancel it")
    for w in gov.upgrade_warnings(proposal.calls) if proposal.action == "schedule" else []:
        print(f"  WARNING: {w}")
    print(f"  (the file's description, unverified: {proposal.description!r})")


def _same_nonce_note(gov, directory: Path, proposal) -> None:
    from ext_authz.chain.governance import Proposal

    others = [p.id[:12] for p in Proposal.load_all(directory)
              if p.safe_nonce == proposal.safe_nonce and p.id != proposal.id and not p.superseded_by]
    if others:
        print(f"note: {', '.join(others)} also wait(s) for Safe nonce {proposal.safe_nonce}: only the first one submitted "
              "runs, the others become stale (`sealgate gov repropose ID`); to change several things at once use "
              "`propose --batch FILE`", file=sys.stderr)


def cmd_gov_propose(args: argparse.Namespace) -> int:
    from ext_authz.chain.proposals import duration

    if bool(args.batch) == bool(args.what):
        raise UsageError("give one change kind (e.g. `propose set-rule ...`) or `propose --batch FILE`, not both or neither")
    if args.batch:
        try:
            text = sys.stdin.read() if args.batch == "-" else Path(args.batch).read_text()
        except OSError as e:
            raise UsageError(f"--batch {args.batch}: {e.strerror}") from e
        entries = batch_changes(text, args.batch)
    else:
        entries = [args]
    gov, directory = _gov(args)
    changes = [c for e in entries for c in _changes(gov, e)]
    for w in _warnings(gov, entries, changes):
        print(f"warning: {w}", file=sys.stderr)
    batch = bool(args.batch) or len(changes) > 1
    proposal = gov.propose(changes if batch else changes[0], batch=batch, description=args.description)
    path = proposal.save(directory)
    print(f"proposal {proposal.id}\n  {proposal.description}")
    _print_calls(gov, proposal)
    print(f"  timelock operation {proposal.operation_id}, delay {proposal.delay}s ({duration(proposal.delay)}), "
          f"Safe nonce {proposal.safe_nonce}\n  saved to {path}; owners approve with: sealgate gov approve {proposal.id[:12]}")
    _same_nonce_note(gov, directory, proposal)
    return 0


def _ready_line(gov, op_id: str) -> str:
    from ext_authz.chain.proposals import duration, local_time

    ready = gov.ready_at(op_id)
    left = ready - gov.chain_time()
    return f"ready at {local_time(ready)}" + (f", in {duration(left)} of chain time" if left > 0 else ", now")


def cmd_gov_approve(args: argparse.Namespace) -> int:
    import json

    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposal = gov.verify(Proposal.load(directory, args.proposal))
    if args.print_eip712:  # the typed data alone on stdout, for the signing device; what it means on stderr
        with contextlib.redirect_stdout(sys.stderr):
            _print_verified(gov, proposal)
        print(json.dumps(gov.safe_typed_data(proposal), indent=2))
        print(f"EIP-712 hash (the Safe transaction hash) {proposal.id}: sign the typed data above with "
              f"eth_signTypedData_v4; then anyone submits: sealgate gov submit {proposal.id[:12]} --signature 0x...",
              file=sys.stderr)
        return 0
    _print_verified(gov, proposal)
    if sys.stdin.isatty() and not args.yes and input("approve this Safe transaction? [y/N] ").strip().lower() != "y":
        print("not approved")
        return 1
    owner = _account(args, gov)
    gov.approve(proposal, owner)
    approvals = gov.approvals(proposal)
    print(f"approved by {owner.address}: {len(approvals)}/{gov.manifest.threshold}")
    if gov.safe_executed(proposal):
        print(f"already submitted: operation {proposal.operation_id[:12]} is {gov.state(proposal)}")
    elif len(approvals) >= gov.manifest.threshold:
        _report_submitted(gov, proposal, gov.submit(proposal, owner))
    return 0


def _report_submitted(gov, proposal, receipt) -> None:
    if proposal.action == "cancel":
        print(f"threshold reached: operation {proposal.operation_id} cancelled in block {receipt.blockNumber}; "
              "it can no longer execute")
    else:
        print(f"threshold reached: scheduled in block {receipt.blockNumber}; {_ready_line(gov, proposal.operation_id)}")


def cmd_gov_submit(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposal = gov.verify(Proposal.load(directory, args.proposal))
    _print_verified(gov, proposal)
    signers = [gov.offline_signer(proposal, sig) for sig in args.signature]
    print(f"offline signatures by {', '.join(signers) or 'nobody'}; on-chain approvals by "
          f"{', '.join(gov.approvals(proposal)) or 'nobody'}")
    _report_submitted(gov, proposal, gov.submit(proposal, _account(args, gov), offline=args.signature))
    return 0


def cmd_gov_guardian_cancel(args: argparse.Namespace) -> int:
    gov, _ = _gov(args)
    op = args.operation.lower()
    calls = gov.scheduled_calls(op)
    names = gov.names(calls)
    labels = gov.labels(names)
    print(f"guardian cancels timelock operation {op} ({gov.operation_state(op)}), which would run:")
    for i, call in enumerate(calls, 1):
        print(f"  {i}. {gov.describe(call, names, labels)}")
    receipt = gov.guardian_cancel(op, _account(args, gov))
    print(f"cancelled in block {receipt.blockNumber}")
    return 0


def cmd_gov_execute(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposal = gov.verify(Proposal.load(directory, args.proposal))
    if proposal.action == "cancel":
        print(f"nothing to execute: {proposal.id[:12]} is a cancel proposal; it takes effect when the threshold approves "
              f"it (operation {proposal.operation_id[:12]} is {gov.state(proposal)})")
        return 1
    state = gov.state(proposal)
    if state == "Ready":
        _print_verified(gov, proposal)
        receipt = gov.execute(proposal, _account(args, gov))
        print(f"executed in block {receipt.blockNumber}: {proposal.description}")
        return 0
    if state == "Waiting":
        print(f"not executable: operation is Waiting; {_ready_line(gov, proposal.operation_id)}")
    elif state == "Unset" and gov.is_stale(proposal):
        print(f"not executable: operation is Unset and will never be scheduled: {gov.stale_message(proposal)}")
    elif state == "Unset":
        print(f"not executable: operation is Unset ({len(gov.approvals(proposal))}/{gov.manifest.threshold} approvals)")
    elif state == "Cancelled":
        print("not executable: operation is Cancelled (an owners' cancel proposal stopped it); nothing will run")
    else:
        print("not executable: operation is Done (already executed)")
    return 1


def _resolve_cancel_target(gov, directory: Path, ident: str):
    from ext_authz.chain.governance import Proposal

    try:
        return gov.verify(Proposal.load(directory, ident))
    except ConfigError:
        text = ident.lower()
        if len(text) == 66 and text.startswith("0x") and all(c in "0123456789abcdef" for c in text[2:]):
            return text  # an operation id from `gov pending`
        raise


def cmd_gov_cancel(args: argparse.Namespace) -> int:
    gov, directory = _gov(args)
    proposal = gov.propose_cancel(_resolve_cancel_target(gov, directory, args.proposal))
    path = proposal.save(directory)
    print(f"proposal {proposal.id}\n  {proposal.description}\n  cancels timelock operation {proposal.operation_id} "
          f"({gov.state(proposal)}; {_ready_line(gov, proposal.operation_id)}), which would run:")
    _print_calls(gov, proposal, indent="    ")
    print(f"  Safe nonce {proposal.safe_nonce}; saved to {path}\n  owners approve with: sealgate gov approve "
          f"{proposal.id[:12]}; the approval reaching {gov.manifest.threshold} cancels it at once (no delay)")
    _same_nonce_note(gov, directory, proposal)
    return 0


def cmd_gov_repropose(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    stale = Proposal.load(directory, args.proposal)
    fresh = gov.repropose(stale)
    path = fresh.save(directory)
    stale.superseded_by = fresh.id
    stale.save(directory)
    print(f"proposal {fresh.id}\n  {fresh.description}\n  re-proposes {stale.id[:12]} (Safe nonce {stale.safe_nonce} was "
          f"taken) for Safe nonce {fresh.safe_nonce}; same timelock operation {fresh.operation_id}")
    _print_calls(gov, fresh)
    print(f"  saved to {path}; the old approvals do not carry over: owners approve with: "
          f"sealgate gov approve {fresh.id[:12]}")
    return 0


def cmd_gov_pending(args: argparse.Namespace) -> int:
    from ext_authz.chain.governance import Proposal

    gov, directory = _gov(args)
    proposals = Proposal.load_all(directory)
    by_op = {p.operation_id.lower(): p for p in proposals if p.action == "schedule" and not p.superseded_by}
    ops = gov.pending()
    for op in ops:
        known = by_op.get(op["operation_id"])
        print(f"operation {op['operation_id']} {op['state']}, {_ready_line(gov, op['operation_id'])}; scheduled in "
              f"block {op['scheduled_block']}" + (f"; proposal {known.id[:12]}" if known else "")
              + ("; a guardian rotation (the guardian cannot cancel it)" if op["guardian_rotation"] else ""))
        print(f"  {'batch of ' + str(len(op['calls'])) + ' calls' if op['batch'] else 'one call'}:")
        for i, text in enumerate(op["decoded"], 1):
            print(f"    {i}. {text}")
        for w in gov.upgrade_warnings(op["calls"]):
            print(f"  WARNING: {w} (the guardian may cancel: sealgate gov guardian-cancel {op['operation_id']})")
    if not ops:
        print("no pending timelock operations")
    waiting = [p for p in proposals if not p.superseded_by and not gov.safe_executed(p)]
    if waiting:
        print(f"proposals in {directory} not yet submitted:")
    for p in waiting:
        try:
            p = gov.verify(p)
        except ConfigError as e:
            print(f"  {p.id[:12]} REFUSED, do not approve: {e}")
            continue
        if gov.is_stale(p):
            status = f"STALE (made for Safe nonce {p.safe_nonce}): sealgate gov repropose {p.id[:12]}"
        else:
            status = f"{len(gov.approvals(p))}/{gov.manifest.threshold} approvals, Safe nonce {p.safe_nonce}"
        print(f"  {p.id[:12]} {p.action}{' batch' if p.batch else ''} - {status}; its calls:")
        names = gov.names(p.calls)
        labels = gov.labels(names)
        for i, call in enumerate(p.calls, 1):
            print(f"    {i}. {gov.describe(call, names, labels)}")
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

"""The changes a `sealgate gov propose` can carry: each kind's flags, and batch files of several."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ext_authz.cli.common import command
from ext_authz.errors import UsageError

GOV_KEY_ENV = "SEALGATE_GOV_KEY"
NO_KEY_HELP = f"{GOV_KEY_ENV}  not needed: this only reads the chain and writes a proposal file"


BATCH_EXAMPLE = """\
sealgate gov --manifest addresses.json propose --batch changes.yaml

changes.yaml: a YAML list; each entry has `kind` (one of the CHANGE kinds) and that kind's flags as
fields, without the leading -- (dashes or underscores). Values are read as text, so hex stays hex.
  - kind: register-model
    model_id: m-8
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    sbom: https://sbom.example/m-8
  - kind: set-model
    agent: spiffe://sealgate.local/agent/finance-03
    model_id: m-8
  - kind: set-rule
    role: finance
    action_type: payment.transfer
    target: payments-api
    max_amount: 5000000
    data_classes: [public, internal]"""


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


def register_propose(govsub: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    p = command(govsub, "propose", "propose a timelocked change through the Safe, or several changes as one batch "
                "(one timelock operation, one Safe nonce); prints the proposal id",
                "sealgate gov --manifest addresses.json propose set-rule --role procurement --action-type payment \\\n"
                "    --target payments-api --max-amount 100000\n" + BATCH_EXAMPLE, env=NO_KEY_HELP)
    p.add_argument("--batch", metavar="FILE", help="YAML list of changes (- for stdin) proposed together through "
                   "timelock.scheduleBatch: they take effect in one transaction, in file order, and use one Safe nonce "
                   "(proposals made one after another each take the current nonce and only the first can run)")
    p.add_argument("--description", metavar="TEXT", help="what the batch is for; "
                   "without it, the changes' own descriptions joined by '; '")
    _add_kinds(p.add_subparsers(dest="what", required=False, metavar="CHANGE"))
    p.set_defaults(func=handler)


def _add_kinds(kinds: Any) -> None:
    """The change kinds, for `propose KIND` and for the entries of a `--batch` file (same flags, same defaults)."""
    k = command(kinds, "upgrade-policy", "point the policy id at a new implementation, keeping the brakes: one batch "
                "grants the timelock POLICY_ADMIN_ROLE and every current guardian GUARDIAN_ROLE on it, pauses it when "
                "the current policy is paused, then upgrades (the registry refuses an upgrade that would lift a pause)",
                "sealgate gov --manifest m.json propose upgrade-policy --implementation 0xPolicy")
    k.add_argument("--implementation", required=True, metavar="ADDRESS",
                   help="the new RuleBasedPolicy, deployed with the timelock as admin and the manifest's registries")
    k.add_argument("--keep-paused", action="store_true", help="pause the new implementation even if the current one "
                   "is not paused now (the guardian may pause it during the delay: the upgrade would then revert)")
    k = command(kinds, "rotate-guardian", "move every guardian power (GUARDIAN_ROLE on the registries and the policy, "
                "CANCELLER_ROLE on the timelock) from one address to another; the old guardian cannot cancel it",
                "sealgate gov --manifest m.json propose rotate-guardian --new 0xNewGuardian")
    k.add_argument("--new", required=True, metavar="ADDRESS", help="the new guardian (e.g. an on-call Safe or an HSM key)")
    k.add_argument("--old", metavar="ADDRESS", help="the guardian to replace (default: the only current one)")
    k = command(kinds, "restore-model", "undo a guardian's deprecation of a model",
                "sealgate gov --manifest m.json propose restore-model --model-id m-7")
    k.add_argument("--model-id", required=True, help="the deprecated model id")
    for name, verb in (("add-owner", "add a Safe owner and set the threshold"),
                       ("remove-owner", "remove a Safe owner and set the threshold")):
        k = command(kinds, name, verb + " (through the timelock, the Safe's module; the Safe's guard refuses "
                    "owner changes as Safe transactions)",
                    f"sealgate gov --manifest m.json propose {name} --address 0xOwner --threshold 3")
        k.add_argument("--address", required=True, metavar="ADDRESS", help="the owner")
        k.add_argument("--threshold", required=True, type=int, help="the Safe's threshold afterwards")
    k = command(kinds, "swap-owner", "replace a Safe owner (a lost or stolen owner key) through the timelock",
                "sealgate gov --manifest m.json propose swap-owner --old 0xLost --new 0xFresh")
    k.add_argument("--old", required=True, metavar="ADDRESS", help="the owner to replace")
    k.add_argument("--new", required=True, metavar="ADDRESS", help="the new owner")
    k = command(kinds, "change-threshold", "change the Safe's threshold through the timelock",
                "sealgate gov --manifest m.json propose change-threshold --threshold 4")
    k.add_argument("--threshold", required=True, type=int, help="approvals a Safe transaction needs")
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
    k = command(kinds, "set-key", "rotate an agent's certificate key: AgentRegistry.setKey(agentId, keyFingerprint); "
                "after execution the old certificate is denied KEY_NOT_BOUND",
                "sealgate gov --manifest m.json propose set-key --agent spiffe://sealgate.local/agent/finance-03 \\\n"
                "    --cert finance-03-new.pem")
    k.add_argument("--agent", required=True, metavar="SPIFFE_ID", help="the agent (registered)")
    key = k.add_mutually_exclusive_group(required=True)
    key.add_argument("--key-fingerprint", metavar="HEX", help="SHA-256 of the new certificate's SPKI, 64 hex digits "
                     "(64 zeros: bind by SPIFFE ID only)")
    key.add_argument("--cert", metavar="PEM_FILE", help="the agent's new certificate; its SPKI SHA-256 is computed")
    k = command(kinds, "set-model", "move an agent to another model: AgentRegistry.setModel(agentId, modelId); the model "
                "must be registered and not deprecated in the ModelRegistry (e.g. register-model earlier in the same "
                "batch) or the agent is denied MODEL_NOT_APPROVED",
                "sealgate gov --manifest m.json propose set-model --agent spiffe://sealgate.local/agent/finance-03 \\\n"
                "    --model-id m-8")
    k.add_argument("--agent", required=True, metavar="SPIFFE_ID", help="the agent (registered)")
    k.add_argument("--model-id", required=True, help="the model id it will run (as registered in the ModelRegistry)")
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
    # signing keys (SigningKeyRegistry): their kinds live in cli/gov_keys.py
    from ext_authz.cli.gov_keys import add_key_kinds

    add_key_kinds(kinds)


class _EntryParser(argparse.ArgumentParser):
    """Parses one batch entry with the single-change flags; errors become a UsageError naming the entry."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def batch_changes(text: str, source: str = "batch file") -> list[argparse.Namespace]:
    """A YAML list of changes -> the namespaces `propose KIND --flags` would give, in order."""
    import yaml

    try:
        entries = yaml.load(text, Loader=yaml.BaseLoader)  # every scalar stays text: hex is not read as a number
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: not YAML: {e}") from e
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{source}: expected a non-empty YAML list of changes, found {type(entries).__name__}")
    parser = _EntryParser(prog="batch entry", add_help=False)
    kinds = parser.add_subparsers(dest="what", required=True)
    _add_kinds(kinds)
    out = []
    for i, entry in enumerate(entries, 1):
        entry = {"kind": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise UsageError(f"{source}: entry {i}: expected a mapping with `kind` (one of {', '.join(kinds.choices)})")
        kind = entry["kind"]
        if kind not in kinds.choices:
            raise UsageError(f"{source}: entry {i}: unknown kind {kind!r} (one of {', '.join(kinds.choices)})")
        flags = {o: a for a in kinds.choices[kind]._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        argv = [kind]
        for key, value in entry.items():
            if key == "kind":
                continue
            flag = "--" + str(key).replace("_", "-")
            if flag not in flags:
                known = ", ".join(f[2:] for f in flags)
                raise UsageError(f"{source}: entry {i} ({kind}): unknown field {key!r} (fields: {known})")
            if flags[flag].nargs == 0:  # a switch such as `disable: true`
                if str(value).lower() not in TRUE + FALSE:
                    raise UsageError(f"{source}: entry {i} ({kind}): {key} is true or false, found {value!r}")
                argv += [flag] if str(value).lower() in TRUE else []
            elif isinstance(value, list):
                argv += [flag, ",".join(str(v) for v in value)]
            elif isinstance(value, dict):
                raise UsageError(f"{source}: entry {i} ({kind}): {key} must be a value or a list, found a mapping")
            else:
                argv += [flag, value]
        try:
            out.append(parser.parse_args(argv))
        except UsageError as e:
            raise UsageError(f"{source}: entry {i} ({kind}): {e}") from e
    return out

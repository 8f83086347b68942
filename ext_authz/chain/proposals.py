"""The proposal file owners pass around, and what a timelock call does in words.

A proposal is one Safe transaction. `action` says what the Safe calls on the timelock:

- ``schedule``: `schedule(target, value, data, 0, salt, delay)` for one call, or
  `scheduleBatch(targets, values, payloads, 0, salt, delay)` when ``batch`` is true (several
  changes, one timelock operation, one Safe nonce);
- ``cancel``: `cancel(operation_id)` (the Safe holds CANCELLER_ROLE); ``calls`` then repeats
  what the cancelled operation would have done, so owners can see what they stop.

The file is JSON (format 2) and records every call (target, value, calldata), the salt, the
delay, the Safe nonce it was made for, the Safe transaction hash owners approve (its id) and the
timelock operation id. Format 1 files (one `target` + `data`) still load. Nothing here touches
the chain: `Governance.verify` recomputes the hashes from the calls before anyone approves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from ext_authz.chain.artifacts import artifact, role_id
from ext_authz.errors import ConfigError

PROPOSAL_FORMAT = 2
ACTIONS = ("schedule", "cancel")

# manifest field -> contract artifact, for naming the targets of scheduled calls
MANIFEST_CONTRACTS = (("registry", "AgentRegistry"), ("models", "ModelRegistry"), ("policy", "RuleBasedPolicy"),
                      ("policy_registry", "PolicyRegistry"), ("anchor", "SaeAnchor"), ("approvers", "ApproverRegistry"),
                      ("timelock", "SealgateTimelock"), ("safe", "Safe"))
ROLE_NAMES = ("DEFAULT_ADMIN_ROLE", "REGISTRAR_ROLE", "GUARDIAN_ROLE", "MODEL_ADMIN_ROLE", "POLICY_ADMIN_ROLE",
              "ANCHORER_ROLE", "APPROVER_ADMIN_ROLE", "PROPOSER_ROLE", "EXECUTOR_ROLE", "CANCELLER_ROLE")


@dataclass(frozen=True)
class Call:
    """One call the timelock makes: `target.call{value}(data)`."""

    target: str
    value: int
    data: str  # 0x-hex calldata
    description: str = ""

    @property
    def data_bytes(self) -> bytes:
        return bytes.fromhex(self.data.removeprefix("0x"))


@dataclass
class Proposal:
    """A Safe transaction acting on the timelock (stored as JSON so other owners can check and approve it)."""

    description: str
    calls: list[Call]
    batch: bool
    salt: str
    delay: int  # seconds
    safe_nonce: int
    safe_tx_hash: str
    operation_id: str  # the timelock operation scheduled (schedule) or cancelled (cancel)
    action: str = "schedule"
    superseded_by: str | None = None  # set by `gov repropose` on the stale file
    format: int = PROPOSAL_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"proposal action must be one of {ACTIONS}, found {self.action!r}")
        if self.action == "schedule" and not self.calls:
            raise ConfigError("a schedule proposal needs at least one call")
        if self.action == "schedule" and not self.batch and len(self.calls) != 1:
            raise ConfigError(f"a single (non-batch) proposal carries one call, found {len(self.calls)}")

    @property
    def id(self) -> str:
        return self.safe_tx_hash

    @property
    def targets(self) -> list[str]:
        return [to_checksum_address(c.target) for c in self.calls]

    @property
    def values(self) -> list[int]:
        return [c.value for c in self.calls]

    @property
    def datas(self) -> list[bytes]:
        return [c.data_bytes for c in self.calls]

    def to_json(self) -> str:
        raw = asdict(self)
        raw.pop("path")
        return json.dumps(raw, indent=2) + "\n"

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{self.id}.json"
        self.path.write_text(self.to_json())
        return self.path

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Proposal:
        raw = dict(raw)
        try:
            if raw.get("format", 1) == 1:  # one call: target + data
                raw["calls"] = [{"target": raw.pop("target"), "value": 0, "data": raw.pop("data"),
                                 "description": raw.get("description", "")}]
                raw["batch"] = False
                raw["format"] = PROPOSAL_FORMAT
            if raw["format"] != PROPOSAL_FORMAT:
                raise ConfigError(f"proposal format {raw['format']} is not supported (expected {PROPOSAL_FORMAT})")
            raw["calls"] = [Call(**c) for c in raw["calls"]]
            return cls(**raw)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"proposal file malformed: {e!r}") from e

    @classmethod
    def load(cls, directory: Path, proposal_id: str) -> Proposal:
        matches = sorted(directory.glob(f"{proposal_id}*.json")) if len(proposal_id) >= 6 else []
        if len(matches) != 1:
            raise ConfigError(f"proposal {proposal_id!r}: expected one match in {directory}, found {len(matches)}")
        return cls.load_file(matches[0])

    @classmethod
    def load_file(cls, path: Path) -> Proposal:
        try:
            proposal = cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"proposal file {path} unreadable: {e}") from e
        proposal.path = path
        return proposal

    @classmethod
    def load_all(cls, directory: Path) -> list[Proposal]:
        out = []
        for path in sorted(directory.glob("0x*.json")) if directory.is_dir() else []:
            try:
                out.append(cls.load_file(path))
            except ConfigError:
                continue  # not ours to judge here; `approve` reports it when it is used
        return out


# ------------------------------------------------------------------ time


def local_time(unix: int) -> str:
    """`2026-12-01 14:03:20 CET (UTC+0100), unix 1796130200`: the ready time as people read it."""
    local = datetime.fromtimestamp(unix).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S %Z (UTC%z)}, unix {unix}"


def duration(seconds: int) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


# ------------------------------------------------------------------ calldata decoding


def _abi_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple"):]
    return t


def _selectors(contract_name: str) -> dict[bytes, dict[str, Any]]:
    out = {}
    for item in artifact(contract_name)["abi"]:
        if item["type"] == "function":
            sig = f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})"
            out[keccak(text=sig)[:4]] = item
    return out


_ROLES = {role_id(n): n for n in ROLE_NAMES}


def _format(value: Any, param: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    t = param["type"]
    if t.startswith("tuple") and t != "tuple":  # tuple[] / tuple[n]
        inner = {**param, "type": "tuple"}
        return "[" + ", ".join(_format(v, inner, labels) for v in value) + "]"
    if t == "tuple":
        return "(" + ", ".join(f"{c['name'] or i}={_format(v, c, labels)}"
                               for i, (v, c) in enumerate(zip(value, param["components"], strict=True))) + ")"
    if t.endswith("]"):
        inner = {**param, "type": t[: t.rindex("[")]}
        return "[" + ", ".join(_format(v, inner, labels) for v in value) + "]"
    if isinstance(value, bytes):
        text = "0x" + value.hex()
        return f"{text}({_ROLES[value]})" if t == "bytes32" and value in _ROLES else text
    if t == "address":
        address = to_checksum_address(value)
        label = (labels or {}).get(address)
        return f"{address}({label})" if label else f"{address}(unknown address)"
    if t == "string":
        return json.dumps(value)
    return str(value)


def decode_call(contract_name: str | None, data: bytes, labels: dict[str, str] | None = None,
                names: dict[str, str] | None = None) -> str:
    """`AgentRegistry.setKey(agentId=0x.., keyFingerprint=0x..)`; unknown targets or selectors: the raw selector.

    `labels` names known addresses in the arguments (`0x..(guardian)`); `names` (address -> contract name) decodes
    the inner call of a Safe `execTransactionFromModule` (how the timelock changes the Safe's owners)."""
    selector = data[:4]
    if contract_name is None:
        return f"unknown contract: selector 0x{selector.hex()} ({len(data)} bytes of calldata)"
    item = _selectors(contract_name).get(selector)
    if item is None:
        return f"{contract_name}: unknown selector 0x{selector.hex()} ({len(data)} bytes of calldata)"
    try:
        values = abi_decode([_abi_type(i) for i in item["inputs"]], data[4:])
    except Exception as e:  # eth_abi raises several decoding errors; the calldata is untrusted here
        return f"{contract_name}.{item['name']}: calldata does not decode ({type(e).__name__}), selector 0x{selector.hex()}"
    args = ", ".join(f"{p['name'] or i}={_format(v, p, labels)}"
                     for i, (v, p) in enumerate(zip(values, item["inputs"], strict=True)))
    text = f"{contract_name}.{item['name']}({args})"
    if contract_name == "Safe" and item["name"] == "execTransactionFromModule" and names is not None:
        to, _value, inner, operation = values
        kind = "CALL" if operation == 0 else "DELEGATECALL"
        text += f"\n       -> {kind} " + decode_call(names.get(to_checksum_address(to)), inner, labels, None)
    return text


_GRANT_REVOKE = (keccak(text="grantRole(bytes32,address)")[:4], keccak(text="revokeRole(bytes32,address)")[:4])


def is_guardian_rotation(calls: list[Call]) -> bool:
    """The rule SealgateTimelock applies when scheduling: every call grants or revokes GUARDIAN_ROLE or
    CANCELLER_ROLE (then the guardian, a canceller but not a proposer, cannot cancel the operation)."""
    powers = (role_id("GUARDIAN_ROLE"), role_id("CANCELLER_ROLE"))
    return bool(calls) and all(len(c.data_bytes) == 68 and c.data_bytes[:4] in _GRANT_REVOKE and c.data_bytes[4:36] in powers
                               for c in calls)


def contract_names(manifest: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Checksummed address -> artifact name, from the manifest (plus e.g. the current policy implementation)."""
    names: dict[str, str] = {to_checksum_address(getattr(manifest, f)): n for f, n in MANIFEST_CONTRACTS if getattr(manifest, f, None)}
    names.update({to_checksum_address(a): n for a, n in (extra or {}).items()})
    return names

"""The address manifest `sealgate deploy` writes and every other command reads.

A versioned JSON object: `Manifest.load` refuses an unreadable file, invalid JSON, unknown or
missing fields, values of the wrong type and any version but `MANIFEST_VERSION` -- a manifest
that does not parse is never taken for "no deployment yet". Plain JSON and regular
expressions only: the authorizer's hot path imports this module and nothing of web3.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ext_authz.errors import ConfigError

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")



def read_bounded(path: str | Path, limit: int, what: str) -> bytes:
    """A deployment file's bytes, refusing one larger than `limit` (never read whole): ConfigError naming `what`."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"{what} {path} unreadable: {e.strerror or e}") from e
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes: not a {what.split()[-1]}")
    return data

@dataclass(frozen=True)
class Manifest:
    chain_id: int
    rpc_url: str
    deploy_block: int
    registry: str  # AgentRegistry
    models: str  # ModelRegistry
    policy: str  # first RuleBasedPolicy implementation
    policy_registry: str
    policy_id: str  # 0x-hex bytes32 the authorizer evaluates
    anchor: str
    timelock: str
    safe: str
    owners: tuple[str, ...]
    threshold: int
    delay_seconds: int
    guardian: str
    anchorer: str
    approvers: str  # ApproverRegistry
    version: int = MANIFEST_VERSION  # format of this file
    signing_keys: str = ""  # SigningKeyRegistry ("" in manifests written before it existed)

    CONTRACTS = ("registry", "models", "policy", "policy_registry", "anchor", "timelock", "safe", "approvers")
    OPTIONAL = ("signing_keys",)  # fields a manifest of an older deployment may lack

    @property
    def contracts(self) -> dict[str, str]:
        """Field name -> address of every contract the deployment created."""
        out = {name: getattr(self, name) for name in self.CONTRACTS}
        if self.signing_keys:
            out["signing_keys"] = self.signing_keys
        return out

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "owners": list(self.owners)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: Any, source: str = "address manifest") -> Manifest:
        """Every field present, none unknown, each of its type; the version this code writes."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(raw).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                              f"(a manifest has: {', '.join(fields)})")
        missing = [f for f in fields if f not in raw and f not in cls.OPTIONAL]
        if missing:
            raise ConfigError(f"{source}: missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        if raw["version"] != MANIFEST_VERSION:
            raise ConfigError(f"{source}: manifest version {raw['version']!r}, this sealgate reads version {MANIFEST_VERSION}")
        for name in ("chain_id", "deploy_block", "threshold", "delay_seconds"):
            if type(raw[name]) is not int or raw[name] < 0:
                raise ConfigError(f"{source}: {name} must be a non-negative integer, found {raw[name]!r}")
        if not isinstance(raw["rpc_url"], str) or not raw["rpc_url"]:
            raise ConfigError(f"{source}: rpc_url must be a non-empty string, found {raw['rpc_url']!r}")
        for name in (*cls.CONTRACTS, "guardian", "anchorer"):
            _address(raw[name], f"{source}: {name}")
        if raw.get("signing_keys", ""):
            _address(raw["signing_keys"], f"{source}: signing_keys")
        if not isinstance(raw["policy_id"], str) or not _BYTES32.fullmatch(raw["policy_id"]):
            raise ConfigError(f"{source}: policy_id must be 0x and 64 hex digits, found {raw['policy_id']!r}")
        owners = raw["owners"]
        if not isinstance(owners, list) or not owners:
            raise ConfigError(f"{source}: owners must be a non-empty list of addresses, found {owners!r}")
        for i, owner in enumerate(owners):
            _address(owner, f"{source}: owners[{i}]")
        if not 1 <= raw["threshold"] <= len(owners):
            raise ConfigError(f"{source}: threshold must be in 1..{len(owners)} (the number of owners), "
                              f"found {raw['threshold']}")
        return cls(**{**raw, "owners": tuple(owners)})

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        data = read_bounded(path, MAX_MANIFEST_BYTES, "address manifest")
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"address manifest {path} is not UTF-8 text") from e
        except ValueError as e:
            raise ConfigError(f"address manifest {path} is not valid JSON: {e}") from e
        return cls.from_dict(raw, f"address manifest {path}")


def _address(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"{where} must be an address (0x and 40 hex digits), found {value!r}")

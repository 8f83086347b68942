"""The address manifest `sealgate deploy` writes and every other command reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ext_authz.errors import ConfigError


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

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "owners": list(self.owners)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**{**raw, "owners": tuple(raw["owners"])})
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"address manifest {path} unreadable: {e}") from e


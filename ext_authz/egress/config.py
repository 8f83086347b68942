"""Egress config: agents, their cgroups and allowlists (validated once at load)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ext_authz.egress.kernel import CGROUP_PARENT, DEFAULT_PIN_DIR, PROTOCOLS, C, EgressUnavailable, cgroup2_mount
from ext_authz.errors import ConfigError


@dataclass(frozen=True)
class AllowRule:
    addr: str
    port: int
    proto: str = "tcp"

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.addr)
        except ValueError as e:
            raise ConfigError(f"allow rule: {e}") from e
        if not 0 < self.port < 65536:
            raise ConfigError(f"allow rule {self.addr}: port must be 1-65535, found {self.port}")
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"allow rule {self.addr}:{self.port}: proto must be tcp or udp, found {self.proto!r}")


@dataclass(frozen=True)
class AgentEgress:
    id: str
    mode: str = "enforce"  # or "audit": report, don't block
    allow: tuple[AllowRule, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{0,62}", self.id):
            raise ConfigError(f"agent id {self.id!r} must be 1-63 chars of [a-z0-9.-_] (it names a cgroup)")
        if self.mode not in ("enforce", "audit"):
            raise ConfigError(f"agent {self.id}: mode must be enforce or audit, found {self.mode!r}")

    @property
    def index(self) -> int:
        """Stable u32 for the maps; 0 is reserved for "unregistered"."""
        return int.from_bytes(hashlib.sha256(self.id.encode()).digest()[:4], "big") or 1


@dataclass(frozen=True)
class EgressConfig:
    agents: tuple[AgentEgress, ...] = ()
    pin_dir: str = DEFAULT_PIN_DIR
    sink: str = "-"  # OCSF JSON lines: a file path, or - for stdout
    cgroup_parent: str = CGROUP_PARENT

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for a in self.agents:
            if a.index in seen:
                raise ConfigError(f"agents {seen[a.index]!r} and {a.id!r} collide in the map index; rename one")
            seen[a.index] = a.id
        if len(self.agents) > C["MAX_AGENT_CGROUPS"]:
            raise ConfigError(f"at most {C['MAX_AGENT_CGROUPS']} agents")
        if sum(len(a.allow) for a in self.agents) > C["MAX_ALLOW_RULES"]:
            raise ConfigError(f"at most {C['MAX_ALLOW_RULES']} allow rules in all")

    def agent(self, agent_id: str) -> AgentEgress:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise ConfigError(f"agent {agent_id!r} is not in the egress configuration")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EgressConfig:
        raw = dict(raw)
        unknown = set(raw) - {"agents", "pin_dir", "sink", "cgroup_parent"}
        if unknown:
            raise ConfigError(f"egress config: unknown keys {sorted(unknown)}")
        agents = []
        for i, a in enumerate(raw.pop("agents", []) or []):
            a = dict(a)
            bad = set(a) - {"id", "mode", "allow"}
            if bad or "id" not in a:
                raise ConfigError(f"egress config agents[{i}]: needs id; unknown keys {sorted(bad)}")
            rules = tuple(AllowRule(**r) for r in a.pop("allow", []) or [])
            agents.append(AgentEgress(allow=rules, **a))
        return cls(agents=tuple(agents), **raw)

    @classmethod
    def load(cls, path: str | Path) -> EgressConfig:
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise ConfigError(f"egress config {path}: {e}") from e


def parent_cgroup(config: EgressConfig) -> Path:
    root = cgroup2_mount()
    if root is None:
        raise EgressUnavailable("no cgroup2 mount")
    return root / config.cgroup_parent


def agent_cgroup(config: EgressConfig, agent_id: str) -> Path:
    return parent_cgroup(config) / agent_id


def cgroup_id(path: Path) -> int:
    """The kernel's cgroup id is the cgroup directory's kernfs inode number."""
    return os.stat(path).st_ino


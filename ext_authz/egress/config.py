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
    """A destination the agent may reach. `device` (an interface name) and `netns` (a network
    namespace file such as /run/netns/x; default: the daemon's own) say where the rule holds; a
    loopback address holds on `lo` only, so interface binding cannot carry it elsewhere."""

    addr: str
    port: int
    proto: str = "tcp"
    device: str | None = None
    netns: str | None = None

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.addr)
        except ValueError as e:
            raise ConfigError(f"allow rule: {e}") from e
        if not 0 < self.port < 65536:
            raise ConfigError(f"allow rule {self.addr}: port must be 1-65535, found {self.port}")
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"allow rule {self.addr}:{self.port}: proto must be tcp or udp, found {self.proto!r}")
        if self.device is not None and not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,15}", self.device):
            raise ConfigError(f"allow rule {self.addr}:{self.port}: device must be an interface name, found {self.device!r}")
        if ip.is_loopback and self.device not in (None, "lo"):
            raise ConfigError(f"allow rule {self.addr}:{self.port}: a loopback address holds on lo only, found device "
                              f"{self.device!r}")
        if self.netns is not None and not self.netns.startswith("/"):
            raise ConfigError(f"allow rule {self.addr}:{self.port}: netns must be an absolute path to a namespace file "
                              f"(/run/netns/NAME, /proc/PID/ns/net), found {self.netns!r}")

    @property
    def key(self) -> tuple[str, int, str]:
        return (str(ipaddress.ip_address(self.addr)), self.port, self.proto)


@dataclass(frozen=True)
class InboundRule:
    """A local port the agent may bind and receive connections or datagrams on from anywhere."""

    port: int
    proto: str = "tcp"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"inbound rule: port must be 1-65535, found {self.port}")
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"inbound rule {self.port}: proto must be tcp or udp, found {self.proto!r}")


@dataclass(frozen=True)
class AgentEgress:
    id: str
    mode: str = "enforce"  # or "audit": report, don't block
    allow: tuple[AllowRule, ...] = ()
    inbound: tuple[InboundRule, ...] = ()  # default: no inbound at all

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{0,62}", self.id):
            raise ConfigError(f"agent id {self.id!r} must be 1-63 chars of [a-z0-9.-_] (it names a cgroup)")
        if self.mode not in ("enforce", "audit"):
            raise ConfigError(f"agent {self.id}: mode must be enforce or audit, found {self.mode!r}")
        seen: dict[tuple[str, int, str], AllowRule] = {}
        for r in self.allow:  # one rule per destination: its device and netns are the map value
            if r.key in seen and seen[r.key] != r:
                raise ConfigError(f"agent {self.id}: two allow rules for {r.addr}:{r.port}/{r.proto} with different "
                                  f"device or netns; keep one")
            seen[r.key] = r

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
        if sum(len(a.inbound) for a in self.agents) > C["MAX_INBOUND_RULES"]:
            raise ConfigError(f"at most {C['MAX_INBOUND_RULES']} inbound rules in all")

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
            bad = set(a) - {"id", "mode", "allow", "inbound"}
            if bad or "id" not in a:
                raise ConfigError(f"egress config agents[{i}]: needs id; unknown keys {sorted(bad)}")
            rules = tuple(AllowRule(**r) for r in a.pop("allow", []) or [])
            inbound = tuple(InboundRule(**r) for r in a.pop("inbound", []) or [])
            agents.append(AgentEgress(allow=rules, inbound=inbound, **a))
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


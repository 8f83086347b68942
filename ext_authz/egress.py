"""Kernel egress enforcement: bcc cgroup programs that block agent traffic skipping the mesh.

Layout under cgroup v2 (found from /proc/self/mounts):
    <cgroup2>/sealgate/            programs attached here (BPF_F_ALLOW_MULTI)
    <cgroup2>/sealgate/<agent-id>/ one cgroup per agent; its id is registered in the `agents` map

Policy maps are pinned under bpffs (default /sys/fs/bpf/sealgate) so a restarted
daemon keeps them; the daemon attaches its new programs before detaching the old
ones, so enforcement has no gap.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import yaml

from .errors import ConfigError, SealgateError

log = logging.getLogger("sealgate.egress")

ROOT = Path(__file__).resolve().parent.parent
EBPF_DIR = ROOT / "ebpf"
HEADER = EBPF_DIR / "egress.h"
PROGRAM = EBPF_DIR / "egress.bpf.c"
DEFAULT_PIN_DIR = "/sys/fs/bpf/sealgate"
CGROUP_PARENT = "sealgate"
BPF_F_ALLOW_MULTI = 2
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTOCOL_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp",
                  socket.IPPROTO_ICMPV6: "icmpv6", socket.IPPROTO_RAW: "raw"}


class EgressUnavailable(SealgateError):
    """eBPF egress enforcement cannot run on this machine; the message says exactly why."""


def header_constants() -> dict[str, int]:
    """The integer #defines of ebpf/egress.h: one source of truth for kernel and user space."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define\s+(\w+)\s+(\d+)\b", HEADER.read_text(), re.M)}


C = header_constants()
HOOKS = {C["HOOK_CONNECT4"]: "connect4", C["HOOK_CONNECT6"]: "connect6", C["HOOK_SENDMSG4"]: "sendmsg4",
         C["HOOK_SENDMSG6"]: "sendmsg6", C["HOOK_SOCK_CREATE"]: "sock_create"}

# (program function, attach type name in bcc.BPFAttachType, bcc program type name)
PROGRAMS = (
    ("sg_connect4", "CGROUP_INET4_CONNECT", "CGROUP_SOCK_ADDR"),
    ("sg_connect6", "CGROUP_INET6_CONNECT", "CGROUP_SOCK_ADDR"),
    ("sg_sendmsg4", "CGROUP_UDP4_SENDMSG", "CGROUP_SOCK_ADDR"),
    ("sg_sendmsg6", "CGROUP_UDP6_SENDMSG", "CGROUP_SOCK_ADDR"),
    ("sg_sock_create", "CGROUP_INET_SOCK_CREATE", "CGROUP_SOCK"),
)
BPFTOOL_ATTACH_NAMES = {"CGROUP_INET4_CONNECT": "connect4", "CGROUP_INET6_CONNECT": "connect6",
                        "CGROUP_UDP4_SENDMSG": "sendmsg4", "CGROUP_UDP6_SENDMSG": "sendmsg6",
                        "CGROUP_INET_SOCK_CREATE": "sock_create"}


# ---------------------------------------------------------------- environment


def cgroup2_mount(mounts: str | None = None) -> Path | None:
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def bpffs_mounted(mounts: str | None = None) -> bool:
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    return any(len(p) >= 3 and p[1] == "/sys/fs/bpf" and p[2] == "bpf" for p in (l.split() for l in text.splitlines()))


def probe() -> str | None:
    """None when eBPF enforcement can run here, else the precise reason it cannot."""
    if os.geteuid() != 0:
        return "not root: loading cgroup BPF programs needs CAP_BPF and CAP_NET_ADMIN"
    if cgroup2_mount() is None:
        return "no cgroup2 mount in /proc/self/mounts"
    if not bpffs_mounted():
        return "bpffs is not mounted at /sys/fs/bpf (run `make install` as root, or mount -t bpf bpf /sys/fs/bpf)"
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not (build / "include").exists() and not (build / "Makefile").exists():
        return f"no kernel headers at {build} (make install links Debian's linux-headers-cloud-amd64 there)"
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return f"bcc python bindings not importable ({e}); install python3-bpfcc and run make install"
    if shutil.which("bpftool") is None:
        return "bpftool not found (apt package bpftool)"
    return None


def require() -> None:
    reason = probe()
    if reason:
        raise EgressUnavailable(reason)


# ---------------------------------------------------------------- configuration


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
    def from_dict(cls, raw: dict[str, Any]) -> "EgressConfig":
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
    def load(cls, path: str | Path) -> "EgressConfig":
        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise ConfigError(f"egress config {path}: {e}") from e


# ---------------------------------------------------------------- cgroups


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


# ---------------------------------------------------------------- OCSF


def ocsf_event(ev: Any, agents_by_index: dict[int, str], now_ms: int | None = None) -> dict[str, Any]:
    """OCSF 1.1 Network Activity (class 4001): Refuse (5) when blocked, Open (1) with action Allowed in audit."""
    blocked = ev.verdict == C["VERDICT_BLOCKED"]
    family = ev.family
    raw = bytes(ev.addr)
    if ev.hook == C["HOOK_SOCK_CREATE"]:
        ip = None
    elif ev.addr_is_v4:  # includes a v4-mapped destination, judged (and reported) as IPv4
        ip = str(ipaddress.IPv4Address(raw[:4]))
    else:
        ip = str(ipaddress.IPv6Address(raw))
    activity = 5 if blocked else 1
    agent = agents_by_index.get(ev.agent_idx, "unregistered" if ev.agent_idx == C["AGENT_UNREGISTERED"] else f"#{ev.agent_idx}")
    return {
        "class_uid": 4001,
        "class_name": "Network Activity",
        "category_uid": 4,
        "activity_id": activity,
        "type_uid": 400100 + activity,
        "time": now_ms if now_ms is not None else int(time.time() * 1000),
        "severity_id": 3 if blocked else 2,
        "action_id": 2 if blocked else 1,
        "disposition_id": 2 if blocked else 1,
        "status_id": 2 if blocked else 1,
        "message": f"{'blocked' if blocked else 'audited'} {HOOKS.get(ev.hook, ev.hook)} by agent {agent}",
        "metadata": {"version": "1.1.0", "product": {"name": "Sealgate egress", "vendor_name": "Sealgate"}},
        "actor": {"process": {"pid": ev.pid, "name": bytes(ev.comm).split(b"\0", 1)[0].decode(errors="replace"),
                              "user": {"uid": str(ev.uid)}}},
        "dst_endpoint": {"ip": ip, "port": ev.port or None},
        "connection_info": {"direction_id": 2, "protocol_num": ev.proto,
                            "protocol_name": PROTOCOL_NAMES.get(ev.proto, str(ev.proto)),
                            "protocol_ver_id": 6 if family == 6 else 4},
        "unmapped": {"agent_id": agent, "cgroup_id": ev.cgroup_id, "agent_cgroup_id": ev.agent_cgroup_id,
                     "hook": HOOKS.get(ev.hook, str(ev.hook)), "socket_type": ev.sock_type},
    }


# ---------------------------------------------------------------- enforcer


def _bpftool_cgroup_progs(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SealgateError(f"bpftool cgroup show {path}: {out.stderr.strip()}")
    return json.loads(out.stdout.strip() or "[]")


def _bpftool_detach(path: Path, attach_type: str, prog_id: int) -> None:
    subprocess.run(["bpftool", "cgroup", "detach", str(path), attach_type, "id", str(prog_id)],
                   capture_output=True, text=True, check=True)


class EgressEnforcer:
    """Loads the programs, keeps the pinned maps in sync with the config, reads events."""

    def __init__(self, config: EgressConfig, sink: Callable[[dict[str, Any]], None] | None = None, debug: int = 0):
        require()
        self.config = config
        self._sink = sink or self._file_sink(config.sink)
        self._debug = debug
        self.parent = parent_cgroup(config)
        self.bpf: Any = None
        self._fds: list[tuple[Any, Any]] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self.events_seen = 0
        self.drops_reported = 0
        self._names: dict[int, str] = {}  # map index -> agent id, for events; refreshed by sync_maps

    @staticmethod
    def _file_sink(target: str) -> Callable[[dict[str, Any]], None]:
        lock = threading.Lock()
        stream: TextIO
        if target == "-":
            import sys
            stream = sys.stdout
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            stream = open(target, "a", buffering=1)

        def write(doc: dict[str, Any]) -> None:
            with lock:
                stream.write(json.dumps(doc, separators=(",", ":")) + "\n")

        return write

    def program_text(self) -> str:
        return PROGRAM.read_text()

    def load(self) -> None:
        from bcc import BPF

        Path(self.config.pin_dir).mkdir(parents=True, exist_ok=True)
        cflags = [f"-I{EBPF_DIR}", f'-DPIN_DIR="{self.config.pin_dir}"']
        try:
            self.bpf = BPF(text=self.program_text(), cflags=cflags, debug=self._debug)
        except Exception as e:
            raise EgressUnavailable(f"cannot compile or load the programs (see the compiler or verifier output above): {e}") from e

    def attach(self) -> None:
        """Attaches this instance's programs, then detaches any older ones (no enforcement gap)."""
        from bcc import BPF, BPFAttachType

        self.parent.mkdir(exist_ok=True)
        before = _bpftool_cgroup_progs(self.parent)
        fd = os.open(self.parent, os.O_RDONLY)
        try:
            for fn_name, attach_name, prog_type in PROGRAMS:
                attach_type = getattr(BPFAttachType, attach_name)
                fn = self.bpf.load_func(fn_name, getattr(BPF, prog_type), attach_type=attach_type)
                BPF.attach_func(fn, fd, attach_type, BPF_F_ALLOW_MULTI)
                self._fds.append((fn, attach_type))
        finally:
            os.close(fd)
        for prog in before:  # the previous daemon's programs (legacy attachments outlive their loader)
            if str(prog.get("name", "")).startswith("sg_"):
                _bpftool_detach(self.parent, prog["attach_type"], prog["id"])

    def sync_maps(self) -> None:
        """Makes the pinned maps equal to the configuration (agents, allowlists); creates agent cgroups."""
        agents_map, allow4, allow6 = self.bpf["agents"], self.bpf["allow4"], self.bpf["allow6"]
        self._names = {a.index: a.id for a in self.config.agents}
        want_agents: dict[int, tuple[int, int]] = {}
        want4, want6 = set(), set()
        for a in self.config.agents:
            path = self.parent / a.id
            path.mkdir(exist_ok=True)
            want_agents[cgroup_id(path)] = (a.index, C["MODE_AUDIT"] if a.mode == "audit" else C["MODE_ENFORCE"])
            for r in a.allow:
                ip = ipaddress.ip_address(r.addr)
                key = (a.index, ip.packed, r.port, PROTOCOLS[r.proto])
                (want4 if ip.version == 4 else want6).add(key)
        for table, want in ((allow4, want4), (allow6, want6)):
            for k in list(table.keys()):
                addr = k.addr.to_bytes(4, "little") if table is allow4 else bytes(k.addr)
                if (k.agent_idx, addr, k.port, k.proto) not in want:
                    del table[k]
            for idx, addr, port, proto in want:
                k = table.Key()
                k.agent_idx, k.port, k.proto = idx, port, proto
                if table is allow4:
                    k.addr = int.from_bytes(addr, "little")  # network order bytes as the u32 the kernel sees
                else:
                    ctypes.memmove(k.addr, addr, 16)
                table[k] = ctypes.c_uint8(1)
        for k in list(agents_map.keys()):
            if k.value not in want_agents:
                del agents_map[k]
        for cg, (idx, mode) in want_agents.items():
            leaf = agents_map.Leaf()
            leaf.agent_idx, leaf.mode = idx, mode
            agents_map[ctypes.c_uint64(cg)] = leaf

    def drops(self) -> int:
        return int(self.bpf["drops"][ctypes.c_uint32(0)].value)

    def start_reader(self) -> None:
        table = self.bpf["events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            self.events_seen += 1
            self._sink(ocsf_event(table.event(data), self._names))

        table.open_ring_buffer(on_event)
        last_drops = self.drops()

        def loop() -> None:
            nonlocal last_drops
            while not self._stop.is_set():
                self.bpf.ring_buffer_poll(100)
                dropped = self.drops()
                if dropped != last_drops:  # never silent
                    self.drops_reported += dropped - last_drops
                    self._sink({"class_name": "Sealgate Egress Event Loss", "time": int(time.time() * 1000),
                                "dropped_events": dropped - last_drops, "dropped_total": dropped})
                    log.warning("egress ring buffer full: %d events dropped (total %d)", dropped - last_drops, dropped)
                    last_drops = dropped

        self._reader = threading.Thread(target=loop, name="sealgate-egress-events", daemon=True)
        self._reader.start()

    def close(self, detach: bool = False) -> None:
        """Stops reading. The programs stay attached unless detach=True (a restart keeps enforcing)."""
        self._stop.set()
        if self._reader:
            self._reader.join(timeout=5)
        if detach:
            from bcc import BPF

            fd = os.open(self.parent, os.O_RDONLY)
            try:
                for fn, attach_type in self._fds:
                    BPF.detach_func(fn, fd, attach_type)
            finally:
                os.close(fd)
        if self.bpf is not None:
            self.bpf.cleanup()


def uninstall(config: EgressConfig) -> list[str]:
    """Detaches every sealgate program from the parent cgroup and removes the pinned maps."""
    done = []
    parent = parent_cgroup(config)
    if parent.exists():
        for prog in _bpftool_cgroup_progs(parent):
            if str(prog.get("name", "")).startswith("sg_"):
                _bpftool_detach(parent, prog["attach_type"], prog["id"])
                done.append(f"detached {prog['attach_type']} id {prog['id']}")
    pins = Path(config.pin_dir)
    if pins.exists():
        for p in pins.iterdir():
            p.unlink()
            done.append(f"unpinned {p}")
        pins.rmdir()
    return done


# ---------------------------------------------------------------- launcher


def agent_environment(proxy_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if proxy_url:
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[k] = proxy_url
        env["NO_PROXY"] = env["no_proxy"] = ""
    return env


def spawn_agent(config: EgressConfig, agent_id: str, argv: list[str], user: str | None = None,
                proxy_url: str | None = None, **popen: Any) -> subprocess.Popen:
    """Starts argv inside the agent's cgroup: the child moves itself before exec, so every
    socket it ever creates belongs to the agent cgroup; then drops to `user` if given."""
    config.agent(agent_id)
    procs = agent_cgroup(config, agent_id) / "cgroup.procs"
    if not procs.exists():
        raise SealgateError(f"agent cgroup {procs.parent} does not exist: is `sealgate egress serve` running?")
    uid = gid = None
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid

    def enter() -> None:  # runs in the child between fork and exec
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    return subprocess.Popen(argv, preexec_fn=enter, env=agent_environment(proxy_url), **popen)


def connect_errno(addr: str, port: int, proto: str = "tcp") -> int:
    """0 if a connect/sendto got through the kernel's checks, else the errno (for probes and tests)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(2)
        try:
            if proto == "tcp":
                s.connect((addr, port))
            else:
                s.sendto(b"x", (addr, port))
            return 0
        except OSError as e:
            return e.errno or errno.EIO

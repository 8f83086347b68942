"""Loads the bcc programs, attaches them, syncs the pinned maps, reads the pinned ring buffer.

Layout under cgroup v2 (found from /proc/self/mounts):
    <cgroup2>/                     connect, sendmsg, bind, setsockopt programs (judge the calling task)
    <cgroup2>/sealgate/            sock_create and the packet checks (judge agent sockets)
    <cgroup2>/sealgate/<agent-id>/ one cgroup per agent; its id is registered in the `agents` map

Maps and the event ring buffer are pinned under bpffs (default /sys/fs/bpf/sealgate) so a
restarted daemon keeps the policy, drains the events that waited, and reports the drops
that happened while it was down (against the count it last reported, kept in the pinned
`reported` map). The daemon attaches its new programs before detaching the old ones, so
enforcement has no gap.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ext_authz.egress.audit import AuditReader, record_fields
from ext_authz.egress.config import AllowRule, EgressConfig, cgroup_id, parent_cgroup
from ext_authz.egress.events import LOSS_CLASS, loss_event, ocsf_event, seccomp_event
from ext_authz.egress.kernel import (
    AT_ROOT,
    BPF_F_ALLOW_MULTI,
    EBPF_DIR,
    PROGRAM,
    PROGRAMS,
    PROTOCOLS,
    C,
    EgressUnavailable,
    cgroup2_mount,
    require,
)
from ext_authz.egress.netns import ifindex_in, netns_cookie
from ext_authz.errors import SealgateError

log = logging.getLogger("sealgate.egress")


def _bpftool_cgroup_progs(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SealgateError(f"bpftool cgroup show {path}: {out.stderr.strip()}")
    return json.loads(out.stdout.strip() or "[]")


def _bpftool_detach(path: Path, attach_type: str, prog_id: int) -> None:
    subprocess.run(["bpftool", "cgroup", "detach", str(path), attach_type, "id", str(prog_id)],
                   capture_output=True, text=True, check=True)


def _json(argv: list[str]) -> Any:
    out = subprocess.run(argv, capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None


def _settings_parent(prog_id: int) -> int | None:
    """The agents' parent cgroup id a program judges for, read from its `settings` map (None: not one of ours)."""
    prog = _json(["bpftool", "-j", "prog", "show", "id", str(prog_id)]) or {}
    for map_id in prog.get("map_ids", []):
        info = _json(["bpftool", "-j", "map", "show", "id", str(map_id)]) or {}
        if info.get("name") != "settings":
            continue
        dump = _json(["bpftool", "-j", "map", "dump", "id", str(map_id)]) or []
        for entry in dump:
            value = entry.get("formatted", {}).get("value")
            if isinstance(value, dict) and "parent_cgroup_id" in value:
                return int(value["parent_cgroup_id"])
            raw = bytes(int(b, 16) for b in entry.get("value", [])[:8])
            return int.from_bytes(raw, "little") if len(raw) == 8 else None
    return None


def _ours(config: EgressConfig, at: Path) -> list[dict[str, Any]]:
    """Sealgate programs attached at `at` that judge for this configuration's parent cgroup (at the
    cgroup2 root, other configurations' programs sit side by side and are left alone)."""
    parent = parent_cgroup(config)
    progs = [p for p in _bpftool_cgroup_progs(at) if str(p.get("name", "")).startswith("sg_")]
    if at == parent:
        return progs  # the parent is this configuration's own
    if not parent.exists():
        return []
    mine = cgroup_id(parent)
    return [p for p in progs if _settings_parent(int(p["id"])) == mine]


def cgroup_level(path: Path) -> int:
    """Depth below the cgroup2 root (the root is level 0), as bpf_get_current_ancestor_cgroup_id counts."""
    root = cgroup2_mount()
    if root is None:
        raise EgressUnavailable("no cgroup2 mount")
    return len(path.relative_to(root).parts)


def rule_value(rule: AllowRule, default_cookie: int) -> tuple[int, int]:
    """(netns cookie, ifindex) that a rule holds in; ifindex 0 = any device, loopback addresses lo only."""
    cookie = netns_cookie(rule.netns) if rule.netns else default_cookie
    if rule.device is not None:
        return cookie, ifindex_in(rule.device, rule.netns)
    return cookie, C["LOOPBACK_IFINDEX"] if ipaddress.ip_address(rule.addr).is_loopback else 0


class EgressEnforcer:
    """Loads the programs, keeps the pinned maps in sync with the config, reads events."""

    def __init__(self, config: EgressConfig, sink: Callable[[dict[str, Any]], None] | None = None, debug: int = 0):
        require()
        self.config = config
        self._sink = sink or self._file_sink(config.sink)
        self._debug = debug
        self.parent = parent_cgroup(config)
        root = cgroup2_mount()
        assert root is not None  # require() checked it
        self.root = root
        self.bpf: Any = None
        self._fds: list[tuple[Any, Any, Path]] = []
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._audit: AuditReader | None = None
        self.events_seen = 0
        self.drops_reported = 0  # by this instance: the loss records it wrote
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
        from bcc import BPF, BPFAttachType, BPFProgType

        self.parent.mkdir(exist_ok=True)
        settings = self.bpf["settings"]
        leaf = settings.Leaf()
        leaf.parent_cgroup_id, leaf.parent_level = cgroup_id(self.parent), cgroup_level(self.parent)
        settings[ctypes.c_uint32(0)] = leaf
        before = {at: _ours(self.config, at) for at in (self.root, self.parent)}
        for fn_name, attach_name, prog_type, where in PROGRAMS:
            at = self.root if where == AT_ROOT else self.parent
            attach_type = getattr(BPFAttachType, attach_name)
            fn = self.bpf.load_func(fn_name, getattr(BPFProgType, prog_type), attach_type=attach_type)
            fd = os.open(at, os.O_RDONLY)
            try:
                BPF.attach_func(fn, fd, attach_type, BPF_F_ALLOW_MULTI)
            finally:
                os.close(fd)
            self._fds.append((fn, attach_type, at))
        for at, progs in before.items():  # the previous daemon's (legacy attachments outlive their loader)
            for prog in progs:
                _bpftool_detach(at, prog["attach_type"], prog["id"])

    def sync_maps(self) -> None:
        """Makes the pinned maps equal to the configuration (agents, allowlists, inbound ports); creates
        agent cgroups. Every rule is resolved (netns cookie, device) before any map changes."""
        agents_map, allow4, allow6, inbound = self.bpf["agents"], self.bpf["allow4"], self.bpf["allow6"], self.bpf["inbound"]
        self._names = {a.index: a.id for a in self.config.agents}
        own_cookie = netns_cookie(None)
        want_agents: dict[int, tuple[int, int]] = {}
        want4: dict[Any, tuple[int, int]] = {}
        want6: dict[Any, tuple[int, int]] = {}
        want_in: set[tuple[int, int, int]] = set()
        for a in self.config.agents:
            for r in a.allow:
                ip = ipaddress.ip_address(r.addr)
                key = (a.index, ip.packed, r.port, PROTOCOLS[r.proto])
                (want4 if ip.version == 4 else want6)[key] = rule_value(r, own_cookie)
            want_in.update((a.index, r.port, PROTOCOLS[r.proto]) for r in a.inbound)
        for a in self.config.agents:
            path = self.parent / a.id
            path.mkdir(exist_ok=True)
            want_agents[cgroup_id(path)] = (a.index, C["MODE_AUDIT"] if a.mode == "audit" else C["MODE_ENFORCE"])
        for table, want in ((allow4, want4), (allow6, want6)):
            for k in list(table.keys()):
                addr = k.addr.to_bytes(4, "little") if table is allow4 else bytes(k.addr)
                if (k.agent_idx, addr, k.port, k.proto) not in want:
                    del table[k]
            for (idx, addr, port, proto), (cookie, ifindex) in want.items():
                k = table.Key()
                k.agent_idx, k.port, k.proto = idx, port, proto
                if table is allow4:
                    k.addr = int.from_bytes(addr, "little")  # network order bytes as the u32 the kernel sees
                else:
                    ctypes.memmove(k.addr, addr, 16)
                v = table.Leaf()
                v.netns_cookie, v.ifindex = cookie, ifindex
                table[k] = v
        for k in list(inbound.keys()):
            if (k.agent_idx, k.port, k.proto) not in want_in:
                del inbound[k]
        for idx, port, proto in want_in:
            k = inbound.Key()
            k.agent_idx, k.port, k.proto = idx, port, proto
            inbound[k] = ctypes.c_uint8(1)
        for k in list(agents_map.keys()):
            if k.value not in want_agents:
                del agents_map[k]
        for cg, (idx, mode) in want_agents.items():
            leaf = agents_map.Leaf()
            leaf.agent_idx, leaf.mode = idx, mode
            agents_map[ctypes.c_uint64(cg)] = leaf

    def drops(self) -> int:
        return int(self.bpf["drops"][ctypes.c_uint32(0)].value)

    def last_reported_drops(self) -> int:
        return int(self.bpf["reported"][ctypes.c_uint32(0)].value)

    def report_drops(self) -> int:
        """Writes a loss record for drops not yet reported (also those of a stopped or killed
        predecessor), then records the count as reported. Returns the drops it reported."""
        dropped, reported = self.drops(), self.last_reported_drops()
        if dropped <= reported:
            return 0
        self._sink(loss_event(reported, dropped))  # never silent; the range makes a repeat after a crash harmless
        self.bpf["reported"][ctypes.c_uint32(0)] = ctypes.c_uint64(dropped)
        log.warning("egress ring buffer was full: events %d-%d dropped", reported, dropped)
        self.drops_reported += dropped - reported
        return dropped - reported

    def start_reader(self) -> None:
        table = self.bpf["events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            self.events_seen += 1
            self._sink(ocsf_event(table.event(data), self._names))

        table.open_ring_buffer(on_event)
        self.report_drops()  # what happened while no daemon read

        def loop() -> None:
            while not self._stop.is_set():
                self.bpf.ring_buffer_poll(100)
                self.report_drops()

        self._reader = threading.Thread(target=loop, name="sealgate-egress-events", daemon=True)
        self._reader.start()
        try:
            self._audit = AuditReader(str(self.parent.relative_to(self.root)),
                                      lambda rec, agent: self._sink(seccomp_event(record_fields(rec), agent)),
                                      lambda: self._names,
                                      lambda why: self._sink({"class_name": LOSS_CLASS, "time": int(time.time() * 1000),
                                                              "source": "audit", "dropped_events": None, "error": why}))
            self._audit.start()
        except OSError as e:  # no audit in this kernel: the filter still refuses, unreported
            self._audit = None
            log.warning("egress: cannot read the audit multicast group (%s): seccomp refusals go unreported", e)

    def close(self, detach: bool = False) -> None:
        """Stops reading. The programs stay attached unless detach=True (a restart keeps enforcing)."""
        self._stop.set()
        if self._reader:
            self._reader.join(timeout=5)
        if self._audit:
            self._audit.close()
        if detach:
            from bcc import BPF

            for fn, attach_type, at in self._fds:
                fd = os.open(at, os.O_RDONLY)
                try:
                    BPF.detach_func(fn, fd, attach_type)
                finally:
                    os.close(fd)
        if self.bpf is not None:
            self.bpf.cleanup()


def uninstall(config: EgressConfig) -> list[str]:
    """Detaches every sealgate program from the parent cgroup and removes the pinned maps."""
    done = []
    parent, root = parent_cgroup(config), cgroup2_mount()
    for at in (root, parent):
        if at is not None and at.exists():
            for prog in _ours(config, at):
                _bpftool_detach(at, prog["attach_type"], prog["id"])
                done.append(f"detached {prog['attach_type']} id {prog['id']} from {at}")
    pins = Path(config.pin_dir)
    if pins.exists():
        for p in pins.iterdir():
            p.unlink()
            done.append(f"unpinned {p}")
        pins.rmdir()
    return done


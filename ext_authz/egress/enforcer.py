"""Loads the bcc programs, attaches them to the agents' parent cgroup, syncs the pinned maps.

Layout under cgroup v2 (found from /proc/self/mounts):
    <cgroup2>/sealgate/            programs attached here (BPF_F_ALLOW_MULTI)
    <cgroup2>/sealgate/<agent-id>/ one cgroup per agent; its id is registered in the `agents` map

Policy maps are pinned under bpffs (default /sys/fs/bpf/sealgate) so a restarted
daemon keeps them; the daemon attaches its new programs before detaching the old
ones, so enforcement has no gap.
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

from ext_authz.egress.config import EgressConfig, cgroup_id, parent_cgroup
from ext_authz.egress.events import ocsf_event
from ext_authz.egress.kernel import (
    BPF_F_ALLOW_MULTI,
    EBPF_DIR,
    PROGRAM,
    PROGRAMS,
    PROTOCOLS,
    C,
    EgressUnavailable,
    require,
)
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
        want4: set[Any] = set()
        want6: set[Any] = set()
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


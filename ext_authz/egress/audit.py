"""Refusals by the agents' seccomp filter, read from the kernel's audit multicast group.

The filter (`seccomp.py`) is installed with SECCOMP_FILTER_FLAG_LOG, so each refused call
makes an AUDIT_SECCOMP record. Any process with CAP_AUDIT_READ may listen to the read-only
multicast group next to (or without) auditd. The launcher sets each agent's audit login uid
to the agent's map index (an unprivileged agent cannot change it; children inherit it), so a
record names its agent even after the process exited; failing that, the pid's cgroup does.

Pure: `parse_record()` and `agent_of()`; I/O: `AuditReader`.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ext_authz.egress.seccomp import SECCOMP_RET_ERRNO, SYSCALL_NAMES

log = logging.getLogger("sealgate.egress")
NETLINK_AUDIT, AUDIT_NLGRP_READLOG, AUDIT_SECCOMP = 9, 1, 1326
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def parse_record(text: str) -> dict[str, str]:
    """`key=value` pairs of an audit record (quotes stripped); the `audit(time:serial)` stamp as `stamp`."""
    out = {k: v.strip('"') for k, v in _FIELD.findall(text)}
    m = re.match(r"audit\(([\d.]+):(\d+)\)", text)
    if m:
        out["stamp"], out["serial"] = m.group(1), m.group(2)
    return out


def is_filter_refusal(rec: dict[str, str]) -> bool:
    """A refusal by the agent filter: ERRNO action on one of the calls it refuses."""
    try:
        return int(rec.get("code", "0"), 16) == SECCOMP_RET_ERRNO and int(rec.get("syscall", "-1")) in SYSCALL_NAMES
    except ValueError:
        return False


def agent_of(cgroup_file_text: str, parent_rel: str) -> str | None:
    """The agent id (first path component below the agents' parent) in a /proc/PID/cgroup text, if any."""
    for line in cgroup_file_text.splitlines():
        if line.startswith("0::"):
            path = line[3:].strip().strip("/")
            prefix = parent_rel.strip("/") + "/"
            if path.startswith(prefix):
                return path[len(prefix):].split("/", 1)[0]
    return None


class AuditReader:
    """Calls on_refusal(record, agent_id) for each seccomp refusal by a task of an agent cgroup."""

    def __init__(self, parent_rel: str, on_refusal: Callable[[dict[str, str], str], None],
                 agents_by_index: Callable[[], dict[int, str]], on_loss: Callable[[str], None] | None = None):
        self.parent_rel = parent_rel
        self.on_loss = on_loss
        self.agents_by_index = agents_by_index
        self.on_refusal = on_refusal
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._loop, name="sealgate-egress-audit", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as e:  # ENOBUFS: records lost to a full socket buffer; never silent
                log.warning("egress audit reader: %s", e)
                if self.on_loss:
                    self.on_loss(str(e))
                continue
            self.handle(data)

    def handle(self, data: bytes) -> None:
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if kind == AUDIT_SECCOMP:
                rec = parse_record(data[off + 16:off + length].decode(errors="replace").rstrip("\0"))
                if is_filter_refusal(rec):
                    agent = self._agent(rec)
                    if agent is not None:
                        self.on_refusal(rec, agent)
            off += (length + 3) & ~3

    def _agent(self, rec: dict[str, str]) -> str | None:
        try:
            by_auid = self.agents_by_index().get(int(rec.get("auid", "-1")))
        except ValueError:
            by_auid = None
        if by_auid is not None:
            return by_auid
        try:
            return agent_of(Path(f"/proc/{int(rec.get('pid', ''))}/cgroup").read_text(), self.parent_rel)
        except (OSError, ValueError):
            return None  # gone, and no agent login uid: not claimed for an agent

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()


def record_fields(rec: dict[str, str]) -> dict[str, Any]:
    nr = int(rec.get("syscall", "-1"))
    return {"pid": int(rec.get("pid", "0") or 0), "uid": rec.get("uid"), "comm": rec.get("comm", ""),
            "syscall": SYSCALL_NAMES.get(nr, str(nr)), "syscall_nr": nr, "exe": rec.get("exe")}

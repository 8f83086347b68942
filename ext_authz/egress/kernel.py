"""What the kernel side needs: the BPF sources (package data), the constants of the shared header,
and the environment checks that say exactly why eBPF cannot run here."""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import socket
from pathlib import Path

from ext_authz.errors import SealgateError

# the C sources live in ebpf/ at the repository root and ship inside the package as egress/bpf/
EBPF_DIR = Path(str(importlib.resources.files("ext_authz.egress") / "bpf"))
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
         C["HOOK_SENDMSG6"]: "sendmsg6", C["HOOK_SOCK_CREATE"]: "sock_create", C["HOOK_SKB_EGRESS"]: "skb_egress",
         C["HOOK_SKB_INGRESS"]: "skb_ingress", C["HOOK_BIND4"]: "bind4", C["HOOK_BIND6"]: "bind6",
         C["HOOK_SETSOCKOPT"]: "setsockopt"}

# Where a program is attached: at the cgroup2 root the kernel runs it for every socket and the
# program judges the calling task (sockets the agent did not create are judged too); at the
# agents' parent it runs for sockets created in agent cgroups (packets are judged by their socket).
AT_ROOT, AT_PARENT = "root", "parent"
# (program function, attach type name in bcc.BPFAttachType, bcc program type name, where)
PROGRAMS = (
    ("sg_connect4", "CGROUP_INET4_CONNECT", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_connect6", "CGROUP_INET6_CONNECT", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_sendmsg4", "CGROUP_UDP4_SENDMSG", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_sendmsg6", "CGROUP_UDP6_SENDMSG", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_bind4", "CGROUP_INET4_BIND", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_bind6", "CGROUP_INET6_BIND", "CGROUP_SOCK_ADDR", AT_ROOT),
    ("sg_setsockopt", "CGROUP_SETSOCKOPT", "CGROUP_SOCKOPT", AT_ROOT),
    ("sg_sock_create", "CGROUP_INET_SOCK_CREATE", "CGROUP_SOCK", AT_PARENT),
    ("sg_skb_egress", "CGROUP_INET_EGRESS", "CGROUP_SKB", AT_PARENT),
    ("sg_skb_ingress", "CGROUP_INET_INGRESS", "CGROUP_SKB", AT_PARENT),
)


def cgroup2_mount(mounts: str | None = None) -> Path | None:
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def bpffs_mounted(mounts: str | None = None) -> bool:
    text = mounts if mounts is not None else Path("/proc/self/mounts").read_text()
    return any(len(p) >= 3 and p[1] == "/sys/fs/bpf" and p[2] == "bpf" for p in (line.split() for line in text.splitlines()))


def probe() -> str | None:
    """None when eBPF enforcement can run here, else the precise reason it cannot."""
    missing = [p.name for p in (PROGRAM, HEADER) if not p.is_file()]
    if missing:
        return f"BPF sources {missing} missing from the installed package ({EBPF_DIR})"
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


"""Whether BPF LSM programs can run on this machine, and if not exactly why.

The cgroup programs judge connect/sendmsg/bind/setsockopt in the caller's context, but a
write on an already-connected socket the agent did not create (passed over SCM_RIGHTS, or
taken before the seccomp filter) passes no cgroup hook. The BPF LSM's socket_sendmsg hook
would judge it; `status()` says whether this kernel lets us load such a program, by
loading a two-instruction BPF_PROG_TYPE_LSM program for `socket_sendmsg` and closing it.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

from ext_authz.egress.btf import BtfError, load

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_LSM = 29
BPF_LSM_MAC = 27
LSM_LIST = Path("/sys/kernel/security/lsm")
HOOK = "bpf_lsm_socket_sendmsg"


def _load_trivial(btf_id: int) -> int:
    """0 if the kernel accepts an LSM program on the hook, else the errno of BPF_PROG_LOAD."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
    code, lic = ctypes.create_string_buffer(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license ... expected_attach_type @68, attach_btf_id @108
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_LSM, 2, ctypes.addressof(code), ctypes.addressof(lic))
    struct.pack_into("<I", attr, 68, BPF_LSM_MAC)
    struct.pack_into("<I", attr, 108, btf_id)
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, buf, len(attr))
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def status() -> str | None:
    """None when BPF LSM programs load here, else the precise reason they do not."""
    if not LSM_LIST.exists():
        return f"{LSM_LIST} is missing (securityfs not mounted: mount -t securityfs securityfs /sys/kernel/security)"
    active = LSM_LIST.read_text().strip().split(",")
    if "bpf" not in active:
        return f"the BPF LSM is not active (active LSMs: {','.join(active)}; boot with lsm=...,bpf)"
    if os.geteuid() != 0:
        return "not root: loading LSM programs needs CAP_BPF and CAP_PERFMON"
    try:
        btf_id = load().funcs.get(HOOK)
    except BtfError as e:
        return str(e)
    if btf_id is None:
        return f"{HOOK} not in the kernel's BTF"
    err = _load_trivial(btf_id)
    if err:
        return (f"the BPF LSM is active but this kernel refuses LSM programs: BPF_PROG_LOAD of a 2-instruction "
                f"BPF_PROG_TYPE_LSM program for socket_sendmsg failed with {os.strerror(err)} (errno {err})")
    return None

"""The seccomp filter `sealgate agent run` installs in every agent before exec.

It closes, for the agent and everything it starts, the ways to reach a socket or a network
the cgroup programs cannot judge: taking another process's fds (pidfd_getfd), driving
another process (ptrace, process_vm_readv/writev), socket families that leave the host
without the inet hooks (AF_VSOCK, AF_PACKET, ...: only AF_UNIX, AF_INET, AF_INET6 and
AF_NETLINK are allowed), and io_uring (its IORING_OP_SOCKET creates sockets without the
socket(2) syscall this filter sees). Refused calls fail with EPERM and, as the filter is
installed with SECCOMP_FILTER_FLAG_LOG, the kernel writes an audit record (type 1326) for
each; the egress daemon reads those from the audit multicast group (`audit.py`) and reports
them like the cgroup programs' refusals. A filter cannot be removed by the process it
confines (no_new_privs is set first, as the kernel requires for unprivileged filters).

Pure: `filter_program()` builds classic BPF; `install()` is the only I/O.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
# x86_64 syscall numbers
SYSCALLS_REFUSED = {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "io_uring_setup": 425,
                    "pidfd_getfd": 438}
SYS_SOCKET, SYS_SOCKETPAIR = 41, 53
SYSCALL_NAMES = {**{nr: name for name, nr in SYSCALLS_REFUSED.items()}, SYS_SOCKET: "socket", SYS_SOCKETPAIR: "socketpair"}
FAMILIES_ALLOWED = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG = 317, 1, 2
# classic BPF opcodes
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
X32_SYSCALL_BIT = 0x40000000
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data; args[0] low 32 bits on little-endian


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def filter_program() -> bytes:
    """The filter as struct sock_filter[]: refuse the calls above with EPERM, allow the rest."""
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    prog = [_insn(LD_W_ABS, 0, 0, OFF_ARCH),
            _insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            _insn(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI (x32, i386) could dodge the numbers
            _insn(LD_W_ABS, 0, 0, OFF_NR),
            _insn(JGE_K, 0, 1, X32_SYSCALL_BIT),  # x32 numbers would dodge the ones below
            _insn(RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    for nr in sorted(SYSCALLS_REFUSED.values()):
        prog += [_insn(JEQ_K, 0, 1, nr), _insn(RET_K, 0, 0, eperm)]
    # socket / socketpair: judge the family (args[0])
    n_fam = len(FAMILIES_ALLOWED)
    prog += [_insn(JEQ_K, 1, 0, SYS_SOCKET), _insn(JEQ_K, 0, n_fam + 2, SYS_SOCKETPAIR),
             _insn(LD_W_ABS, 0, 0, OFF_ARG0)]
    for i, fam in enumerate(FAMILIES_ALLOWED):
        prog.append(_insn(JEQ_K, n_fam - i, 0, fam))  # to the ALLOW after the EPERM
    prog += [_insn(RET_K, 0, 0, eperm), _insn(RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Installs the filter on the calling process (call in the child, right before exec)."""
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOSYS, "the agent seccomp filter knows x86_64 syscall numbers only")
    code = filter_program()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, ctypes.byref(prog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")

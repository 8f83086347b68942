"""Starts agent processes already inside their cgroup, with the mesh proxy in their environment.

What the agent gets: fds 0-2 only (every other inherited fd is closed), none of them a socket
unless the caller says so (a socket predating the move into the cgroup, or one from another
process, is a door the cgroup programs judge only on connect/sendmsg), a non-root uid unless
the caller says so (root can leave its cgroup, open AF_PACKET sockets, setns), and the
seccomp filter of `ext_authz.egress.seccomp`."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from typing import Any

from ext_authz.egress import seccomp
from ext_authz.egress.config import EgressConfig, agent_cgroup
from ext_authz.errors import SealgateError


class AgentLaunchRefused(SealgateError):
    """`sealgate agent run` will not start the agent as asked; the message says why and which flag overrides it."""


def _stdio_fd(which: int, given: Any) -> int | None:
    """The fd the child will have as `which` (0-2), or None when subprocess makes a new pipe or /dev/null."""
    if given is None:
        return which
    if given in (subprocess.PIPE, subprocess.DEVNULL):
        return None
    if given == subprocess.STDOUT:
        return None  # same as stdout, checked there
    if isinstance(given, int):
        return given
    fileno = getattr(given, "fileno", None)
    return fileno() if fileno else None


def socket_stdio(popen: dict[str, Any]) -> list[int]:
    """Which of fds 0-2 the agent would get as a socket."""
    out = []
    for which, key in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        fd = _stdio_fd(which, popen.get(key))
        if fd is None:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                out.append(which)
        except OSError:
            continue  # closed: the child gets nothing there
    return out


def agent_environment(proxy_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if proxy_url:
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[k] = proxy_url
        env["NO_PROXY"] = env["no_proxy"] = ""
    return env


def spawn_agent(config: EgressConfig, agent_id: str, argv: list[str], user: str | None = None,
                proxy_url: str | None = None, allow_root: bool = False, allow_socket_stdio: bool = False,
                confine: bool = True, **popen: Any) -> subprocess.Popen:
    """Starts argv inside the agent's cgroup: the child moves itself before exec, so every
    socket it ever creates belongs to the agent cgroup; then drops to `user` if given and
    installs the seccomp filter (confine=False leaves it out: tests of the kernel programs alone).
    Refuses (AgentLaunchRefused) an agent that would run as root or get a socket as fd 0-2,
    unless allowed."""
    config.agent(agent_id)
    procs = agent_cgroup(config, agent_id) / "cgroup.procs"
    if not procs.exists():
        raise SealgateError(f"agent cgroup {procs.parent} does not exist: is `sealgate egress serve` running?")
    if popen.pop("pass_fds", None) or popen.pop("close_fds", True) is False:
        raise AgentLaunchRefused("an agent inherits fds 0-2 only (pass_fds / close_fds=False refused)")
    uid = gid = None
    if user is not None:
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError as e:
            raise AgentLaunchRefused(f"no user {user!r}") from e
        uid, gid = entry.pw_uid, entry.pw_gid
    if (uid if uid is not None else os.geteuid()) == 0 and not allow_root:
        raise AgentLaunchRefused("refusing to run an agent as root: root can leave its cgroup, open AF_PACKET "
                                 "sockets and enter other network namespaces; give --user (its own uid per agent), "
                                 "or --allow-root to accept that")
    on_socket = socket_stdio(popen)
    if on_socket and not allow_socket_stdio:
        raise AgentLaunchRefused(f"refusing to start an agent whose fd {on_socket} is a socket (it predates the "
                                 f"agent's cgroup); redirect it, or --allow-socket-stdio to accept that")

    index = config.agent(agent_id).index

    def enter() -> None:  # runs in the child between fork and exec
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
        try:  # names the agent in the audit records of its seccomp refusals (needs CAP_AUDIT_CONTROL, so: now)
            with open("/proc/self/loginuid", "w") as f:
                f.write(str(index))
        except OSError:
            pass  # immutable login uids or no audit: the daemon falls back to the pid's cgroup
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        if confine:
            seccomp.install()  # last: it refuses ptrace & co., not setuid

    return subprocess.Popen(argv, preexec_fn=enter, env=agent_environment(proxy_url), close_fds=True, **popen)



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


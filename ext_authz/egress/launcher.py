"""Starts agent processes already inside their cgroup, with the mesh proxy in their environment."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from typing import Any

from ext_authz.egress.config import EgressConfig, agent_cgroup
from ext_authz.errors import SealgateError


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


"""`sealgate egress` (kernel enforcement daemon) and `sealgate agent run` (start an agent inside its cgroup)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from ext_authz.cli import agent_identity
from ext_authz.cli.common import command, group, stop_on_signal
from ext_authz.errors import SealgateError, UsageError


def register(sub: Any) -> None:
    egress = group(sub, "egress", "kernel egress enforcement for agent cgroups (bcc eBPF; root)")
    p = command(egress, "serve", "load, attach and keep the programs in sync with the config (SIGHUP reloads)",
                "sealgate egress serve --config deploy/egress.yaml")
    p.add_argument("--config", required=True, metavar="FILE", help="egress config: agents and allowlists (YAML)")
    p.add_argument("--print-program", action="store_true", help="print the BPF C program before loading it")
    p.add_argument("--debug", type=int, default=0, metavar="FLAGS", help="bcc debug flags (4 prints the verifier log)")
    p.set_defaults(func=cmd_egress_serve)
    p = command(egress, "uninstall", "detach every sealgate program and remove the pinned maps",
                "sealgate egress uninstall --config deploy/egress.yaml")
    p.add_argument("--config", required=True, metavar="FILE", help="the egress config the daemon ran with")
    p.set_defaults(func=cmd_egress_uninstall)
    p = command(egress, "probe", "say whether eBPF enforcement (and the BPF LSM) can run here, and if not, exactly why (exit 1)",
                "sealgate egress probe")
    p.set_defaults(func=cmd_egress_probe)

    agent = group(sub, "agent", "agent processes")
    p = command(agent, "run", "run a command inside the agent's cgroup, its egress only through the mesh",
                "sealgate agent run --agent procurement-01 --config deploy/egress.yaml --user agent \\\n"
                "    --proxy http://127.0.0.1:15001 -- python agent.py")
    p.add_argument("--agent", required=True, help="the agent id in the egress config")
    p.add_argument("--config", required=True, metavar="FILE", help="the egress config (names the agent cgroups)")
    p.add_argument("--user", help="run as this user: one uid per agent (ptrace and pidfd_getfd need the same uid)")
    p.add_argument("--allow-root", action="store_true",
                   help="let the agent run as root (it can then leave its cgroup, open AF_PACKET sockets, setns)")
    p.add_argument("--allow-socket-stdio", action="store_true",
                   help="start even if stdin/stdout/stderr is a socket (it predates the agent's cgroup)")
    p.add_argument("--proxy", metavar="URL", help="HTTP(S)_PROXY for the agent: its Envoy sidecar")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command to run")
    p.set_defaults(func=cmd_agent_run)
    agent_identity.register(agent)  # publish / resolve in an ERC-8004 Identity Registry


def cmd_egress_serve(args: argparse.Namespace) -> int:
    from ext_authz.egress.config import EgressConfig
    from ext_authz.egress.enforcer import EgressEnforcer

    config = EgressConfig.load(args.config)
    enforcer = EgressEnforcer(config, debug=args.debug)
    if args.print_program:
        print(enforcer.program_text())
    enforcer.load()
    enforcer.attach()
    enforcer.sync_maps()
    enforcer.start_reader()
    log = logging.getLogger("sealgate.egress")
    from ext_authz.egress.lsm import status

    lsm = status()
    if lsm is not None:
        log.warning("BPF LSM not usable (%s): writes on connected sockets an agent did not create are not judged "
                    "(docs/egress.md)", lsm)
    log.info("egress ready: %d agents, programs attached at %s", len(config.agents), enforcer.parent)
    stop = stop_on_signal()
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    while not stop.wait(0.2):
        if reload.is_set():
            reload.clear()
            try:
                enforcer.config = EgressConfig.load(args.config)
                enforcer.sync_maps()
                log.info("egress maps synced from %s", args.config)
            except SealgateError as e:  # keep enforcing the last good policy
                log.error("egress reload rejected, keeping the current maps: %s", e)
    enforcer.close(detach=False)  # programs and pinned maps stay: enforcement outlives the daemon
    log.info("egress daemon stopped; programs remain attached (sealgate egress uninstall removes them)")
    return 0


def cmd_egress_uninstall(args: argparse.Namespace) -> int:
    from ext_authz.egress.config import EgressConfig
    from ext_authz.egress.enforcer import uninstall
    from ext_authz.egress.kernel import require

    require()
    for line in uninstall(EgressConfig.load(args.config)):
        print(line)
    return 0


def cmd_egress_probe(args: argparse.Namespace) -> int:
    from ext_authz.egress.kernel import probe
    from ext_authz.egress.lsm import status

    reason = probe()
    print("eBPF egress enforcement: available" if reason is None else f"eBPF egress enforcement unavailable: {reason}")
    lsm = status()
    print("BPF LSM: active, programs load" if lsm is None else
          f"BPF LSM: not usable: {lsm}\n  not covered without it: writes on an already-connected socket the agent did "
          f"not create (SCM_RIGHTS from a cooperating process; a socket taken with the seccomp filter off); see docs/egress.md")
    return 0 if reason is None else 1


def cmd_agent_run(args: argparse.Namespace) -> int:
    from ext_authz.egress.config import EgressConfig
    from ext_authz.egress.launcher import spawn_agent

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise UsageError("agent run: give the command after --")
    proc = spawn_agent(EgressConfig.load(args.config), args.agent, argv, user=args.user, proxy_url=args.proxy,
                       allow_root=args.allow_root, allow_socket_stdio=args.allow_socket_stdio)
    return proc.wait()



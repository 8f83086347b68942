#!/usr/bin/env python3
"""Egress enforcement benchmark (root): the cost of the programs per allowed connect and per
packet, today's programs (git BASELINE) side by side with the current ones, and event
throughput at a fixed rate of denied sendto()s.

    .venv/bin/python bench/egress_bench.py [--calls 200000] [--packets 100000] [--rounds 5] [--rate 20000] [--seconds 5]

One run, one binary (bench/connect_loop.c), interleaved rounds. Each round measures, in turn:
  - none:      a cgroup outside every attach point, the current root programs detached;
  - before:    an agent cgroup of the BASELINE programs (connect4/6, sendmsg4/6, sock_create at its parent);
  - now:       an agent cgroup of the current programs (the root ones attached, the packet checks at its parent);
  - bystander: the cgroup of `none` with the current root programs attached (what every other process on
               the machine pays for the programs that judge the calling task).
`connect`: connect() of a UDP socket to an allowlisted 127.0.0.1 port (runs the connect4 hook, no handshake).
`packet`: send()+recv() of a 64-byte datagram between two sockets of the same cgroup over 127.0.0.1 (the
egress and the ingress packet check each run once per datagram).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ext_authz.egress.config import EgressConfig, agent_cgroup, parent_cgroup  # noqa: E402
from ext_authz.egress.enforcer import EgressEnforcer, uninstall  # noqa: E402
from ext_authz.egress.kernel import AT_ROOT, BPF_F_ALLOW_MULTI, PROGRAMS, cgroup2_mount, require  # noqa: E402

HERE = Path(__file__).resolve().parent
BASELINE = "a015fc5"  # the programs before the packet checks and the root-attached programs (issue 13)
BASELINE_PROGRAMS = (("sg_connect4", "CGROUP_INET4_CONNECT", "CGROUP_SOCK_ADDR"),
                     ("sg_connect6", "CGROUP_INET6_CONNECT", "CGROUP_SOCK_ADDR"),
                     ("sg_sendmsg4", "CGROUP_UDP4_SENDMSG", "CGROUP_SOCK_ADDR"),
                     ("sg_sendmsg6", "CGROUP_UDP6_SENDMSG", "CGROUP_SOCK_ADDR"),
                     ("sg_sock_create", "CGROUP_INET_SOCK_CREATE", "CGROUP_SOCK"))


def run_in(cgroup: Path, argv: list[str]) -> str:
    def enter() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(argv, preexec_fn=enter, capture_output=True, text=True, check=True).stdout


class Baseline:
    """The BASELINE programs from git, loaded with bcc and attached at their own parent cgroup."""

    def __init__(self, workdir: Path, tag: str, port: int):
        from bcc import BPF

        src = workdir / "before"
        src.mkdir()
        for name in ("egress.bpf.c", "egress.h"):
            text = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{BASELINE}:ebpf/{name}"], capture_output=True,
                                  text=True, check=True).stdout
            (src / name).write_text(text)
        self.pins = Path(f"/sys/fs/bpf/{tag}-before")
        self.pins.mkdir()
        self.parent = cgroup2_mount() / f"{tag}-before"
        self.agent = self.parent / "bench"
        self.agent.mkdir(parents=True)
        self.bpf = BPF(text=(src / "egress.bpf.c").read_text(), cflags=[f"-I{src}", f'-DPIN_DIR="{self.pins}"'])
        agents = self.bpf["agents"]
        leaf = agents.Leaf()
        leaf.agent_idx, leaf.mode = 7, 0
        import ctypes

        agents[ctypes.c_uint64(os.stat(self.agent).st_ino)] = leaf
        allow = self.bpf["allow4"]
        k = allow.Key()
        k.agent_idx, k.addr, k.port, k.proto = 7, int.from_bytes(bytes([127, 0, 0, 1]), "little"), port, 17
        allow[k] = ctypes.c_uint8(1)
        self.fns = []
        fd = os.open(self.parent, os.O_RDONLY)
        try:
            from bcc import BPFAttachType, BPFProgType

            for fn_name, attach_name, prog_type in BASELINE_PROGRAMS:
                at = getattr(BPFAttachType, attach_name)
                fn = self.bpf.load_func(fn_name, getattr(BPFProgType, prog_type), attach_type=at)
                BPF.attach_func(fn, fd, at, BPF_F_ALLOW_MULTI)
                self.fns.append((fn, at))
        finally:
            os.close(fd)

    def close(self) -> None:
        from bcc import BPF

        fd = os.open(self.parent, os.O_RDONLY)
        try:
            for fn, at in self.fns:
                BPF.detach_func(fn, fd, at)
        finally:
            os.close(fd)
        self.bpf.cleanup()
        for p in self.pins.iterdir():
            p.unlink()
        self.pins.rmdir()
        self.agent.rmdir()
        self.parent.rmdir()


def root_programs(enforcer: EgressEnforcer, attach: bool) -> None:
    """Attaches or detaches the current programs that sit at the cgroup2 root."""
    from bcc import BPF

    fd = os.open(enforcer.root, os.O_RDONLY)
    try:
        for fn, attach_type, at in enforcer._fds:
            if at == enforcer.root:
                (BPF.attach_func(fn, fd, attach_type, BPF_F_ALLOW_MULTI) if attach else BPF.detach_func(fn, fd, attach_type))
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "egress.json"))
    args = ap.parse_args()
    require()
    assert sum(1 for p in PROGRAMS if p[3] == AT_ROOT) == 7

    tag = f"sg-bench-{os.getpid()}"
    port = 15999
    config = EgressConfig.from_dict({"pin_dir": f"/sys/fs/bpf/{tag}", "cgroup_parent": tag, "agents": [
        {"id": "bench", "allow": [{"addr": "127.0.0.1", "port": port, "proto": "udp"}],
         "inbound": [{"port": port, "proto": "udp"}]}]})
    events = 0

    def count(_doc: dict) -> None:
        nonlocal events
        events += 1

    kinds = ("connect", "packet")
    rows = ("none", "before", "now", "bystander")
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {(k, r): [] for k in kinds for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "connect_loop"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "connect_loop.c")], check=True)
        outside = cgroup2_mount() / f"{tag}-none"
        outside.mkdir()
        enforcer = EgressEnforcer(config, sink=count)
        before = None
        try:
            enforcer.load()
            enforcer.attach()
            enforcer.sync_maps()
            before = Baseline(Path(tmp), tag, port)
            agent_cg = agent_cgroup(config, "bench")
            root_attached = True
            for _ in range(args.rounds):
                for row, cg, want_root in (("none", outside, False), ("before", before.agent, False), ("now", agent_cg, True),
                                           ("bystander", outside, True)):
                    if want_root != root_attached:
                        root_programs(enforcer, want_root)
                        root_attached = want_root
                    for kind, argv in (("connect", [str(binary), "time", str(args.calls), str(port)]),
                                       ("packet", [str(binary), "packets", str(args.packets), str(port)])):
                        p50, mean = run_in(cg, argv).split()
                        samples[(kind, row)].append((float(p50), float(mean)))
            if not root_attached:
                root_programs(enforcer, True)
            enforcer.start_reader()
            drops_before = enforcer.drops()
            sent, elapsed = run_in(agent_cg, [str(binary), "deny", str(args.rate), str(args.seconds)]).split()
            deadline = time.monotonic() + 10
            while events < int(sent) and time.monotonic() < deadline:
                time.sleep(0.1)
            dropped = enforcer.drops() - drops_before
        finally:
            enforcer.close(detach=True)
            uninstall(config)
            if before is not None:
                before.close()
            for cg in (agent_cgroup(config, "bench"), parent_cgroup(config), outside):
                try:
                    cg.rmdir()
                except OSError:
                    pass

    table = {kind: {row: {"p50_ns": statistics.median(s[0] for s in samples[(kind, row)]),
                          "mean_ns": statistics.median(s[1] for s in samples[(kind, row)])} for row in rows} for kind in kinds}
    for kind, what in (("connect", "connect() to an allowed destination"), ("packet", "64-byte datagram send()+recv()")):
        t = table[kind]
        print(f"\n| {what} | p50 ns | mean ns | added p50 vs none |")
        print("|---|---:|---:|---:|")
        for row in rows:
            print(f"| {row} | {t[row]['p50_ns']:.0f} | {t[row]['mean_ns']:.1f} | {t[row]['p50_ns'] - t['none']['p50_ns']:+.0f} |")
        print(f"now vs before: {t['now']['p50_ns'] - t['before']['p50_ns']:+.0f} ns p50, "
              f"{t['now']['mean_ns'] - t['before']['mean_ns']:+.1f} ns mean")
    achieved = int(sent) / float(elapsed)
    print(f"\ndenied sendto()s: {sent} sent in {float(elapsed):.2f}s ({achieved:.0f}/s); events received {events}; "
          f"ring buffer drops {dropped}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "baseline": BASELINE, "table": table,
                                          "denied_sent": int(sent), "denied_rate_per_s": round(achieved),
                                          "events_received": events, "drops": dropped,
                                          "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

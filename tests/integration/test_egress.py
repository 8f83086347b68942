"""Kernel egress enforcement with real bcc programs, real cgroups and a "remote" host in a
network namespace (pyroute2). Needs root, cgroup2, bpffs and kernel headers: `make install`
prepares them on our CI machines, where these tests must run; elsewhere they skip with
the exact reason from `probe()`."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ext_authz.egress import kernel as egress_kernel
from ext_authz.egress.config import EgressConfig, agent_cgroup, cgroup_id, parent_cgroup
from ext_authz.egress.enforcer import _ours, uninstall
from ext_authz.egress.kernel import cgroup2_mount, probe
from ext_authz.egress.launcher import connect_errno, spawn_agent
from ext_authz.local.net import free_port, wait_until
from ext_authz.mesh.configs import envoy_binary

pytestmark = pytest.mark.slow

REASON = probe()
if REASON:
    pytest.skip(f"eBPF egress enforcement unavailable: {REASON}", allow_module_level=True)

REMOTE4, REMOTE6, HOST4 = "10.231.0.2", "fd00:231::2", "10.231.0.1"
HTTP_PORT, UDP_PORT = 8080, 9090
NOBODY_PYTHON = "/usr/bin/python3"  # the venv's interpreter lives under /root, which nobody cannot read

# Runs inside an agent cgroup; self-contained (may run as nobody). argv[1]: JSON list of steps.
PROBE = r"""
import errno, json, os, socket, sys, urllib.request
out = []
for step in json.loads(sys.argv[1]):
    kind = step[0]
    try:
        if kind == "tcp":
            fam = socket.AF_INET6 if ":" in step[1] else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(3); s.connect((step[1], step[2]))
        elif kind == "udp":
            fam = socket.AF_INET6 if ":" in step[1] else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (step[1], step[2]))
        elif kind == "raw_icmp":
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        elif kind == "move":  # write our pid into another cgroup
            with open(os.path.join(step[1], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        elif kind == "mkdir":
            os.mkdir(step[1])
        elif kind == "http_proxy":  # through the mesh proxy (a TCP proxy to the remote)
            with urllib.request.urlopen(step[1], timeout=5) as r:
                r.read()
        out.append(0)
    except OSError as e:
        out.append(e.errno or -1)
print(json.dumps({"results": out, "pid": os.getpid(), "uid": os.getuid()}))
"""


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def remote():
    """A remote host: netns with a veth pair, HTTP on 8080 (v4+v6) and a UDP sink on 9090."""
    from pyroute2 import IPRoute, NetNS, netns

    name = f"sgremote{os.getpid()}"
    host_if, remote_if = f"sgh{os.getpid() % 100000}", f"sgr{os.getpid() % 100000}"
    netns.create(name)
    server = None
    try:
        with IPRoute() as ip:
            ip.link("add", ifname=host_if, kind="veth", peer={"ifname": remote_if, "net_ns_fd": name})
            idx = ip.link_lookup(ifname=host_if)[0]
            ip.addr("add", index=idx, address=HOST4, prefixlen=24)
            ip.addr("add", index=idx, address="fd00:231::1", prefixlen=64, flags=0x02)  # no DAD
            ip.link("set", index=idx, state="up")
        with NetNS(name) as ns:
            for ifname in (remote_if, "lo"):
                idx = ns.link_lookup(ifname=ifname)[0]
                if ifname != "lo":
                    ns.addr("add", index=idx, address=REMOTE4, prefixlen=24)
                    ns.addr("add", index=idx, address=REMOTE6, prefixlen=64, flags=0x02)
                ns.link("set", index=idx, state="up")
        code = ("import http.server, socket, threading\n"
                "class S(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6\n"
                "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', %d))\n"
                "threading.Thread(target=lambda: [u.recv(64) for _ in iter(int, 1)], daemon=True).start()\n"
                "S(('::', %d), http.server.SimpleHTTPRequestHandler).serve_forever()\n") % (UDP_PORT, HTTP_PORT)
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", code], cwd="/tmp",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: connect_errno(REMOTE4, HTTP_PORT) == 0, 15, "remote HTTP server")
        yield name
    finally:
        if server:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        with IPRoute() as ip:
            for link in ip.link_lookup(ifname=host_if):
                ip.link("del", index=link)
        netns.remove(name)


@pytest.fixture(scope="module")
def mesh_proxy(remote, tmp_path_factory):
    """A real Envoy TCP proxy on 127.0.0.1 forwarding to the remote: the only door out."""
    port, admin = free_port(), free_port()
    conf = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "mesh", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                               "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                               "stat_prefix": "mesh", "cluster": "remote"}}]}]}],
            "clusters": [{"name": "remote", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "remote", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": REMOTE4, "port_value": HTTP_PORT}}}}]}]}}],
        },
    }
    path = tmp_path_factory.mktemp("mesh") / "mesh.json"
    path.write_text(json.dumps(conf))
    proc = subprocess.Popen([envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "error"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: connect_errno("127.0.0.1", port) == 0, 30, "mesh proxy")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


class Daemon:
    """`sealgate egress serve` as a real process, with its config, log and OCSF sink."""

    def __init__(self, workdir: Path, proxy_port: int):
        tag = f"sg-test-{os.getpid()}"
        self.workdir = workdir
        self.config_path = workdir / "egress.yaml"
        self.sink = workdir / "events.jsonl"
        self.log = workdir / "egress.log"
        self.raw = {
            "pin_dir": f"/sys/fs/bpf/{tag}",
            "cgroup_parent": tag,
            "sink": str(self.sink),
            "agents": [
                {"id": "worker", "mode": "enforce", "allow": [{"addr": "127.0.0.1", "port": proxy_port, "proto": "tcp"}]},
                {"id": "auditor", "mode": "audit", "allow": [{"addr": "127.0.0.1", "port": proxy_port, "proto": "tcp"}]},
            ],
        }
        self.write_config()
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> EgressConfig:
        return EgressConfig.from_dict(self.raw)

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.raw))

    def log_count(self, needle: str) -> int:
        return self.log.read_text().count(needle) if self.log.exists() else 0

    def start(self) -> None:
        ready = self.log_count("egress ready")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ext_authz.cli", "egress", "serve", "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.log_count("egress ready") > ready or self.proc.poll() is not None, 60,
                   "egress daemon ready", interval=0.1)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def reload(self) -> None:
        synced = self.log_count("egress maps synced")
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log_count("egress maps synced") > synced, 10, "egress reload")

    def events(self) -> list[dict]:
        if not self.sink.exists():
            return []
        return [json.loads(line) for line in self.sink.read_text().splitlines() if line.strip()]

    def wait_event(self, predicate, what: str, timeout: float = 5) -> dict:
        return wait_until(lambda: next((e for e in self.events() if predicate(e)), None), timeout, f"event: {what}")

    def run_agent(self, agent: str, steps: list, user: str | None = None) -> dict:
        python = NOBODY_PYTHON if user else sys.executable
        proc = spawn_agent(self.config, agent, [python, "-c", PROBE, json.dumps(steps)], user=user,
                           allow_root=user is None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return json.loads(out)


@pytest.fixture(scope="module")
def daemon(mesh_proxy, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("egress"), mesh_proxy)
    d.start()
    try:
        yield d
    finally:
        d.stop()
        uninstall(d.config)
        parent = parent_cgroup(d.config)
        for sub in sorted(parent.glob("**/"), key=lambda p: len(p.parts), reverse=True) if parent.exists() else []:
            try:
                sub.rmdir()
            except OSError:
                pass


EPERM = 1


def blocked_event(d: Daemon, pid: int, hook: str, ip: str | None = None, port: int | None = None, agent: str = "worker"):
    return d.wait_event(lambda e: e.get("actor", {}).get("process", {}).get("pid") == pid
                        and e["unmapped"]["hook"] == hook and e["disposition_id"] == 2 and e["unmapped"]["agent_id"] == agent
                        and (ip is None or e["dst_endpoint"]["ip"] == ip) and (port is None or e["dst_endpoint"]["port"] == port),
                        f"{agent} {hook} {ip}:{port} blocked (pid {pid})")


# ------------------------------------------------------------------ tests


def ours(config: EgressConfig, at: Path) -> set[tuple[str, str, str, int]]:
    """(attach type, name, flags, id) of this daemon's programs at `at` (other configs' may sit at the root)."""
    return {(p["attach_type"], p["name"], p["attach_flags"], p["id"]) for p in _ours(config, at)}


def test_programs_are_attached_with_allow_multi(daemon):
    at_parent = ours(daemon.config, parent_cgroup(daemon.config))
    at_root = ours(daemon.config, cgroup2_mount())
    assert {(t, n) for t, n, _, _ in at_parent} == {
        ("cgroup_inet_sock_create", "sg_sock_create"), ("cgroup_inet_egress", "sg_skb_egress"),
        ("cgroup_inet_ingress", "sg_skb_ingress")}
    # judged by the calling task, for every socket: attached at the cgroup2 root
    assert {(t, n) for t, n, _, _ in at_root} == {
        ("cgroup_inet4_connect", "sg_connect4"), ("cgroup_inet6_connect", "sg_connect6"),
        ("cgroup_udp4_sendmsg", "sg_sendmsg4"), ("cgroup_udp6_sendmsg", "sg_sendmsg6"),
        ("cgroup_inet4_bind", "sg_bind4"), ("cgroup_inet6_bind", "sg_bind6"), ("cgroup_setsockopt", "sg_setsockopt")}
    assert all(flags == "multi" for _, _, flags, _ in at_parent | at_root)


def test_traffic_through_the_mesh_proxy_passes(daemon, mesh_proxy):
    r = daemon.run_agent("worker", [["http_proxy", f"http://127.0.0.1:{mesh_proxy}/"]])
    assert r["results"] == [0]


@pytest.mark.parametrize("name,step,hook,ip", [
    ("tcp_v4", ["tcp", REMOTE4, HTTP_PORT], "connect4", REMOTE4),
    ("tcp_v6", ["tcp", REMOTE6, HTTP_PORT], "connect6", REMOTE6),
    ("udp_v4", ["udp", REMOTE4, UDP_PORT], "sendmsg4", REMOTE4),
    ("udp_v6", ["udp", REMOTE6, UDP_PORT], "sendmsg6", REMOTE6),
    ("v4_mapped_v6", ["tcp", f"::ffff:{REMOTE4}", HTTP_PORT], "connect6", REMOTE4),
])
def test_direct_egress_is_blocked_and_reported(daemon, name, step, hook, ip):
    r = daemon.run_agent("worker", [step])
    assert r["results"] == [EPERM]
    ev = blocked_event(daemon, r["pid"], hook, ip, step[2])
    assert ev["class_uid"] == 4001 and ev["activity_id"] == 5 and ev["type_uid"] == 400105
    assert ev["connection_info"]["protocol_name"] == ("tcp" if step[0] == "tcp" else "udp")
    assert ev["unmapped"]["cgroup_id"] == cgroup_id(agent_cgroup(daemon.config, "worker"))
    assert ev["actor"]["process"]["name"].startswith("python")


def test_raw_icmp_socket_is_blocked_and_reported(daemon):
    r = daemon.run_agent("worker", [["raw_icmp"]])  # as root: only the sock_create program stops it
    assert r["results"] == [EPERM]
    ev = blocked_event(daemon, r["pid"], "sock_create")
    assert ev["connection_info"]["protocol_name"] == "icmp"


def test_escaping_into_a_child_cgroup_does_not_escape(daemon):
    child = agent_cgroup(daemon.config, "worker") / "escape"
    r = daemon.run_agent("worker", [["mkdir", str(child)], ["move", str(child)], ["tcp", REMOTE4, HTTP_PORT]])
    try:
        assert r["results"] == [0, 0, EPERM]
        ev = blocked_event(daemon, r["pid"], "connect4", REMOTE4)
        assert ev["unmapped"]["cgroup_id"] == cgroup_id(child)  # the task's own cgroup is the child...
        assert ev["unmapped"]["agent_cgroup_id"] == cgroup_id(child.parent)  # ...judged as its agent
    finally:
        child.rmdir()


def test_non_root_agent_cannot_leave_its_cgroup_and_stays_blocked(daemon):
    parent = parent_cgroup(daemon.config)
    root = cgroup2_mount()
    r = daemon.run_agent("worker", [["move", str(parent)], ["move", str(root)], ["tcp", REMOTE4, HTTP_PORT]], user="nobody")
    assert r["uid"] == 65534
    assert r["results"][0] in (1, 13) and r["results"][1] in (1, 13)  # EPERM / EACCES: cgroup.procs is root's
    assert r["results"][2] == EPERM
    ev = blocked_event(daemon, r["pid"], "connect4", REMOTE4)
    assert ev["actor"]["process"]["user"]["uid"] == "65534"


def test_unregistered_task_under_the_attach_point_fails_closed(daemon):
    stray = parent_cgroup(daemon.config) / "stray"
    stray.mkdir(exist_ok=True)
    code = (f"import os; open('{stray}/cgroup.procs','w').write(str(os.getpid()));"
            f"import sys; sys.path.insert(0, {str(Path(egress_kernel.__file__).parents[2])!r});"
            f"from ext_authz.egress.launcher import connect_errno; print(os.getpid(), connect_errno('{REMOTE4}', {HTTP_PORT}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        pid, result = int(out[0]), int(out[1])
        assert result == EPERM
        blocked_event(daemon, pid, "connect4", REMOTE4, agent="unregistered")
    finally:
        stray.rmdir()


def test_allowlist_change_applies_to_the_next_connect(daemon):
    worker = daemon.raw["agents"][0]
    assert daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT]])["results"] == [EPERM]
    worker["allow"].append({"addr": REMOTE4, "port": HTTP_PORT, "proto": "tcp"})
    daemon.reload()
    try:
        assert daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT], ["tcp", REMOTE6, HTTP_PORT]])["results"] == [0, EPERM]
    finally:
        worker["allow"].pop()
        daemon.reload()
    assert daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT]])["results"] == [EPERM]


def test_audit_mode_lets_traffic_through_and_reports_it(daemon):
    r = daemon.run_agent("auditor", [["tcp", REMOTE4, HTTP_PORT], ["udp", REMOTE4, UDP_PORT]])
    assert r["results"] == [0, 0]
    ev = daemon.wait_event(lambda e: e["actor"]["process"]["pid"] == r["pid"] and e["unmapped"]["hook"] == "connect4",
                           "auditor connect4 audited")
    assert ev["disposition_id"] == 1 and ev["activity_id"] == 1 and ev["unmapped"]["agent_id"] == "auditor"


def test_daemon_restart_keeps_enforcement_and_replaces_its_programs(daemon):
    def attached():
        return sorted(p[3] for at in (parent_cgroup(daemon.config), cgroup2_mount()) for p in ours(daemon.config, at))

    before = attached()
    daemon.stop()
    # daemon gone: programs and pinned maps still enforce
    assert attached() == before
    assert daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT]])["results"] == [EPERM]
    daemon.start()
    after = attached()
    assert len(after) == len(before) == 10 and not set(after) & set(before)  # new programs in, old ones out
    r = daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT]])
    assert r["results"] == [EPERM]
    blocked_event(daemon, r["pid"], "connect4", REMOTE4)  # and the new daemon reports


def test_ring_buffer_overflow_is_reported_not_silent(daemon):
    daemon.proc.send_signal(signal.SIGSTOP)  # nobody drains the ring buffer now
    try:
        # 256 pages / 88-byte events: ~12k fit; send more denied sendtos than that
        code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range(30000):\n    try: s.sendto(b'x', ('{REMOTE4}', {UDP_PORT}))\n    except OSError: pass\n")
        proc = spawn_agent(daemon.config, "worker", [sys.executable, "-c", code], allow_root=True)
        assert proc.wait(timeout=120) == 0
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    loss = daemon.wait_event(lambda e: e.get("class_name") == "Sealgate Egress Event Loss", "event loss report", timeout=15)
    assert loss["dropped_events"] > 0


def test_uninstall_detaches_everything(daemon):
    daemon.root_ids = {p[3] for p in ours(daemon.config, cgroup2_mount())}
    assert len(daemon.root_ids) == 7
    daemon.stop()
    subprocess.run([sys.executable, "-m", "ext_authz.cli", "egress", "uninstall", "--config", str(daemon.config_path)],
                   check=True, capture_output=True)
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(parent_cgroup(daemon.config))],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out in ("", "[]")
    root = json.loads(subprocess.run(["bpftool", "-j", "cgroup", "show", str(cgroup2_mount())],
                                     capture_output=True, text=True, check=True).stdout.strip() or "[]")
    assert not [p for p in root if p["name"].startswith("sg_") and p["id"] in daemon.root_ids]
    assert not Path(daemon.raw["pin_dir"]).exists()
    assert daemon.run_agent("worker", [["tcp", REMOTE4, HTTP_PORT]])["results"] == [0]  # no longer enforced

"""The evidence store's disk fails: decisions fail closed with EVIDENCE_UNAVAILABLE, readiness turns red, and every
record committed before the fault survives it, an approval used before it included.

A real ext4 filesystem on a loop device (losetup + mkfs.ext4 + mount, 24 MiB), under a real authorizer process
on anvil, driven over its gRPC socket from several threads:
- full: a filler file takes every free block; freeing it turns readiness green and allows again;
- ext4 error: the kernel remounts the filesystem read-only (`errors=remount-ro`, triggered through
  /sys/fs/ext4/<dev>/trigger_fs_error); after kill -9, e2fsck and a new mount, nothing committed is missing and
  no anchor sequence number is reused (with `synchronous=NORMAL` this wiped committed rows);
- abrupt failure: EXT4_IOC_SHUTDOWN without flushing the journal, every later I/O an error (as a dying disk;
  device-mapper's dm-error target is used where the kernel has it: this one may not).
Needs root; skips with the reason otherwise.
"""

import concurrent.futures
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz import reasons
from ext_authz.authz.approvals import sign_approval
from ext_authz.envelope.encoding import sae_hash
from ext_authz.evidence.sqlite import SqliteEvidenceStore
from ext_authz.local.net import free_port, wait_until
from ext_authz.local.stack import APPROVER

pytestmark = pytest.mark.slow
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # like pulling the disk: the journal is not flushed


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


@dataclass
class Disk:
    device: str
    mount: Path

    @property
    def sysfs(self) -> Path:
        return Path("/sys/fs/ext4") / Path(self.device).name

    def remount(self):
        """After a fault: unmount, repair, mount again (what an operator does before restarting)."""
        run("umount", str(self.mount))
        subprocess.run(["e2fsck", "-fy", self.device], capture_output=True, timeout=120)  # exit 1: errors fixed
        run("mount", "-o", "errors=remount-ro", self.device, str(self.mount))


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: losetup, mkfs.ext4 and mount of a loop device")
    for tool in ("losetup", "mkfs.ext4", "mount", "umount", "e2fsck"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: util-linux, e2fsprogs, mount)")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(24 * 1024 * 1024)
    try:
        device = run("losetup", "-f", "--show", str(image)).stdout.strip()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"no loop device available: {e.stderr.strip()}")
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        run("mkfs.ext4", "-q", "-F", "-m", "0", device)
        run("mount", "-o", "errors=remount-ro", device, str(mount))
        yield Disk(device, mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def stack(chain_stack):
    """anvil with the contracts and the demo agents, rules and approver (the deploy made `stack.signer`); authorizers are started per test."""
    return chain_stack


class Authorizer:
    def __init__(self, stack, name, db):
        self.stack, self.name, self.db = stack, name, db
        self.admin = free_port()
        self.start()

    def start(self):
        self.stack.spawn_authorizer(self.name, self.stack.socket(self.name), self.admin, False, self.db)
        self.channel = grpc.insecure_channel(self.stack.socket(self.name))
        self.stub = auth_grpc.AuthorizationStub(self.channel)

    def kill(self):
        self.channel.close()
        proc = self.stack.procs.pop(self.name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def check(self, agent="procurement-01", amount=500, approval=None):
        req = auth_pb2.CheckRequest()
        req.attributes.source.principal = self.stack.spiffe_id(agent)
        req.attributes.source.certificate = urllib.parse.quote(Path(self.stack.agent_certs[agent][0]).read_text())
        h = req.attributes.request.http
        h.method, h.host, h.path = "POST", "payments.internal", "/v1/transfers"
        h.body = json.dumps({"amount_cents": amount, "to": "vendor-42"})
        h.headers["content-type"] = "application/json"
        if approval is not None:
            h.headers["x-sealgate-approval"] = approval
        resp = self.stub.Check(req, timeout=30)
        if resp.status.code == 0:
            return reasons.OK, {x.header.key: x.header.value for x in resp.ok_response.headers}["x-sae"], None
        headers = {x.header.key: x.header.value for x in resp.denied_response.headers}
        return headers["x-sealgate-reason"], headers.get("x-sae-denial"), json.loads(resp.denied_response.body)

    def load(self, stop_when, threads=4, max_requests=4000):
        """Allowed payments from several threads until stop_when(outcomes) or max_requests; returns the outcomes."""
        outcomes, lock = [], threading.Lock()

        def worker():
            while True:
                with lock:
                    if len(outcomes) >= max_requests or stop_when(outcomes):
                        return
                reason, token, _ = self.check()
                with lock:
                    outcomes.append((reason, token))

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(worker) for _ in range(threads)]:
                f.result()
        return outcomes


@pytest.fixture
def authorizer(stack, disk, request):
    a = Authorizer(stack, f"authz_{request.node.name[:40]}", disk.mount / "evidence.sqlite3")
    yield a
    stack.stop_process(a.name)


def approved_once(a):
    """A held payment, a person's approval, the SAE: returns the approval (used now)."""
    reason, _, body = a.check("finance-03", 2_000_000)
    assert reason == reasons.HUMAN_APPROVAL_REQUIRED
    approval = sign_approval(a.stack.approver, APPROVER, a.stack.spiffe_id("finance-03"), body["approval_request"])
    reason, token, _ = a.check("finance-03", 2_000_000, approval)
    assert reason == reasons.OK
    return approval, token


def unavailable(outcomes):
    return sum(1 for reason, _ in outcomes if reason == reasons.EVIDENCE_UNAVAILABLE) >= 20


def committed(outcomes):
    return [token for reason, token in outcomes if reason == reasons.OK]


def sequence_numbers(db, tokens):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        wanted = {sae_hash(t) for t in tokens}
        return {bytes(h): seq for seq, h in conn.execute("SELECT seq, hash FROM leaves") if bytes(h) in wanted}
    finally:
        conn.close()


def assert_every_allowed_record_survived(db, tokens):
    store = SqliteEvidenceStore(db)
    try:
        missing = [t for t in tokens if (r := store.by_hash(sae_hash(t))) is None or r.token != t]
    finally:
        store.close()
    assert missing == [], f"{len(missing)} of {len(tokens)} allowed decisions lost their record"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_a_full_disk_fails_decisions_closed_turns_readiness_red_and_recovers_when_space_returns(authorizer, disk):
    a = authorizer
    before = a.load(lambda o: len(o) >= 100)
    assert {r for r, _ in before} == {reasons.OK}
    filler = disk.mount / "filler"
    with open(filler, "wb") as f:  # take every free block
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    during = a.load(unavailable)
    assert {r for r, _ in during} <= {reasons.OK, reasons.EVIDENCE_UNAVAILABLE}  # nothing else, no crash
    assert unavailable(during), "the full disk never refused a write"
    assert a.healthz() == 503
    filler.unlink()
    wait_until(lambda: a.healthz() == 200, 20, "readiness to turn green once the store can persist")
    reason, token, _ = a.check()
    assert reason == reasons.OK
    a.kill()
    assert_every_allowed_record_survived(a.db, committed(before) + committed(during) + [token])


@pytest.mark.parametrize("fault", ["ext4_error_remounts_read_only", "abrupt_shutdown_io_errors"])
def test_a_failing_disk_loses_no_committed_record_and_no_used_approval(authorizer, disk, fault):
    a = authorizer
    approval, approved_sae = approved_once(a)
    before = a.load(lambda o: len(o) >= 150)
    assert {r for r, _ in before} == {reasons.OK}
    seqs = sequence_numbers(a.db, committed(before) + [approved_sae])
    if fault == "ext4_error_remounts_read_only":
        (disk.sysfs / "trigger_fs_error").write_text("sealgate test: evidence disk error\n")
    else:
        fd = os.open(disk.mount, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)
    during = a.load(unavailable)
    assert {r for r, _ in during} <= {reasons.OK, reasons.EVIDENCE_UNAVAILABLE}
    assert unavailable(during)
    assert a.healthz() == 503
    assert a.check("finance-03", 2_000_000, approval)[0] in (reasons.APPROVAL_REPLAYED, reasons.EVIDENCE_UNAVAILABLE)
    a.kill()
    disk.remount()
    allowed = committed(before) + committed(during) + [approved_sae]
    assert_every_allowed_record_survived(a.db, allowed)
    assert sequence_numbers(a.db, committed(before) + [approved_sae]) == seqs  # no anchor sequence number reused
    a.start()
    assert a.check("finance-03", 2_000_000, approval)[0] == reasons.APPROVAL_REPLAYED  # used once stays used
    reason, token, _ = a.check()
    assert reason == reasons.OK
    a.kill()
    assert_every_allowed_record_survived(a.db, [token])

"""`sealgate anchor` as a process against a chain that goes away and a kill -9 under load.

Counts what survived: every leaf the store holds ends up in exactly one confirmed batch, the on-chain ranges
of those batches are disjoint and cover exactly as many sequence numbers as there are leaves, and no root
was anchored twice.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.local.net import free_port, http_get_json, wait_until

pytestmark = pytest.mark.slow


class Producer:
    """Writes anchored values into the store like the authorizer does, ~rate per second, until stopped."""

    def __init__(self, db, rate=200, tag=0):
        self.store, self.rate, self.tag = AnchorStore(db), rate, tag
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            n = max(1, self.rate // 20)
            rows = [(bytes([self.tag]) + (self.written + i).to_bytes(8, "big") + bytes(23), "sae",
                     f"p{self.tag}-{self.written + i}", time.time()) for i in range(n)]
            self.store.add_leaves(rows)
            self.written += n

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def start_anchorer(stack, tmp_path, db, port):
    config = tmp_path / "authorizer.json"
    anchor = {"db_path": str(db), "interval_seconds": 0.1, "batch_max_leaves": 64, "rpc_timeout_seconds": 2,
              "degraded_after_seconds": 5, "stuck_seconds": 5}
    config.write_text(json.dumps({**stack.config_raw, "anchor": anchor}))
    log = open(tmp_path / "anchorer.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ext_authz.cli", "anchor", "--config", str(config), "--manifest",
                             str(stack.workdir / "addresses.json"), "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SEALGATE_ANCHORER_KEY": DEV_KEYS["anchorer"]})
    log.close()
    wait_until(lambda: health(port) is not None, 30, "anchorer /healthz")
    return proc


def health(port):
    try:
        return http_get_json(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except Exception:
        return None


def health_doc(port):
    """/healthz answers 503 with the same JSON body when degraded."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def kill9(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def assert_nothing_lost_or_twice(stack, db, written):
    store = AnchorStore(db)
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM leaves").fetchone()[0] == written
    assert conn.execute("SELECT count(*) FROM leaves l JOIN batches b ON l.batch_root=b.root "
                        "WHERE b.status='anchored'").fetchone()[0] == written
    batches = store.anchored_batches()
    roots = {b[0] for b in batches}
    events = [e for e in stack.anchor.events.BatchAnchored().get_logs(from_block=0) if e["args"]["root"] in roots]
    assert len(events) == len(roots) == len(batches)  # each root once on-chain
    ranges = sorted((e["args"]["firstSeq"], e["args"]["lastSeq"]) for e in events)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # disjoint
    assert sum(last - first + 1 for first, last in ranges) == written
    for root, count, first, last, _tx, block in batches:  # the store agrees with the chain
        on_chain = stack.anchor.functions.batchOf(root).call()
        assert tuple(on_chain) == (block, count, first, last)


def test_chain_outage_of_30_s_grows_backlog_reports_degraded_then_drains(chain_stack, tmp_path):
    db, port = tmp_path / "anchor.sqlite3", free_port()
    proc = start_anchorer(chain_stack, tmp_path, db, port)
    anvil = chain_stack.procs["anvil"]
    try:
        with Producer(db, tag=0xA1) as producer:
            wait_until(lambda: health_doc(port)[1]["status"] == "ok" and producer.written > 100, 30, "anchoring")
            os.kill(anvil.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                seen = []
                while time.monotonic() - stopped < 30:
                    time.sleep(3)
                    seen.append(health_doc(port))
            finally:
                os.kill(anvil.pid, signal.SIGCONT)
        degraded = [doc for code, doc in seen if code == 503 and doc["status"] == "degraded"]
        assert len(degraded) >= 5, seen
        backlogs = [doc["backlog"] for doc in degraded]
        assert backlogs == sorted(backlogs) and backlogs[-1] > backlogs[0]  # grows while the chain is away
        assert degraded[-1]["oldest_unanchored_age_seconds"] > 20 and degraded[-1]["last_error"]
        wait_until(lambda: health_doc(port) == (200, {**health_doc(port)[1], "status": "ok", "backlog": 0}), 90, "drain")
        assert_nothing_lost_or_twice(chain_stack, db, producer.written)
    finally:
        if anvil.poll() is None:
            os.kill(anvil.pid, signal.SIGCONT)
        kill9(proc)


def test_kill_9_of_the_anchorer_under_load_loses_and_duplicates_nothing(chain_stack, tmp_path):
    db, port = tmp_path / "anchor.sqlite3", free_port()
    proc = start_anchorer(chain_stack, tmp_path, db, port)
    try:
        with Producer(db, rate=400, tag=0xB2) as producer:
            for delay in (1.3, 0.7, 2.1):
                time.sleep(delay)
                kill9(proc)
                proc = start_anchorer(chain_stack, tmp_path, db, port)
            time.sleep(1)
        wait_until(lambda: health_doc(port)[1]["backlog"] == 0, 90, "drain after the kills")
        assert producer.written > 1000
        assert_nothing_lost_or_twice(chain_stack, db, producer.written)
    finally:
        kill9(proc)


def test_anchorer_without_the_role_says_so_at_start_and_exits_2(chain_stack, tmp_path):
    from eth_account import Account

    config = tmp_path / "authorizer.json"
    config.write_text(json.dumps({**chain_stack.config_raw, "anchor": {"db_path": str(tmp_path / "a.sqlite3")}}))
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "anchor", "--config", str(config), "--manifest",
                          str(chain_stack.workdir / "addresses.json")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SEALGATE_ANCHORER_KEY": Account.create().key.hex()})
    assert out.returncode == 2 and "does not hold ANCHORER_ROLE" in out.stdout, out.stdout + out.stderr

"""Durable before execution: kill -9 of the authorizer under load loses no record of an action the target executed.

Real stack (anvil, authorizer, anchoring process, sidecar and PEP Envoys, target writing a receipt per executed
request). Agents send allowed payments from several threads; the authorizer is killed with SIGKILL in the
middle; after a restart, every SAE the target executed is in the evidence store, whole, and gets anchored.
Before durable-before-response, 5-24 executed actions per kill had no record (hashes waited up to 0.2 s).
"""

import concurrent.futures
import json
import os
import signal
import threading
import time

import pytest

from ext_authz.anchoring.store import AnchorStore
from ext_authz.envelope.encoding import sae_hash
from ext_authz.evidence.sqlite import SqliteEvidenceStore
from ext_authz.local.net import wait_until
from ext_authz.local.stack import LocalStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("durable")) as s:
        yield s


def load(stack, stop, counts):
    """One agent thread: allowed payments back to back, over one kept-alive connection when it can."""
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = stack.agent_connection("procurement-01", stack.ports.sidecar)
            body = json.dumps({"amount_cents": 500, "to": "vendor-42"}).encode()
            conn.request("POST", "/v1/transfers", body, {"host": "payments.internal", "content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            counts["2xx" if resp.status < 300 else "other"] += 1
        except OSError:
            counts["error"] += 1
            conn = None
            time.sleep(0.01)


def executed_saes(stack):
    lines = (stack.workdir / "target-receipts.jsonl").read_text().splitlines()
    return [json.loads(line)["sae"] for line in lines if line.strip()]


def test_kill_9_of_the_authorizer_under_load_loses_no_record_of_an_executed_action(stack):
    db = stack.workdir / "anchor.sqlite3"
    for _round in range(2):
        stop = threading.Event()
        counts = {"2xx": 0, "other": 0, "error": 0}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(load, stack, stop, counts)
            wait_until(lambda c=counts: c["2xx"] >= 150, 60, "load to reach the target")
            os.killpg(stack.procs["authorizer"].pid, signal.SIGKILL)  # mid-stream: decisions in flight
            stack.procs["authorizer"].wait(timeout=10)
            time.sleep(0.5)  # the load keeps coming while the authorizer is gone (Envoy denies it)
            stop.set()
        del stack.procs["authorizer"]
        stack.spawn_authorizer("authorizer", stack.authz_socket, stack.ports.authz_admin, False, db)

    executed = executed_saes(stack)
    assert len(executed) >= 300  # the load really ran through the target
    evidence = SqliteEvidenceStore(db)
    missing = [t for t in executed if (r := evidence.by_hash(sae_hash(t))) is None or r.token != t]
    assert missing == [], f"{len(missing)} of {len(executed)} executed actions have no record"

    anchors = AnchorStore(db)
    wait_until(lambda: all((p := anchors.proof_for(sae_hash(t))) is not None and p.status == "anchored"
                           for t in executed), 90, "every executed action to be anchored")
    roots = {anchors.proof_for(sae_hash(t)).root for t in executed}
    assert all(stack.anchor.functions.batchOf(root).call()[0] > 0 for root in roots)  # on-chain, not only marked

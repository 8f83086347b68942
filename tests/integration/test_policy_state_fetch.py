"""The decision path never blocks on an RPC: with anvil stopped (SIGSTOP), a request for an agent whose state the
pinned EVM has not cached fails closed with POLICY_STATE_UNAVAILABLE, for that request alone, while requests for
cached agents keep being decided (counted while the uncached one waits). Before, pyrevm fetched the missing
storage on the event loop holding the GIL: one such read froze the authorizer for 11 s and 508 requests behind
it timed out at Envoy."""

import concurrent.futures
import json
import os
import signal
import threading
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz import reasons
from ext_authz.local.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(chain_stack):
    """anvil with the contracts (the deploy made `stack.signer`); the authorizer is started by the test."""
    return chain_stack


def transfer(stack, agent, amount=500):
    req = auth_pb2.CheckRequest()
    req.attributes.source.principal = stack.spiffe_id(agent)
    req.attributes.source.certificate = urllib.parse.quote(Path(stack.agent_certs[agent][0]).read_text())
    h = req.attributes.request.http
    h.method, h.host, h.path = "POST", "payments.internal", "/v1/transfers"
    h.body = json.dumps({"amount_cents": amount, "to": "vendor-42"})
    h.headers["content-type"] = "application/json"
    return req


def reason_of(resp):
    if resp.status.code == 0:
        return reasons.OK
    return {x.header.key: x.header.value for x in resp.denied_response.headers}["x-sealgate-reason"]


def test_with_the_node_stopped_an_uncached_agent_fails_closed_alone_while_cached_agents_are_decided(stack):
    name = "authz_fetch"
    stack.spawn_authorizer(name, stack.socket(name), free_port(), False, stack.workdir / "fetch.sqlite3",
                           config_overrides={"max_state_age_seconds": 60.0, "policy_fetch_timeout_seconds": 1.0})
    channel = grpc.insecure_channel(stack.socket(name))
    stub = auth_grpc.AuthorizationStub(channel)
    assert reason_of(stub.Check(transfer(stack, "procurement-01"), timeout=30)) == reasons.OK  # now cached
    anvil = stack.procs["anvil"].pid
    stop, uncached_in_flight = threading.Event(), threading.Event()
    cached = {"during": 0, "ok": 0, "other": []}

    def cached_agent():
        while not stop.is_set():
            reason = reason_of(stub.Check(transfer(stack, "procurement-01", 700), timeout=30))
            if reason == reasons.OK:
                cached["ok"] += 1
                if uncached_in_flight.is_set():
                    cached["during"] += 1
            else:
                cached["other"].append(reason)

    os.killpg(anvil, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            workers = [pool.submit(cached_agent) for _ in range(3)]
            time.sleep(0.3)
            uncached_in_flight.set()
            started = time.monotonic()
            uncached = stub.Check(transfer(stack, "finance-03"), timeout=30)  # never asked since the pin
            waited = time.monotonic() - started
            uncached_in_flight.clear()
            time.sleep(0.3)
            stop.set()
            for w in workers:
                w.result()
    finally:
        os.killpg(anvil, signal.SIGCONT)
    assert reason_of(uncached) == reasons.POLICY_STATE_UNAVAILABLE
    headers = {x.header.key: x.header.value for x in uncached.denied_response.headers}
    assert "x-sae-denial" in headers  # a signed denial, recorded like any other
    assert cached["other"] == []
    assert cached["during"] > 0, f"no cached-agent request was decided during the {waited:.2f}s the uncached one waited"
    print(f"uncached request answered after {waited:.2f}s; {cached['during']} cached-agent requests decided meanwhile")
    # the node is back: the same agent's state is fetched and it is decided
    assert reason_of(stub.Check(transfer(stack, "finance-03"), timeout=30)) == reasons.OK
    channel.close()
    stack.stop_process(name)

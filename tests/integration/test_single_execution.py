"""An SAE executes at most once: across PEP workers, PEP restarts (clean or kill -9), and PEP replicas sharing a
Redis store; and the PEP itself refuses a body the SAE was not issued for. Every test counts what the target
actually executed (its receipts), with a target that checks nothing itself."""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ext_authz.envelope.jws import EnvelopeEncoder, verify
from ext_authz.errors import SaeInvalid
from ext_authz.local.net import free_port, wait_until
from ext_authz.local.stack import LocalStack

pytestmark = pytest.mark.slow

BODY = {"amount_cents": 700, "to": "vendor-42"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("single"), target_checks_sae=False) as s:
        yield s


def jti_of(stack, token):
    """The executed SAE's jti: verified, or read leniently when the token does not verify (a non-canonical spelling
    that got through would still be an execution under that jti, and must be counted)."""
    try:
        return verify(token, stack.jwks, check_time=False)["jti"]
    except SaeInvalid:
        import base64

        payload = token.split(".")[1].rstrip("=").replace("+", "-").replace("/", "_")
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def executions(stack, jti):
    path = stack.workdir / "target-receipts.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if json.loads(line)["sae"] and jti_of(stack, json.loads(line)["sae"]) == jti)


def fresh_sae(stack, body=BODY, **overrides):
    """An unused SAE for POST /v1/transfers with `body`, signed by the authorizer's key: a real one's claims
    with a new jti (the tests hold the key; the authorizer would issue the same)."""
    template = stack.agent_call("procurement-01", "POST", "/v1/transfers", body)
    assert template.status == 200, template.body
    claims = verify(template.json()["sae"], stack.jwks)
    claims.update(jti=f"fresh-{time.monotonic_ns()}", **overrides)
    return EnvelopeEncoder(stack.signer).encode(claims), claims["jti"]


def send(stack, token, body=BODY, port=None):
    port = port or stack.ports.pep
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/transfers", body=json.dumps(body).encode(),
                     headers={"host": "payments.internal", "content-type": "application/json", "x-sae": token})
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("x-sealgate-reason")
    finally:
        conn.close()


def restart_pep(stack, kill=False):
    for name in ("pep", "pep_verifier"):
        if kill:
            os.killpg(stack.procs[name].pid, signal.SIGKILL)
            stack.procs[name].wait(10)
            stack.procs.pop(name)
        else:
            stack.stop_process(name)
    verifier = stack.spawn_pep_verifier("pep_verifier", f"sqlite://{stack.workdir / 'redeemed.sqlite3'}")
    stack.spawn_pep("pep", stack.ports.pep, stack.socket("pep-admin"), verifier)


def test_sequential_replay_is_refused_and_executes_once(stack):
    token, jti = fresh_sae(stack)
    assert send(stack, token) == (200, None)
    assert send(stack, token) == (403, "SAE_REPLAYED")
    assert executions(stack, jti) == 1


@pytest.mark.parametrize("kill", [False, True], ids=["clean_restart", "kill_9"])
def test_replay_after_a_pep_restart_is_refused(stack, kill):
    token, jti = fresh_sae(stack)
    assert send(stack, token) == (200, None)
    restart_pep(stack, kill=kill)
    assert send(stack, token) == (403, "SAE_REPLAYED")
    assert executions(stack, jti) == 1


def test_concurrent_replays_across_two_workers_execute_once(stack):
    port, admin = free_port(), free_port()
    stack.spawn_pep("pep_two_workers", port, admin, stack.pep_verifier, concurrency=2)
    for _ in range(3):
        token, jti = fresh_sae(stack)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _, t=token: send(stack, t, port=port), range(32)))
        assert results.count((200, None)) == 1, results
        assert all(r == (403, "SAE_REPLAYED") for r in results if r[0] != 200), results
        assert executions(stack, jti) == 1


def test_body_other_than_the_bound_one_is_refused_at_the_pep(stack):
    token, jti = fresh_sae(stack)
    assert send(stack, token, body={"amount_cents": 700, "to": "attacker"}) == (403, "SAE_BODY_MISMATCH")
    assert executions(stack, jti) == 0
    assert send(stack, token) == (200, None)  # refused requests do not use the SAE up
    assert executions(stack, jti) == 1


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_a_malleated_sae_is_refused_and_not_executed(stack):
    """Base64url malleability: the signature's last character with an unused low bit set decodes to the same
    signature bytes. Envoy's jwt_authn accepts it (and so does the Lua); the PEP verifier refuses the non-canonical
    spelling, so the PEP as a whole does: it never executes, and does not use the SAE up either."""
    token, jti = fresh_sae(stack)
    malleated = token[:-1] + ALPHABET[ALPHABET.index(token[-1]) | 1]
    assert malleated != token
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.pep, timeout=10)
    try:
        conn.request("POST", "/v1/transfers", body=json.dumps(BODY).encode(),
                     headers={"host": "payments.internal", "content-type": "application/json", "x-sae": malleated})
        r = conn.getresponse()
        answer = json.loads(r.read())
    finally:
        conn.close()
    assert (r.status, answer["reason_code"]) == (403, "SAE_INVALID")
    assert "canonical base64url" in answer["message"], answer  # refused by the verifier: jwt_authn let it through
    assert executions(stack, jti) == 0
    assert send(stack, token) == (200, None)  # the canonical spelling runs, once
    assert send(stack, malleated) == (403, "SAE_INVALID")
    assert executions(stack, jti) == 1


def test_an_sae_living_longer_than_300_seconds_is_refused(stack):
    now = int(time.time())
    token, jti = fresh_sae(stack, iat=now, nbf=now, exp=now + 301)
    assert send(stack, token) == (403, "SAE_INVALID")
    token, jti2 = fresh_sae(stack, iat=now + 120, nbf=now, exp=now + 180)  # issued "in the future"
    assert send(stack, token) == (403, "SAE_INVALID")
    assert executions(stack, jti) == executions(stack, jti2) == 0


REDIS = shutil.which("redis-server")


@pytest.fixture
def redis_url(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server not installed (apt package redis-server; make install installs it as root)")
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import redis

    wait_until(lambda: redis.Redis(port=port).ping(), 10, "redis")
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.terminate()
    proc.wait(10)


def test_replicas_sharing_redis_execute_an_sae_once(stack, redis_url):
    url, _ = redis_url
    ports = []
    for i in range(2):
        verifier = stack.spawn_pep_verifier(f"pep_verifier_replica{i}", url)
        port = free_port()
        stack.spawn_pep(f"pep_replica{i}", port, free_port(), verifier, concurrency=2)
        ports.append(port)
    token, jti = fresh_sae(stack)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: send(stack, token, port=ports[i % 2]), range(32)))
    assert results.count((200, None)) == 1, results
    assert executions(stack, jti) == 1
    # replica 1 restarted: still refused
    stack.stop_process("pep_verifier_replica1")
    stack.spawn_pep_verifier("pep_verifier_replica1", url)
    assert send(stack, token, port=ports[1]) == (403, "SAE_REPLAYED")


def test_unreachable_redemption_store_fails_closed(stack, redis_url):
    url, proc = redis_url
    verifier = stack.spawn_pep_verifier("pep_verifier_down", url)
    port = free_port()
    stack.spawn_pep("pep_down", port, free_port(), verifier)
    proc.terminate()
    proc.wait(10)
    token, jti = fresh_sae(stack)
    assert send(stack, token, port=port) == (403, "PEP_ERROR")
    assert executions(stack, jti) == 0


def test_an_executed_sae_is_recorded_in_the_redemption_file(stack):
    """What the verifier acknowledged is committed in the SQLite file another process reads."""
    token, jti = fresh_sae(stack)
    assert send(stack, token) == (200, None)
    import sqlite3

    db = sqlite3.connect(stack.workdir / "redeemed.sqlite3")
    assert db.execute("SELECT count(*) FROM redeemed WHERE jti = ?", (jti,)).fetchone() == (1,)

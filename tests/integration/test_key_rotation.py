"""Key rotation with the real parts: the authorizer follows its keyring, the PEP Envoy's jwt_authn and the PEP
verifier fetch the JWKS from the authorizer's admin endpoint (`remote_jwks`, never inlined). A rotation under
load fails no request; a retired key still verifies during its grace period and is refused after it."""

import json
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from joserfc import jws
from test_es256_envoy import _fresh_sae, receipts

from ext_authz.local.net import http_get_json, wait_until
from ext_authz.local.stack import LocalStack
from ext_authz.signing.file_key import load_file_signer
from ext_authz.signing.keyring import read_state

pytestmark = pytest.mark.slow
CACHE_SECONDS = 10  # the PEP's jwt_authn JWKS cache; the verifier refreshes every second


@pytest.fixture(scope="module")
def rotating(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("rotation"), rotating_keys=True, jwks_cache_seconds=CACHE_SECONDS) as s:
        yield s


def published(stack):
    return [k["kid"] for k in http_get_json(stack.jwks_url)["keys"]]


def rotate(stack, *flags):
    return subprocess.run([sys.executable, "-m", "ext_authz.cli", "keys", "rotate", "--key-dir", str(stack.key_dir), *flags],
                          capture_output=True, text=True, timeout=60)


def test_the_pep_fetches_the_jwks_from_the_authorizer_instead_of_inlining_it(rotating):
    provider = rotating.pep_conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["providers"]["sae"]
    assert "local_jwks" not in provider
    assert provider["remote_jwks"]["http_uri"]["uri"] == rotating.jwks_url
    assert provider["remote_jwks"]["cache_duration"] == f"{CACHE_SECONDS}s"
    state = read_state(rotating.key_dir)
    assert published(rotating) == [state.current.kid, state.next.kid]  # the next key is published before it signs


def test_rotation_too_soon_after_the_next_key_was_published_is_refused(rotating):
    out = rotate(rotating, "--min-published", "3600")
    assert out.returncode == 2 and "a PEP may not have fetched it yet" in out.stderr
    assert published(rotating)[0] == read_state(rotating.key_dir).current.kid


def test_rotation_under_load_fails_no_request_and_both_keys_executed(rotating):
    stack = rotating
    before = read_state(stack.key_dir)
    wait_until(lambda: time.time() - before.next.published > CACHE_SECONDS + 2, 60, "the next key to be in every cache")
    statuses: Counter = Counter()
    kids: Counter = Counter()
    failures: list = []
    stop = threading.Event()

    def load(n):
        i = 0
        while not stop.is_set():
            i += 1
            r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 100 + i, "to": f"vendor-{n}"})
            statuses[r.status] += 1
            if r.status != 200:
                failures.append((r.status, r.headers.get("x-sealgate-reason"), r.body[:200]))
                continue
            kids[jws.extract_compact(r.json()["sae"].encode()).headers()["kid"]] += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    try:
        wait_until(lambda: sum(kids.values()) >= 20, 60, "load before the rotation")
        out = rotate(stack, "--min-published", str(CACHE_SECONDS + 2), "--grace", "900")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: kids[before.next.kid] >= 20, 60, "load signed by the promoted key")
    finally:
        stop.set()
        [t.join() for t in threads]
    assert failures == [] and set(statuses) == {200}
    assert kids[before.current.kid] >= 20 and kids[before.next.kid] >= 20  # both sides of the switch executed
    after = read_state(stack.key_dir)
    assert after.current.kid == before.next.kid and after.retired[0].kid == before.current.kid
    assert published(stack) == [after.current.kid, after.next.kid, before.current.kid]  # retired: in its grace
    assert stack.status()["kid"] == after.current.kid


def test_a_retired_key_verifies_during_its_grace_and_is_refused_after_it(rotating):
    stack = rotating
    before = read_state(stack.key_dir)
    wait_until(lambda: time.time() - before.next.published > CACHE_SECONDS + 2, 60, "the next key to be in every cache")
    retiring = load_file_signer(stack.key_dir / before.current.file)  # the key an attacker might have kept
    grace = 4
    out = rotate(stack, "--min-published", str(CACHE_SECONDS + 2), "--grace", str(grace))
    assert out.returncode == 0, out.stderr
    body = json.dumps({"amount_cents": 100, "to": "vendor-42"}).encode()
    headers = {"content-type": "application/json"}

    in_grace = _fresh_sae(stack, retiring, "retired-in-grace", body)
    r = stack.pep_call("POST", "/v1/transfers", body, headers={**headers, "x-sae": in_grace})
    assert r.status == 200, r.body  # SAEs the key signed just before the switch still execute

    until = read_state(stack.key_dir).retired[0].retired_until
    wait_until(lambda: time.time() > until, grace + 5, "the end of the grace period")
    # the verifier drops the key at `retired_until` (published with it), not at its next fetch
    first = _fresh_sae(stack, retiring, "retired-after-grace-0", body)
    r = stack.pep_call("POST", "/v1/transfers", body, headers={**headers, "x-sae": first})
    assert r.status == 403 and r.headers["x-sealgate-reason"] == "SAE_INVALID", r.body
    wait_until(lambda: before.current.kid not in published(stack), 5, "the retired key to leave the JWKS")
    n = 0

    def refused_by_jwt_authn():
        nonlocal n
        n += 1
        late = _fresh_sae(stack, retiring, f"retired-after-grace-{n}", body)
        r = stack.pep_call("POST", "/v1/transfers", body, headers={**headers, "x-sae": late})
        assert r.status == 403 and r.headers["x-sealgate-reason"] == "SAE_INVALID", r.body
        return "did not verify" in r.json()["message"]  # the Lua's message: jwt_authn no longer has the key

    wait_until(refused_by_jwt_authn, CACHE_SECONDS + 15, "jwt_authn to drop the retired key (its cache duration)")
    executed = [jws.extract_compact(x["sae"].encode()).payload for x in receipts(stack)]
    assert not [p for p in executed if b"retired-after" in p]  # none of the retired key's late SAEs ran
    current = _fresh_sae(stack, stack.signer.current(), "current-after-grace", body)
    assert stack.pep_call("POST", "/v1/transfers", body, headers={**headers, "x-sae": current}).status == 200

"""ES256 end to end with the real parts: the authorizer signs with a P-256 key, the PEP Envoy's jwt_authn and
the PEP verifier accept it, the target executes; the high-s twin of a valid ES256 SAE (which jwt_authn
accepts) is stopped by the verifier and never executes."""

import base64
import hashlib
import json
import time

import pytest
from joserfc import jws

from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import SAE_TYP, EnvelopeEncoder, verify
from ext_authz.local.stack import AUDIENCE, AUTHORITY, LocalStack
from ext_authz.signing.ecdsa import P256_ORDER
from ext_authz.signing.file_key import P256Signer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def es256_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("es256"), sae_alg="ES256") as s:
        yield s


def receipts(stack):
    path = stack.workdir / "target-receipts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_authorizer_signs_es256_and_the_pep_lets_it_execute(es256_stack):
    stack = es256_stack
    assert [k["alg"] for k in stack.jwks["keys"]] == ["ES256"]
    r = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 50_000, "to": "vendor-42"})
    assert r.status == 200, r.body
    sae = r.json()["sae"]
    assert jws.extract_compact(sae.encode()).headers() == {"alg": "ES256", "kid": stack.signer.kid, "typ": SAE_TYP}
    assert verify(sae, stack.jwks, issuer=stack.issuer)["act"]["amt"] == "50000"
    assert sae in [x["sae"] for x in receipts(stack)]  # the target executed under this ES256 SAE
    denied = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 5_000_000, "to": "vendor-42"})
    assert denied.status == 403
    denial = denied.headers["x-sae-denial"]
    assert jws.extract_compact(denial.encode()).headers()["alg"] == "ES256"


def _fresh_sae(stack, signer, jti, body):
    now = int(time.time())
    claims = {"iss": stack.issuer, "sub": stack.spiffe_id("procurement-01"), "aud": AUDIENCE,
              "act": {"type": "payment.transfer", "m": "POST", "h": AUTHORITY, "p": "/v1/transfers", "amt": "100",
                      "dc": "internal", "bd": hashlib.sha256(body).hexdigest()},
              "pol": {"registry": stack.manifest.policy_registry, "id": stack.manifest.policy_id,
                      "addr": stack.manifest.policy, "ver": 1, "block": stack.manifest.deploy_block},
              "inp": {"kf": stack.agent_fingerprints["procurement-01"].hex(), "risk": 0},
              "mod": "sha256:" + "ab" * 32, "iat": now, "nbf": now, "exp": now + 60, "jti": jti,
              "ctx": {"sid": "s", "dc": "internal"}, "chain": {"id": 31337, "anchor": stack.manifest.anchor}}
    return EnvelopeEncoder(signer).encode(claims)


def _high_s_twin(token):
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    return f"{head}.{payload}.{b64url(raw[:32] + (P256_ORDER - int.from_bytes(raw[32:], 'big')).to_bytes(32, 'big'))}"


def test_the_high_s_twin_of_an_es256_sae_never_executes_though_jwt_authn_accepts_it(es256_stack):
    """The attacker holds one valid SAE and respells its signature (r, n - s): a second token, a second hash,
    the same claims. jwt_authn verifies it; the verifier refuses it; the original then executes once."""
    stack = es256_stack
    body = json.dumps({"amount_cents": 100, "to": "vendor-42"}).encode()
    sae = _fresh_sae(stack, stack.signer, "es256-high-s-attack", body)
    twin = _high_s_twin(sae)
    before = len(receipts(stack))
    r = stack.pep_call("POST", "/v1/transfers", body, headers={"x-sae": twin, "content-type": "application/json"})
    assert r.status == 403 and r.headers["x-sealgate-reason"] == "SAE_INVALID", r.body
    assert "low s" in r.json()["message"]
    assert len(receipts(stack)) == before  # nothing executed
    ok = stack.pep_call("POST", "/v1/transfers", body, headers={"x-sae": sae, "content-type": "application/json"})
    assert ok.status == 200, ok.body
    assert [x["sae"] for x in receipts(stack)[before:]] == [sae]


def test_an_es256_sae_from_a_key_the_pep_does_not_publish_is_refused_by_jwt_authn(es256_stack):
    stack = es256_stack
    body = json.dumps({"amount_cents": 100, "to": "vendor-42"}).encode()
    forged = _fresh_sae(stack, P256Signer.generate(), "es256-foreign-key", body)
    before = len(receipts(stack))
    r = stack.pep_call("POST", "/v1/transfers", body, headers={"x-sae": forged, "content-type": "application/json"})
    assert r.status == 403 and r.headers["x-sealgate-reason"] == "SAE_INVALID"
    assert len(receipts(stack)) == before

"""Interop: every valid vector and every token the decision path emits verifies with PyJWT (>= 2.10, which
refuses a non-string `sub`), pinning `iss` (and `aud` for SAEs), and carries no JSON null anywhere.

PyJWT is a test dependency (pyproject's `test` extra, requirements.lock). It also refuses the non-canonical
base64url vectors with changed low bits, as `jws.verify()` does (jwt_authn, jwcrypto, authlib and npm jose
accept them: the DESIGN review of 2026-12-01). Both algorithms: EdDSA and ES256 (P-256). PyJWT accepts the
high-s twin of an ES256 signature, which `jws.verify()` refuses (ext_authz.signing.ecdsa).
"""

import base64
import json
from pathlib import Path

import jwt
import pytest
from test_decision import ISSUER, JWKS, NOW, SIGNER, FixedPolicy, action, maker

from ext_authz import reasons
from ext_authz.authz.approvals import ApprovalVerifier, action_digest, sign_approval
from ext_authz.authz.decision import DecisionMaker
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, SAE_TYP, EnvelopeEncoder, verify
from ext_authz.errors import SaeInvalid
from ext_authz.server.config import AuthorizerConfig
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer, P256Signer

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_JWKS = json.loads((VECTORS / "jwks.json").read_text())
ALICE = Ed25519Signer(bytes([7]) * 32)
NO_TIME = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}  # the vectors' clock is fixed: time is ours


def nulls(value, where="$"):
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in nulls(v, f"{where}[{i}]")]
    return []


def segments(token):
    return [json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))) for s in token.split(".")[:2]]


def pyjwt_decode(token, jwk, *, issuer, audience=None):
    key = jwt.PyJWK({k: v for k, v in jwk.items() if k != "kid"}).key
    required = ["iss", "iat", "jti"] + (["aud", "exp", "nbf", "sub"] if audience else [])
    return jwt.decode(token, key, algorithms=["EdDSA", "ES256"], issuer=issuer, audience=audience,
                      options={**NO_TIME, "require": required})


def check_interop(token, jwk, *, issuer, audience=None):
    header, payload = segments(token)
    assert nulls(header) == [] and nulls(payload) == [], nulls(payload)
    assert header["typ"] in (SAE_TYP, DENIAL_TYP, APPROVAL_TYP)
    assert pyjwt_decode(token, jwk, issuer=issuer, audience=audience) == payload
    if "sub" in payload:
        assert isinstance(payload["sub"], str)
    if "act" in payload:
        assert isinstance(payload["act"]["amt"], str)  # RFC 7493 §2.2: no integer above 2**53 on the wire


def valid_vectors():
    return sorted(p for p in VECTORS.glob("*.json")
                  if p.name != "jwks.json" and not p.name.startswith("merkle_")
                  and json.loads(p.read_text())["expect"] == "VALID" and json.loads(p.read_text())["token"])


@pytest.mark.parametrize("path", valid_vectors(), ids=lambda p: p.stem)
def test_every_valid_vector_verifies_with_pyjwt(path):
    vec = json.loads(path.read_text())
    if path.name.startswith("approval_"):
        x = vec["approvers"]["alice"]
        check_interop(vec["token"], {"kty": "OKP", "crv": "Ed25519", "x": x}, issuer="alice")
        return
    header, payload = segments(vec["token"])
    check_interop(vec["token"], vector_key(header["kid"]), issuer=ISSUER, audience=payload.get("aud"))


def vector_key(kid):
    return next(k for k in VECTOR_JWKS["keys"] if k["kid"] == kid)


def test_the_vector_jwks_holds_one_key_per_algorithm():
    assert sorted(k["alg"] for k in VECTOR_JWKS["keys"]) == ["ES256", "EdDSA"]
    assert any(p.name.startswith(("sae_es256", "denial_es256")) for p in valid_vectors())


@pytest.mark.parametrize("name", ["sae_es256_high_s", "denial_es256_high_s"])
def test_high_s_twin_verifies_with_pyjwt_but_jws_verify_refuses_it(name):
    """ECDSA malleability: (r, n - s) is a second spelling of one signature, so a second hash of one envelope."""
    token = json.loads((VECTORS / f"{name}.json").read_text())["token"]
    header, payload = segments(token)
    assert pyjwt_decode(token, vector_key(header["kid"]), issuer=ISSUER, audience=payload.get("aud")) == payload
    with pytest.raises(SaeInvalid, match="low s"):
        verify(token, VECTOR_JWKS, typ=header["typ"], check_time=False)


@pytest.mark.parametrize("name", ["sae_noncanonical_signature", "sae_noncanonical_payload",
                                  "sae_noncanonical_standard_alphabet", "denial_noncanonical_signature"])
def test_pyjwt_also_refuses_the_malleated_vectors(name):
    with pytest.raises(jwt.DecodeError):
        pyjwt_decode(json.loads((VECTORS / f"{name}.json").read_text())["token"], VECTOR_JWKS["keys"][0], issuer=ISSUER,
                     audience="payments-api")


def es256_maker(policy):
    signer = P256Signer.generate()
    return signer, DecisionMaker(AuthorizerConfig(sae_ttl_seconds=45), EnvelopeEncoder(signer), policy, 31337, "0xAnchor",
                                 jwks_of(signer), clock=lambda: NOW)


@pytest.mark.parametrize("verdict", [("ALLOW", "OK"), ("DENY", "AMOUNT_OVER_LIMIT")])
def test_es256_tokens_the_decision_path_emits_verify_with_pyjwt_and_are_low_s(verdict):
    signer, m = es256_maker(FixedPolicy(*verdict))
    for i in range(16):  # half of raw ECDSA signatures have high s: every one must come out low
        token = m.decide(action(amount=1000 + i)).token
        header, _ = segments(token)
        assert header["alg"] == "ES256" and header["kid"] == signer.kid
        check_interop(token, signer.public_jwk(), issuer=ISSUER, audience="payments-api" if verdict[0] == "ALLOW" else None)
        assert verify(token, jwks_of(signer), typ=header["typ"], check_time=False)["iat"] == NOW


def emitted():
    """Every kind of token the decision path signs."""
    m = maker(FixedPolicy())
    allowed = m.decide(action())
    tokens = {
        "sae": allowed.token,
        "sae_without_session": m.decide(action(session_id=None)).token,
        "sae_with_parent": m.decide(action(parent_sae=allowed.token)).token,
        "sae_amount_max_uint256": m.decide(action(amount=2**256 - 1)).token,
        "denial_by_policy": maker(FixedPolicy("DENY", "AMOUNT_OVER_LIMIT")).decide(action()).token,
        "denial_awaiting_approval": maker(FixedPolicy("REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED")).decide(action()).token,
        "denial_before_policy": m.deny(reasons.ROUTE_UNKNOWN, "no route", principal="spiffe://sealgate.local/agent/b").token,
        "denial_with_action_before_policy": m.deny(reasons.POLICY_STATE_STALE, "stale", action()).token,
        "denial_unidentified": m.deny(reasons.IDENTITY_MISSING, "no peer").token,
    }
    held = action(amount=2_000_000)
    approval = sign_approval(ALICE, "alice", held.agent_spiffe_id, action_digest(held), now=NOW)
    approver = ApprovalVerifier(lambda name: ALICE.raw_public if name == "alice" else None, clock=lambda: NOW)
    approving = DecisionMaker(AuthorizerConfig(sae_ttl_seconds=45), EnvelopeEncoder(SIGNER),
                              FixedPolicy("REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED"), 31337, "0xAnchor", JWKS,
                              clock=lambda: NOW, approvals=approver)
    decided = approving.decide(action(amount=2_000_000, approval=approval))
    assert decided.allowed, decided.message
    tokens["sae_with_approval"] = decided.token
    return tokens, approval


TOKENS, APPROVAL = emitted()


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_every_token_the_decision_path_emits_verifies_with_pyjwt(name):
    token = TOKENS[name]
    typ = segments(token)[0]["typ"]
    check_interop(token, JWKS["keys"][0], issuer=ISSUER, audience="payments-api" if typ == SAE_TYP else None)


def test_the_approval_an_approver_signs_verifies_with_pyjwt():
    check_interop(APPROVAL, {"kty": "OKP", "crv": "Ed25519", "x": ALICE.public_jwk()["x"]}, issuer="alice")

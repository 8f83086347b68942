"""Decision logic with an in-memory policy evaluator (the real one runs in tests/integration)."""

import pytest

from ext_authz import reasons
from ext_authz.authz.actions import EMPTY_BODY_SHA256, ActionRequest
from ext_authz.authz.decision import DecisionMaker
from ext_authz.envelope.encoding import sae_hash
from ext_authz.envelope.jws import DENIAL_TYP, EnvelopeEncoder, verify
from ext_authz.errors import InputRejected
from ext_authz.policy.abi import Verdict
from ext_authz.server.config import AuthorizerConfig
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

SIGNER = Ed25519Signer(bytes(range(32)))
ISSUER = "spiffe://sealgate.local/sealgate/authorizer"  # AuthorizerConfig's default for sealgate.local
JWKS = jwks_of(SIGNER)
NOW = 1_800_000_000


class FixedPolicy:
    policy_registry = "0x00000000000000000000000000000000000000Aa"
    policy_id = b"\x22" * 32
    implementation = "0x00000000000000000000000000000000000000bB"

    def __init__(self, decision="ALLOW", reason="OK"):
        self.verdict = Verdict(decision, reason, b"\x11" * 32, 42, self.implementation, 3)
        self.calls = []

    def evaluate(self, action):
        self.calls.append(action)
        return self.verdict


def action(**kw):
    base = dict(agent_spiffe_id="spiffe://sealgate.local/agent/a", key_fingerprint=b"\x33" * 32,
                action_type="payment.transfer", target="payments-api",
                method="POST", authority="payments.internal", path="/v1/transfers", amount=500, data_class="internal",
                session_id="s-1", parent_sae=None)
    base.update(kw)
    return ActionRequest(**base)


def maker(policy, risk_scores=None):
    config = AuthorizerConfig(sae_ttl_seconds=45, risk_scores=risk_scores or {})
    return DecisionMaker(config, EnvelopeEncoder(SIGNER), policy, 31337, "0xAnchor", JWKS, clock=lambda: NOW)


def test_allow_carries_every_seed_claim_bound_to_the_request():
    d = maker(FixedPolicy()).decide(action())
    assert d.allowed and d.reason == "OK"
    c = verify(d.token, JWKS, now=NOW, issuer=ISSUER)
    assert (c["iss"], c["sub"], c["aud"]) == (ISSUER, "spiffe://sealgate.local/agent/a", "payments-api")
    assert c["act"] == {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers", "amt": "500",
                        "dc": "internal", "bd": EMPTY_BODY_SHA256}
    assert c["pol"] == {"registry": FixedPolicy.policy_registry, "id": "0x" + "22" * 32,
                        "addr": FixedPolicy.implementation, "ver": 3, "block": 42}
    assert c["mod"] == "sha256:" + "11" * 32
    assert (c["iat"], c["nbf"], c["exp"]) == (NOW, NOW, NOW + 45)
    assert c["jti"] == d.decision_id
    assert c["ctx"] == {"sid": "s-1", "dc": "internal"}  # no parent: omitted, never null
    assert c["chain"] == {"id": 31337, "anchor": "0xAnchor"}
    assert d.token_hash == sae_hash(d.token)


def test_policy_input_uses_hashed_names_class_level_key_and_operator_risk():
    policy = FixedPolicy()
    maker(policy, {"spiffe://sealgate.local/agent/a": 70}).decide(action(data_class="confidential"))
    from ext_authz.policy.abi import text_id

    sent = policy.calls[0]
    assert sent.agent_id == text_id("spiffe://sealgate.local/agent/a") and sent.data_class == 2 and sent.amount == 500
    assert sent.key_fingerprint == b"\x33" * 32 and sent.risk_score == 70
    maker(policy).decide(action())
    assert policy.calls[1].risk_score == 0  # no feed entry: 0, never an agent-supplied value


@pytest.mark.parametrize("decision,reason", [("DENY", "AMOUNT_OVER_LIMIT"), ("DENY", "AGENT_REVOKED"),
                                             ("REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED")])
def test_deny_is_a_signed_record_with_the_reason(decision, reason):
    d = maker(FixedPolicy(decision, reason)).decide(action())
    assert not d.allowed and d.reason == reason
    c = verify(d.token, JWKS, typ=DENIAL_TYP)
    assert c["reason"] == reason and c["dec"] == "DENY" and c["pol"]["block"] == 42 and c["jti"] == d.decision_id
    assert c["pol"]["addr"] == FixedPolicy.implementation and c["pol"]["ver"] == 3


def test_unknown_contract_reason_fails_closed():
    d = maker(FixedPolicy("ALLOW", "SOMETHING_NEW")).decide(action())
    assert not d.allowed and d.reason == reasons.POLICY_EVALUATION_FAILED


def test_parent_sae_is_verified_and_hashed():
    m = maker(FixedPolicy())
    parent = m.decide(action()).token
    child = verify(m.decide(action(parent_sae=parent)).token, JWKS, now=NOW)
    assert child["ctx"]["parent"] == sae_hash(parent).hex()


def test_forged_parent_is_rejected_before_the_policy_is_read():
    other = EnvelopeEncoder(Ed25519Signer(bytes(32)))
    policy = FixedPolicy()
    forged = other.encode({"iss": "x"})
    with pytest.raises(InputRejected) as err:
        maker(policy).decide(action(parent_sae=forged))
    assert err.value.reason == reasons.PARENT_SAE_INVALID and policy.calls == []


def test_denial_without_action_names_the_peer():
    d = maker(FixedPolicy()).deny(reasons.ROUTE_UNKNOWN, "no route", principal="spiffe://sealgate.local/agent/b")
    c = verify(d.token, JWKS, typ=DENIAL_TYP)
    assert (c["iss"], c["sub"], c["reason"]) == (ISSUER, "spiffe://sealgate.local/agent/b", "ROUTE_UNKNOWN")
    assert not {"act", "tgt"} & c.keys() and not {"addr", "ver", "block"} & c["pol"].keys()  # nothing read: omitted


def test_denial_before_any_identity_omits_sub():
    c = verify(maker(FixedPolicy()).deny(reasons.IDENTITY_MISSING, "no peer").token, JWKS, typ=DENIAL_TYP)
    assert c["iss"] == ISSUER and "sub" not in c


def test_a_denial_names_the_agent_and_the_target():
    c = verify(maker(FixedPolicy("DENY", "AMOUNT_OVER_LIMIT")).decide(action()).token, JWKS, typ=DENIAL_TYP)
    assert (c["iss"], c["sub"], c["tgt"], c["act"]["amt"]) == (ISSUER, "spiffe://sealgate.local/agent/a", "payments-api", "500")


def test_the_issuer_is_the_configured_one():
    config = AuthorizerConfig(issuer="https://authz.corp.example")
    m = DecisionMaker(config, EnvelopeEncoder(SIGNER), FixedPolicy(), 31337, "0xAnchor", JWKS, clock=lambda: NOW)
    assert verify(m.decide(action()).token, JWKS, now=NOW)["iss"] == "https://authz.corp.example"


# ------------------------------------------------------------------ the parent SAE (x-sae-parent)

BOB = "spiffe://sealgate.local/agent/b"


def _parent_refused(m, child):
    with pytest.raises(InputRejected) as err:
        m.decide(child)
    return err.value.reason == reasons.PARENT_SAE_INVALID


def test_parent_sae_of_another_agent_outside_the_session_is_refused():
    m = maker(FixedPolicy())
    parent = m.decide(action(agent_spiffe_id=BOB, session_id="bobs-session")).token
    assert _parent_refused(m, action(parent_sae=parent, session_id="s-1"))


def test_parent_sae_of_another_agent_without_sessions_is_refused():
    m = maker(FixedPolicy())
    parent = m.decide(action(agent_spiffe_id=BOB, session_id=None)).token
    assert _parent_refused(m, action(parent_sae=parent, session_id=None))  # "no session" is not a shared session


def test_parent_sae_of_another_agent_in_the_same_session_is_accepted():
    m = maker(FixedPolicy())
    parent = m.decide(action(agent_spiffe_id=BOB, session_id="workflow-9")).token
    child = verify(m.decide(action(parent_sae=parent, session_id="workflow-9")).token, JWKS, now=NOW)
    assert child["ctx"]["parent"] == sae_hash(parent).hex()


def test_parent_sae_of_the_same_agent_in_another_session_is_accepted():
    m = maker(FixedPolicy())
    parent = m.decide(action(session_id="earlier")).token
    assert verify(m.decide(action(parent_sae=parent, session_id=None)).token, JWKS, now=NOW)["ctx"]["parent"]


def test_parent_sae_from_another_issuer_is_refused():
    """Signed with the authorizer's key, but naming another issuer: not this authorizer's SAE."""
    other = DecisionMaker(AuthorizerConfig(issuer="spiffe://sealgate.local/sealgate/other"), EnvelopeEncoder(SIGNER),
                          FixedPolicy(), 31337, "0xAnchor", JWKS, clock=lambda: NOW)
    assert _parent_refused(maker(FixedPolicy()), action(parent_sae=other.decide(action()).token))


def test_noncanonical_parent_sae_is_refused():
    m = maker(FixedPolicy())
    head, payload, sig = m.decide(action()).token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    malleated = f"{head}.{payload}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) | 1]}"  # same signature bytes
    assert _parent_refused(m, action(parent_sae=malleated))


def test_parent_sae_of_format_version_1_is_refused():
    m = maker(FixedPolicy())
    claims = verify(m.decide(action()).token, JWKS, now=NOW)
    from ext_authz.envelope.encoding import b64url, canonical_json

    signing_input = (f"{b64url(canonical_json({'alg': 'EdDSA', 'kid': SIGNER.kid, 'typ': 'application/sae+jwt'}))}."
                     f"{b64url(canonical_json(claims))}")
    v1 = f"{signing_input}.{b64url(SIGNER.sign(signing_input.encode()))}"
    assert _parent_refused(m, action(parent_sae=v1))


def test_decision_ids_are_unique_url_safe_128_bit_values():
    import base64
    import re

    from ext_authz.authz.decision import DecisionIds

    ids = DecisionIds()
    made = [ids() for _ in range(3 * DecisionIds.BATCH + 7)]  # across several buffer refills
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in made)
    assert len(base64.urlsafe_b64decode(made[0] + "==")) == 16


def test_a_forked_child_never_repeats_the_parents_next_decision_ids():
    import os

    from ext_authz.authz.decision import DecisionIds

    ids = DecisionIds()
    ids()  # the buffer now holds the parent's next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next ids, then leave without running pytest's teardown
        os.write(write, ",".join(ids() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split(",")
    os.waitpid(pid, 0)
    parent = [ids() for _ in range(4)]
    assert len(child) == 4 and not set(child) & set(parent)

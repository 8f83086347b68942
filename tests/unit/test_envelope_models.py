"""The typed envelopes: exact claims on the wire, round trips, and what from_claims() refuses."""

import dataclasses

import pytest
from test_decision import JWKS, NOW, SIGNER, FixedPolicy, action, maker

from ext_authz import reasons
from ext_authz.authz import decision
from ext_authz.authz.approvals import action_digest, digest_of
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, SAE_TYP, EnvelopeEncoder
from ext_authz.envelope.models import (
    FORMAT_VERSION,
    Action,
    Approval,
    ApprovalRef,
    ChainRef,
    Context,
    Denial,
    PolicyInputs,
    PolicyRef,
    Sae,
    verify_approval,
    verify_denial,
    verify_sae,
)
from ext_authz.errors import SaeInvalid
from ext_authz.signing.file_key import Ed25519Signer

ISSUER = "spiffe://t/sealgate/authorizer"
ACT = Action("payment.transfer", "POST", "payments.internal", "/v1/transfers", 500, "internal", "ab" * 32)
POL = PolicyRef("0xRegistry", "0x" + "22" * 32, "0xImpl", 3, 42)
CHAIN = ChainRef(31337, "0xAnchor")
INP = PolicyInputs("ef" * 32, 30)
SAE = Sae(ISSUER, "spiffe://t/agent/a", "payments-api", ACT, POL, INP, "sha256:" + "11" * 32, NOW, NOW, NOW + 45, "j-1",
          Context("s-1", None, "internal"), CHAIN)
APR = ApprovalRef("alice", "apr-1", "cd" * 32, "header.payload.signature")
DENIAL = Denial(ISSUER, "spiffe://t/agent/a", "payments-api", ACT, POL, NOW, "d-1", "AMOUNT_OVER_LIMIT", "over the limit", CHAIN,
                inputs=INP)
APPROVAL = Approval("alice", "spiffe://t/agent/a", "cd" * 32, NOW, NOW + 300, "apr-1")


def payload(token):
    import base64

    p = token.split(".")[1]
    return base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))


def test_decision_payloads_are_byte_for_byte_format_version_3(monkeypatch):
    """Pinned: what the decision signs, byte for byte (format version 3: iss the authorizer, sub the agent,
    amt a decimal string, no nulls, the policy inputs in inp)."""
    monkeypatch.setattr(decision, "new_decision_id", lambda: "fixed-id")
    m = maker(FixedPolicy())
    assert payload(m.decide(action()).token) == (
        b'{"act":{"amt":"500","bd":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","dc":"internal",'
        b'"h":"payments.internal","m":"POST","p":"/v1/transfers","type":"payment.transfer"},"aud":"payments-api",'
        b'"chain":{"anchor":"0xAnchor","id":31337},"ctx":{"dc":"internal","sid":"s-1"},"exp":1800000045,'
        b'"iat":1800000000,"inp":{"kf":"' + b"33" * 32 + b'","risk":0},'
        b'"iss":"spiffe://sealgate.local/sealgate/authorizer","jti":"fixed-id","mod":"sha256:'
        + b"11" * 32 + b'",'
        b'"nbf":1800000000,"pol":{"addr":"0x00000000000000000000000000000000000000bB","block":42,"id":"0x' + b"22" * 32 + b'",'
        b'"registry":"0x00000000000000000000000000000000000000Aa","ver":3},"sub":"spiffe://sealgate.local/agent/a"}')
    assert payload(m.deny(reasons.ROUTE_UNKNOWN, "x" * 300, principal="spiffe://t/agent/b").token) == (
        b'{"chain":{"anchor":"0xAnchor","id":31337},"dec":"DENY","iat":1800000000,'
        b'"iss":"spiffe://sealgate.local/sealgate/authorizer",'
        b'"jti":"fixed-id","msg":"' + b"x" * 256 + b'","pol":{"id":"0x' + b"22" * 32 + b'",'
        b'"registry":"0x00000000000000000000000000000000000000Aa"},"reason":"ROUTE_UNKNOWN","sub":"spiffe://t/agent/b"}')
    assert b'"sub"' not in payload(m.deny(reasons.IDENTITY_MISSING, "no peer").token)  # omitted, never null


def test_the_approval_digest_is_pinned():
    """Pinned: the digest the approver signs, over {sub, type, tgt, m, h, p, amt (a decimal string), dc, bd}."""
    import hashlib

    from ext_authz.envelope.encoding import canonical_json

    act = action(amount=2_000_000)
    expected = hashlib.sha256(canonical_json({
        "sub": act.agent_spiffe_id, "type": "payment.transfer", "tgt": "payments-api", "m": "POST",
        "h": "payments.internal", "p": "/v1/transfers", "amt": "2000000", "dc": "internal", "bd": act.body_sha256,
    })).hexdigest()
    assert action_digest(act) == expected == "9cb7fbd440e051c43ac332078b057c137b82528a27e1ed061540111b7d30e6b7"
    act = action(amount=2_000_000)
    assert digest_of(act.agent_spiffe_id, act.target, Action.of(act).to_claims()) == action_digest(act)
    assert digest_of(act.agent_spiffe_id, act.target, Action.of(act)) == action_digest(act)


def test_what_the_decision_signs_reads_back_as_the_models():
    m = maker(FixedPolicy())
    sae = verify_sae(m.decide(action()).token, JWKS, now=NOW)
    assert sae.action == Action.of(action()) and sae.policy.block == 42 and sae.approval is None
    held = verify_denial(maker(FixedPolicy("REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED")).decide(action()).token, JWKS)
    assert held.reason == reasons.HUMAN_APPROVAL_REQUIRED and held.approval_request == action_digest(action())
    early = verify_denial(m.deny(reasons.IDENTITY_MISSING, "no peer").token, JWKS)
    assert (early.issuer, early.subject, early.target, early.action, early.policy.block) == (
        "spiffe://sealgate.local/sealgate/authorizer", None, None, None, None)


@pytest.mark.parametrize("envelope,model", [
    (SAE, Sae), (dataclasses.replace(SAE, approval=APR, context=Context(None, "ef" * 32, "internal")), Sae),
    (DENIAL, Denial), (dataclasses.replace(DENIAL, approval_request="cd" * 32), Denial),
    (Denial(ISSUER, None, None, None, PolicyRef("0xRegistry", "0x" + "22" * 32, None, None, None), NOW, "d-2",
            "IDENTITY_MISSING", "", CHAIN), Denial),
    (APPROVAL, Approval),
], ids=["sae", "sae_with_approval_and_parent", "denial", "denial_awaiting_approval", "denial_before_anything_was_read", "approval"])
def test_round_trip(envelope, model):
    claims = envelope.to_claims()
    assert model.from_claims(claims) == envelope
    assert claims is not envelope.to_claims()  # a fresh dict each time: callers may change theirs


def _nulls(value, where=""):
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    return []


def test_absent_optional_claims_are_omitted_not_null():
    assert "apr" not in SAE.to_claims() and "apr" in dataclasses.replace(SAE, approval=APR).to_claims()
    assert "apr_req" not in DENIAL.to_claims()
    assert SAE.to_claims()["ctx"] == {"sid": "s-1", "dc": "internal"}  # no parent
    assert dataclasses.replace(SAE, context=Context(None, None, "internal")).to_claims()["ctx"] == {"dc": "internal"}
    early = Denial(ISSUER, None, None, None, PolicyRef("0xRegistry", "0x" + "22" * 32, None, None, None), NOW, "d-2",
                   "IDENTITY_MISSING", "", CHAIN).to_claims()
    assert not {"sub", "tgt", "act", "apr_req"} & early.keys() and early["pol"].keys() == {"registry", "id"}
    for envelope in (SAE, DENIAL, APPROVAL, early):
        claims = envelope if isinstance(envelope, dict) else envelope.to_claims()
        assert _nulls(claims) == [], claims


def test_amounts_are_decimal_strings_up_to_uint256():
    big = dataclasses.replace(ACT, amount=2**256 - 1)
    assert big.to_claims()["amt"] == str(2**256 - 1) and Action.from_claims(big.to_claims()) == big
    assert ACT.to_claims()["amt"] == "500"


def test_each_envelope_names_its_media_type_and_format_version():
    assert (Sae.TYP, Denial.TYP, Approval.TYP) == (SAE_TYP, DENIAL_TYP, APPROVAL_TYP)
    assert Sae.FORMAT_VERSION == Denial.FORMAT_VERSION == FORMAT_VERSION == 3
    assert Approval.FORMAT_VERSION == 2  # its claims did not change when the policy inputs were added
    assert (SAE_TYP, DENIAL_TYP, APPROVAL_TYP) == (
        "application/sae.v3+jwt", "application/sae-denial.v3+jwt", "application/sae-approval.v2+jwt")
    assert "ver" not in SAE.to_claims()  # the version is the typ (the PEP's Lua compares it exactly)


def test_models_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SAE.jti = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ACT.amount = 1  # type: ignore[misc]


def _sae(**changes):
    return {**SAE.to_claims(), **changes}


def _act(**changes):
    return _sae(act={**ACT.to_claims(), **changes})


@pytest.mark.parametrize("claims,names", [
    ("not an object", "payload"),
    ({k: v for k, v in SAE.to_claims().items() if k != "ctx"}, "ctx"),
    (_sae(ver=1), "ver"),
    (_sae(iss=""), "iss"),
    (_sae(iss="authorizer"), "iss"),
    (_sae(sub=None), "sub"),
    (_sae(aud=["payments-api"]), "aud"),
    (_sae(iat=True), "iat"),
    (_sae(exp=1.5), "exp"),
    (_sae(mod="md5:00"), "mod"),
    (_sae(act=None), "act"),
    (_act(amt=str(2**256)), "act.amt"),
    (_act(amt=500), "act.amt"),
    (_act(amt="0500"), "act.amt"),
    (_act(amt="+500"), "act.amt"),
    (_act(amt="5e2"), "act.amt"),
    (_act(bd="AB" * 32), "act.bd"),
    (_act(m=None), "act.m"),
    (_act(extra=1), "extra"),
    (_sae(pol={**POL.to_claims(), "ver": None}), "pol.ver"),
    (_sae(pol={**POL.to_claims(), "id": "22" * 32}), "pol.id"),
    (_sae(ctx={"sid": 7, "dc": "internal"}), "ctx.sid"),
    (_sae(ctx={"sid": None, "dc": "internal"}), "ctx.sid"),
    (_sae(ctx={"parent": None, "dc": "internal"}), "ctx.parent"),
    (_sae(ctx={"parent": "not-a-hash", "dc": "internal"}), "ctx.parent"),
    (_sae(chain={"id": "31337", "anchor": "0xAnchor"}), "chain.id"),
    (_sae(apr={**APR.to_claims(), "tok": None}), "apr.tok"),
    (_sae(apr={**APR.to_claims(), "jti": "j" * 129}), "apr.jti"),
], ids=["payload_not_object", "ctx_missing", "unknown_claim", "iss_empty", "iss_not_a_uri", "sub_null", "aud_not_string",
        "iat_bool", "exp_float", "mod_not_sha256", "act_null", "amount_beyond_uint256", "amount_json_number",
        "amount_leading_zero", "amount_with_sign", "amount_exponent", "body_digest_upper_case", "method_null",
        "act_unknown_member", "pol_ver_null_in_an_sae", "pol_id_without_0x", "ctx_sid_number", "ctx_sid_null",
        "ctx_parent_null", "ctx_parent_not_hex", "chain_id_string", "apr_without_token", "apr_jti_too_long"])
def test_sae_from_claims_refuses(claims, names):
    with pytest.raises(SaeInvalid) as err:
        Sae.from_claims(claims)
    assert err.value.reason == reasons.SAE_INVALID and names in err.value.message, err.value.message


@pytest.mark.parametrize("changes,names", [
    ({"dec": "ALLOW"}, "dec"),
    ({"reason": "over limit"}, "reason"),
    ({"msg": "x" * 257}, "msg"),
    ({"apr_req": "xyz"}, "apr_req"),
    ({"sub": 7}, "sub"),
    ({"sub": None}, "sub"),
    ({"act": {"type": "payment.transfer"}}, "act"),
    ({"act": None}, "act"),
    ({"tgt": None}, "tgt"),
    ({"pol": {**POL.to_claims(), "addr": None}}, "pol.addr"),
    ({"pol": {"registry": "0xRegistry", "id": "0x" + "22" * 32, "block": 42}}, "pol"),
    ({"iss": "spiffe://t/agent/a agent"}, "iss"),
], ids=["dec_not_deny", "reason_not_a_code", "msg_too_long", "apr_req_not_a_digest", "sub_number", "sub_null",
        "act_incomplete", "act_null", "tgt_null", "pol_addr_null", "pol_partly_read", "iss_not_a_uri"])
def test_denial_from_claims_refuses(changes, names):
    with pytest.raises(SaeInvalid) as err:
        Denial.from_claims({**DENIAL.to_claims(), **changes})
    assert err.value.reason == reasons.SAE_INVALID and names in err.value.message, err.value.message


@pytest.mark.parametrize("changes,names", [
    ({"jti": ""}, "jti"), ({"jti": "j" * 129}, "jti"), ({"req": "cd" * 31}, "req"), ({"exp": "soon"}, "exp"),
    ({"aud": "x"}, "aud"),
], ids=["jti_empty", "jti_too_long", "req_short", "exp_string", "unknown_claim"])
def test_approval_from_claims_refuses(changes, names):
    with pytest.raises(SaeInvalid) as err:
        Approval.from_claims({**APPROVAL.to_claims(), **changes})
    assert err.value.reason == reasons.SAE_INVALID and names in err.value.message, err.value.message


def test_typed_verification_checks_the_token_first():
    alice = Ed25519Signer(bytes([7]) * 32)
    token = EnvelopeEncoder(alice, kid="alice").encode(APPROVAL.to_claims(), APPROVAL_TYP)
    keys = {"keys": [{**alice.public_jwk(), "kid": "alice"}]}
    assert verify_approval(token, keys) == APPROVAL
    with pytest.raises(SaeInvalid) as err:
        verify_sae(token, keys, now=NOW)
    assert err.value.reason == reasons.SAE_TYPE_INVALID
    with pytest.raises(SaeInvalid):
        verify_denial(EnvelopeEncoder(SIGNER).encode(DENIAL.to_claims(), DENIAL_TYP), {"keys": [alice.public_jwk()]})


def test_digest_of_malformed_act_claims_is_sae_invalid():
    """`sealgate verify` recomputes the digest from an SAE's act: a malformed one is refused, not guessed."""
    with pytest.raises(SaeInvalid):
        digest_of("spiffe://t/agent/a", "payments-api", {**ACT.to_claims(), "amt": 500})


def test_the_policy_inputs_ride_in_the_sae_and_in_a_denial_made_after_the_policy_was_read():
    assert SAE.to_claims()["inp"] == {"kf": "ef" * 32, "risk": 30}
    assert Sae.from_claims(SAE.to_claims()).inputs == INP
    assert Denial.from_claims(DENIAL.to_claims()).inputs == INP
    with pytest.raises(SaeInvalid, match="inp"):  # a denial of an evaluated policy without its inputs
        Denial.from_claims({k: v for k, v in DENIAL.to_claims().items() if k != "inp"})
    with pytest.raises(SaeInvalid, match="inp.risk"):
        Sae.from_claims({**SAE.to_claims(), "inp": {"kf": "ef" * 32, "risk": 256}})

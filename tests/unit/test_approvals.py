"""Human approval of REQUIRE_APPROVAL actions: the pure logic, with an in-memory policy.

The whole flow through Envoy, the authorizer process and the on-chain threshold is in
tests/integration/test_end_to_end.py.
"""

import pytest
from test_decision import JWKS, NOW, SIGNER, FixedPolicy, action

from ext_authz import reasons
from ext_authz.authz.approvals import MAX_APPROVAL_SECONDS, ApprovalVerifier, action_digest, sign_approval
from ext_authz.authz.decision import DecisionMaker
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, EnvelopeEncoder, verify
from ext_authz.errors import ConfigError
from ext_authz.server.config import AuthorizerConfig
from ext_authz.signing.file_key import Ed25519Signer

ALICE = Ed25519Signer(bytes([7]) * 32)
MALLORY = Ed25519Signer(bytes([9]) * 32)
REGISTRY = {"alice": ALICE.raw_public}  # stands in for the on-chain ApproverRegistry at the pinned block


def maker(decision="REQUIRE_APPROVAL", reason="HUMAN_APPROVAL_REQUIRED", registry=REGISTRY, approvals=True):
    checker = ApprovalVerifier(registry.get, clock=lambda: NOW) if approvals else None
    return DecisionMaker(AuthorizerConfig(), EnvelopeEncoder(SIGNER), FixedPolicy(decision, reason), 31337, "0xAnchor", JWKS,
                         clock=lambda: NOW, approvals=checker)


def approval_for(act, signer=ALICE, name="alice", ttl=300, now=NOW, **claims):
    if not claims:
        return sign_approval(signer, name, act.agent_spiffe_id, action_digest(act), ttl, now=now)
    # hand-made, with other claims, signed by the same key (sign_approval would refuse some of them)
    payload = {"iss": name, "sub": act.agent_spiffe_id, "req": action_digest(act), "iat": now, "exp": now + ttl,
               "jti": "hand-made", **claims}
    return EnvelopeEncoder(signer, kid=name).encode(payload, APPROVAL_TYP)


def test_without_an_approval_the_denial_names_what_to_approve():
    act = action(amount=2_000_000)
    d = maker().decide(act)
    assert (d.allowed, d.reason, d.approval_request) == (False, reasons.HUMAN_APPROVAL_REQUIRED, action_digest(act))
    assert verify(d.token, JWKS, typ=DENIAL_TYP)["apr_req"] == action_digest(act)


def test_an_approval_of_exactly_this_action_allows_it_once_and_the_sae_names_it():
    act = action(amount=2_000_000)
    act = action(amount=2_000_000, approval=approval_for(act))
    decider = maker()
    d = decider.decide(act)
    assert d.allowed, d.message
    claims = verify(d.token, JWKS, now=NOW)
    assert claims["apr"]["by"] == "alice" and claims["apr"]["req"] == action_digest(act) and claims["apr"]["jti"]
    again = decider.decide(act)
    assert (again.allowed, again.reason) == (False, reasons.APPROVAL_REPLAYED)


@pytest.mark.parametrize("change,expected", [
    ({"amount": 2_000_001}, reasons.APPROVAL_MISMATCH),
    ({"agent_spiffe_id": "spiffe://sealgate.local/agent/b"}, reasons.APPROVAL_MISMATCH),
    ({"path": "/v1/transfers?to=elsewhere"}, reasons.APPROVAL_MISMATCH),
    ({"target": "other-api"}, reasons.APPROVAL_MISMATCH),
    ({"body_sha256": "ab" * 32}, reasons.APPROVAL_MISMATCH),
], ids=["other_amount", "other_agent", "other_path", "other_target", "other_body_same_amount"])
def test_an_approval_of_another_action_does_not_transfer(change, expected):
    approved = action(amount=2_000_000)
    presented = action(**{"amount": 2_000_000, **change, "approval": approval_for(approved)})
    d = maker().decide(presented)
    assert (d.allowed, d.reason) == (False, expected)
    assert d.approval_request == action_digest(presented)


@pytest.mark.parametrize("make,expected", [
    (lambda a: approval_for(a, now=NOW - 400), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, ttl=MAX_APPROVAL_SECONDS + 1, jti="j"), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, now=NOW + 60), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, signer=MALLORY, name="mallory"), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, signer=MALLORY, name="alice"), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, iss="bob"), reasons.APPROVAL_INVALID),
    (lambda a: approval_for(a, iat="now"), reasons.APPROVAL_INVALID),
    (lambda a: EnvelopeEncoder(ALICE, kid="alice").encode({"iss": "alice", "sub": a.agent_spiffe_id}), reasons.APPROVAL_INVALID),
    (lambda a: "not.a.jws", reasons.APPROVAL_INVALID),
    (lambda a: EnvelopeEncoder(ALICE, kid="Alice!").encode({"iss": "Alice!"}, APPROVAL_TYP), reasons.APPROVAL_INVALID),
], ids=["expired", "lifetime_over_15_min", "issued_in_the_future", "unknown_approver", "signed_by_another_key",
        "iss_is_not_the_signer", "iat_not_an_integer", "an_sae_is_not_an_approval", "garbage", "kid_not_a_name"])
def test_approvals_that_do_not_verify_are_refused(make, expected):
    act = action(amount=2_000_000)
    d = maker().decide(action(amount=2_000_000, approval=make(act)))
    assert (d.allowed, d.reason) == (False, expected)


def test_an_approval_is_not_consumed_where_none_is_needed():
    act = action(amount=500)
    token = approval_for(act)
    assert maker("ALLOW", "OK").decide(action(amount=500, approval=token)).allowed  # below the threshold: ignored
    assert maker("DENY", "AGENT_REVOKED").decide(action(amount=500, approval=token)).reason == "AGENT_REVOKED"
    checker = ApprovalVerifier(REGISTRY.get, clock=lambda: NOW)
    assert checker.verify(token, act)["iss"] == "alice"  # still unused


def test_an_approver_revoked_in_the_registry_approves_nothing():
    act = action(amount=2_000_000)
    d = maker(registry={}).decide(action(amount=2_000_000, approval=approval_for(act)))
    assert (d.allowed, d.reason) == (False, reasons.APPROVAL_INVALID)
    assert "not registered or was revoked" in d.message


def test_without_an_approval_checker_the_action_stays_held():
    act = action(amount=2_000_000)
    d = maker(approvals=False).decide(action(amount=2_000_000, approval=approval_for(act)))
    assert (d.allowed, d.reason) == (False, reasons.HUMAN_APPROVAL_REQUIRED)


def test_a_registry_read_failure_propagates_so_the_edge_fails_closed():
    from ext_authz.errors import StateStale

    def stale(name):
        raise StateStale("pinned block 7 unconfirmed for 20s")

    act = action(amount=2_000_000)
    with pytest.raises(StateStale):
        maker(registry=type("R", (), {"get": staticmethod(stale)})()).decide(action(amount=2_000_000, approval=approval_for(act)))


def test_lifetime_is_capped_when_signing():
    with pytest.raises(ConfigError, match="1-900"):
        sign_approval(ALICE, "alice", "spiffe://sealgate.local/agent/a", "00" * 32, ttl_seconds=901)


def test_approver_cli_signs_only_denials_of_this_authorizer_that_ask_for_approval(tmp_path, capsys):
    import json

    from ext_authz.cli import main

    assert main(["approver", "keygen", "--out", str(tmp_path / "alice.seed")]) == 0
    jwk = json.loads(capsys.readouterr().out)
    assert set(jwk) == {"kty", "crv", "x"}
    assert main(["approver", "keygen", "--out", str(tmp_path / "alice.seed")]) == 2  # never overwritten
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    act = action(amount=2_000_000)
    held = maker().decide(act).token
    args = ["approver", "sign", "--jwks", str(tmp_path / "jwks.json"), "--name", "alice", "--key", str(tmp_path / "alice.seed")]
    capsys.readouterr()
    assert main([*args, "--denial", held]) == 0
    approval = capsys.readouterr().out.strip()
    keys = {"keys": [{**jwk, "kid": "alice"}]}
    claims = verify(approval, keys, typ=APPROVAL_TYP, check_time=False)
    assert (claims["sub"], claims["req"]) == (act.agent_spiffe_id, action_digest(act))
    foreign = DecisionMaker(AuthorizerConfig(), EnvelopeEncoder(MALLORY), FixedPolicy("REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED"),
                            31337, "0xAnchor", JWKS, clock=lambda: NOW).decide(act).token
    assert main([*args, "--denial", foreign]) == 2
    assert "not a denial signed by this authorizer" in capsys.readouterr().err

"""The whole path with real parts: agent mTLS -> sidecar Envoy -> authorizer (pyrevm on anvil
state) -> PEP Envoy (jwt_authn + Lua) -> target; anchoring and `sealgate verify`.

Tests run in file order; the last ones stop anvil and the authorizer.
"""

import hashlib
import json
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz.envelope.encoding import b64url, canonical_json, sae_hash
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, EnvelopeEncoder, verify
from ext_authz.errors import SealgateError
from ext_authz.local.net import wait_until
from ext_authz.local.pki import LocalCA
from ext_authz.signing.file_key import Ed25519Signer

pytestmark = pytest.mark.slow

TRANSFER = {"amount_cents": 50_000, "to": "vendor-42"}


def transfer(stack, agent="procurement-01", amount=50_000, **kw):
    return stack.agent_call(agent, "POST", "/v1/transfers", {"amount_cents": amount, "to": "vendor-42"}, **kw)


def reason(resp):
    return resp.headers.get("x-sealgate-reason")


def sae_claims(stack, token):
    return verify(token, stack.jwks, issuer=stack.issuer)


def test_allowed_action_executes_with_a_bound_sae(stack):
    r = transfer(stack)
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["executed"] is True
    c = sae_claims(stack, doc["sae"])
    assert (c["iss"], c["sub"], c["aud"]) == (stack.issuer, stack.spiffe_id("procurement-01"), "payments-api")
    assert stack.issuer == "spiffe://sealgate.local/sealgate/authorizer"  # the local stack's config names it
    assert c["act"] == {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers",
                        "amt": "50000", "dc": "internal", "bd": hashlib.sha256(json.dumps(TRANSFER).encode()).hexdigest()}
    assert c["pol"]["addr"] == stack.manifest.policy and c["pol"]["block"] >= stack.manifest.deploy_block
    assert c["pol"]["registry"] == stack.manifest.policy_registry and c["pol"]["id"] == stack.manifest.policy_id
    assert c["pol"]["ver"] == 1
    sha = next(m["sha256"] for m in stack.spec["models"] if m["id"] == "demo-model-v1")
    assert c["mod"] == "sha256:" + sha
    assert c["chain"] == {"id": 31337, "anchor": stack.manifest.anchor}
    assert 30 <= c["exp"] - c["iat"] <= 300


def test_agent_forged_sae_header_is_overwritten(stack):
    forged = EnvelopeEncoder(Ed25519Signer(bytes(32))).encode({"iss": "me", "act": {"amt": 10**12}})
    r = transfer(stack, headers={"x-sae": forged})
    assert r.status == 200
    received = r.json()["sae"]
    assert received != forged and "," not in received  # not appended either
    assert sae_claims(stack, received)["act"]["amt"] == "50000"


def test_over_limit_is_denied_with_json_body_and_signed_denial(stack):
    r = transfer(stack, amount=5_000_000)
    assert r.status == 403 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["reason_code"] == "AMOUNT_OVER_LIMIT" and body["message"]
    denial = verify(r.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)
    assert denial["reason"] == "AMOUNT_OVER_LIMIT" and denial["jti"] == body["decision_id"]
    assert denial["act"]["amt"] == "5000000" and denial["iss"] == stack.issuer
    assert denial["sub"] == stack.spiffe_id("procurement-01") and denial["tgt"] == "payments-api"


@pytest.mark.parametrize("method,path,body,expected", [
    ("POST", "/v1/unknown", TRANSFER, "ROUTE_UNKNOWN"),
    ("POST", "/v1/transfers", b"amount=5", "BODY_INVALID"),
    ("POST", "/v1/transfers", {"amount_cents": "lots"}, "AMOUNT_INVALID"),
    ("POST", "/v1/exports", {}, "ACTION_NOT_PERMITTED"),
])
def test_request_mapping_denials(stack, method, path, body, expected):
    r = stack.agent_call("procurement-01", method, path, body)
    assert (r.status, reason(r), r.json()["reason_code"]) == (403, expected, expected)
    assert verify(r.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["reason"] == expected


def test_data_class_and_human_approval_rules(stack):
    block = stack.set_rule("procurement", "data.export", "payments-api", max_amount=0, data_classes=["public", "internal"]).blockNumber
    stack.wait_pinned(block)
    r = stack.agent_call("procurement-01", "POST", "/v1/exports", {})
    assert reason(r) == "DATA_CLASS_NOT_PERMITTED"
    r = transfer(stack, agent="finance-03", amount=2_000_000)
    assert reason(r) == "HUMAN_APPROVAL_REQUIRED"
    assert transfer(stack, agent="finance-03", amount=900_000).status == 200


def test_over_the_approval_threshold_a_persons_approval_lets_exactly_that_action_through_once(stack):
    big = {"amount_cents": 2_000_000, "to": "vendor-42"}
    held = transfer(stack, agent="finance-03", amount=2_000_000)
    assert held.status == 403 and reason(held) == "HUMAN_APPROVAL_REQUIRED"
    request = held.json()["approval_request"]
    assert verify(held.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["apr_req"] == request
    with pytest.raises(SealgateError, match="pass --body"):
        stack.approve(held.headers["x-sae-denial"])  # a person must see what they approve
    with pytest.raises(SealgateError, match="not the one the agent sent"):
        stack.approve(held.headers["x-sae-denial"], {**big, "to": "vendor-7"})

    approval = stack.approve(held.headers["x-sae-denial"], big)  # `sealgate approver sign`, checked against the JWKS
    done = transfer(stack, agent="finance-03", amount=2_000_000, headers={"x-sealgate-approval": approval})
    assert done.status == 200, done.body
    claims = sae_claims(stack, done.json()["sae"])
    assert claims["apr"]["by"] == "treasury-lead" and claims["apr"]["req"] == request
    assert "x-sealgate-approval" not in done.json()["header_names"]  # the sidecar strips it
    assert "x-sae" in done.json()["header_names"]

    replayed = transfer(stack, agent="finance-03", amount=2_000_000, headers={"x-sealgate-approval": approval})
    assert (replayed.status, reason(replayed)) == (403, "APPROVAL_REPLAYED")
    other = stack.approve(held.headers["x-sae-denial"], big)
    bigger = transfer(stack, agent="finance-03", amount=4_000_000, headers={"x-sealgate-approval": other})
    assert (bigger.status, reason(bigger)) == (403, "APPROVAL_MISMATCH")
    elsewhere = stack.agent_call("finance-03", "POST", "/v1/transfers", {**big, "to": "attacker-1"},
                                 headers={"x-sealgate-approval": other})  # same amount, another payee
    assert (elsewhere.status, reason(elsewhere)) == (403, "APPROVAL_MISMATCH")
    forged = transfer(stack, agent="finance-03", amount=2_000_000, headers={"x-sealgate-approval": done.json()["sae"]})
    assert (forged.status, reason(forged)) == (403, "APPROVAL_INVALID")


def test_a_used_approval_stays_used_across_an_authorizer_restart(stack):
    big = {"amount_cents": 3_000_000, "to": "vendor-42"}
    held = transfer(stack, agent="finance-03", amount=3_000_000)
    approval = stack.approve(held.headers["x-sae-denial"], big)
    assert transfer(stack, agent="finance-03", amount=3_000_000, headers={"x-sealgate-approval": approval}).status == 200
    stack.stop_process("authorizer")  # a crash or a deploy, well inside the approval's lifetime
    stack.spawn_authorizer("authorizer", stack.authz_socket, stack.ports.authz_admin, False, stack.workdir / "anchor.sqlite3")
    again = transfer(stack, agent="finance-03", amount=3_000_000, headers={"x-sealgate-approval": approval})
    assert (again.status, reason(again)) == (403, "APPROVAL_REPLAYED")


def test_an_approver_revoked_on_chain_approves_nothing_from_the_next_pinned_block(stack):
    from ext_authz.envelope.encoding import b64url
    from ext_authz.policy.abi import text_id

    big = {"amount_cents": 2_500_000, "to": "vendor-42"}
    held = transfer(stack, agent="finance-03", amount=2_500_000)
    approval = stack.approve(held.headers["x-sae-denial"], big)  # signed while still an approver
    block = stack.chain.transact(stack.guardian, stack.approvers.functions.revoke(text_id("treasury-lead"))).blockNumber
    try:
        stack.wait_pinned(block)
        r = transfer(stack, agent="finance-03", amount=2_500_000, headers={"x-sealgate-approval": approval})
        assert (r.status, reason(r)) == (403, "APPROVAL_INVALID")
        assert "not registered or was revoked" in verify(r.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["msg"]
    finally:  # reinstated through the Safe and the timelock, for the tests after this one
        stack.wait_pinned(stack.govern(stack.gov.call_register_approver("treasury-lead", b64url(stack.approver.raw_public))).blockNumber)
    r = transfer(stack, agent="finance-03", amount=2_500_000, headers={"x-sealgate-approval": approval})
    assert r.status == 200, r.body  # unused until now, still within its lifetime


def test_an_approver_cannot_approve_what_was_not_held_for_approval(stack):
    denied = transfer(stack, amount=5_000_000)  # over the limit, not over an approval threshold
    with pytest.raises(SealgateError, match="does not ask for approval"):
        stack.approve(denied.headers["x-sae-denial"], {"amount_cents": 5_000_000, "to": "vendor-42"})


def test_same_spiffe_id_with_another_key_is_denied(stack, tmp_path):
    # a valid certificate from our own CA for procurement-01's SPIFFE ID, but not the registered key
    cert, key = stack.ca.issue_agent(stack.spiffe_id("procurement-01")).write(tmp_path, "stolen-id")
    ctx = stack.tls_context(None)
    ctx.load_cert_chain(str(cert), str(key))
    r = stack.agent_call(None, "GET", "/v1/balance", context=ctx)
    assert (r.status, reason(r)) == (403, "KEY_NOT_BOUND")


def test_operator_risk_score_reaches_the_policy(stack):
    # finance-03 has risk 20 in the feed; tighten its rule below that through governance
    block = stack.set_rule("finance", "payment.read", "payments-api", max_amount=0, max_risk_score=10).blockNumber
    stack.wait_pinned(block)
    try:
        assert reason(stack.agent_call("finance-03", "GET", "/v1/balance")) == "RISK_TOO_HIGH"
    finally:
        stack.wait_pinned(stack.set_rule("finance", "payment.read", "payments-api", max_amount=0).blockNumber)
    assert stack.agent_call("finance-03", "GET", "/v1/balance").status == 200


def test_unregistered_agent_is_denied(stack):
    r = transfer(stack, agent="rogue-07")
    assert (r.status, reason(r)) == (403, "AGENT_UNKNOWN")


def test_revocation_applies_end_to_end_and_reactivation_restores(stack):
    stack.wait_pinned(stack.revoke("finance-03"))
    r = stack.agent_call("finance-03", "GET", "/v1/balance")
    assert (r.status, reason(r)) == (403, "AGENT_REVOKED")
    stack.wait_pinned(stack.reactivate("finance-03"))
    assert stack.agent_call("finance-03", "GET", "/v1/balance").status == 200


def test_paused_policy_denies_end_to_end(stack):
    stack.wait_pinned(stack.pause_policy())
    try:
        assert reason(transfer(stack)) == "POLICY_PAUSED"
    finally:
        stack.wait_pinned(stack.unpause_policy())
    assert transfer(stack).status == 200


def test_parent_sae_is_chained(stack):
    parent = transfer(stack).json()["sae"]
    child = stack.agent_call("procurement-01", "GET", "/v1/balance", headers={"x-sae-parent": parent}).json()["sae"]
    assert sae_claims(stack, child)["ctx"]["parent"] == sae_hash(parent).hex()
    r = stack.agent_call("procurement-01", "GET", "/v1/balance", headers={"x-sae-parent": parent[:-4] + "AAAA"})
    assert reason(r) == "PARENT_SAE_INVALID"


# ------------------------------------------------------------------ mTLS at the sidecar

def test_no_client_certificate_is_refused(stack):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        stack.agent_call(None, "GET", "/v1/balance")


def test_certificate_from_another_ca_is_refused(stack, tmp_path):
    other = LocalCA("Attacker CA").issue_agent(stack.spiffe_id("procurement-01"))
    cert, key = other.write(tmp_path, "forged")
    ctx = stack.tls_context(None)
    ctx.load_cert_chain(str(cert), str(key))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        stack.agent_call(None, "GET", "/v1/balance", context=ctx)


def test_spiffe_id_outside_the_trust_domain_is_refused(stack, tmp_path):
    cert, key = stack.ca.issue_agent("spiffe://evil.example/agent/procurement-01").write(tmp_path, "foreign")
    ctx = stack.tls_context(None)
    ctx.load_cert_chain(str(cert), str(key))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        stack.agent_call(None, "GET", "/v1/balance", context=ctx)


# ------------------------------------------------------------------ the PEP at the target

def craft(stack, typ=SAE_TYP, **overrides):
    """A correctly signed SAE (format version 3) for POST /v1/transfers, with claims overridden (tests own the key)."""
    now = int(time.time())
    claims = {"iss": stack.issuer, "sub": stack.spiffe_id("procurement-01"), "aud": "payments-api",
              "act": {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers", "amt": "1",
                      "dc": "internal", "bd": hashlib.sha256(json.dumps(TRANSFER).encode()).hexdigest()},
              "pol": {"registry": stack.manifest.policy_registry, "id": stack.manifest.policy_id, "addr": stack.manifest.policy,
                      "ver": 1, "block": 1},
              "inp": {"kf": "00" * 32, "risk": 0},
              "mod": "sha256:" + "00" * 32, "iat": now, "nbf": now, "exp": now + 60, "jti": f"crafted-{time.monotonic_ns()}",
              "ctx": {"dc": "internal"}, "chain": {"id": 31337, "anchor": stack.manifest.anchor}}
    claims.update(overrides)
    if typ == SAE_TYP:
        return EnvelopeEncoder(stack.signer).encode(claims)
    header = b64url(canonical_json({"alg": "EdDSA", "kid": stack.signer.kid, "typ": typ}))
    signing_input = f"{header}.{b64url(canonical_json(claims))}"
    return f"{signing_input}.{b64url(stack.signer.sign(signing_input.encode()))}"


def craft_act():
    return {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers", "amt": "1",
            "dc": "internal", "bd": hashlib.sha256(json.dumps(TRANSFER).encode()).hexdigest()}


@pytest.mark.parametrize("name,token,expected", [
    ("missing", None, "SAE_MISSING"),
    ("garbage", lambda s: "not-a-jws", "SAE_INVALID"),
    ("other_key", lambda s: EnvelopeEncoder(Ed25519Signer(bytes(32))).encode({"act": {}}), "SAE_INVALID"),
    ("expired", lambda s: craft(s, iat=int(time.time()) - 120, nbf=int(time.time()) - 120, exp=int(time.time()) - 60), "SAE_INVALID"),
    ("wrong_audience", lambda s: craft(s, aud="hr-api"), "SAE_INVALID"),
    ("denial_as_sae", lambda s: EnvelopeEncoder(s.signer).encode({"iss": s.issuer, "aud": "payments-api", "exp": int(time.time()) + 60, "act": {}}, DENIAL_TYP), "SAE_TYPE_INVALID"),
    ("other_path", lambda s: craft(s, act={"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/other", "amt": "1", "dc": "internal"}), "SAE_BINDING_MISMATCH"),
    ("other_method", lambda s: craft(s, act={"type": "payment.transfer", "m": "GET", "h": "payments.internal", "p": "/v1/transfers", "amt": "1", "dc": "internal"}), "SAE_BINDING_MISMATCH"),
    ("other_authority", lambda s: craft(s, act={"type": "payment.transfer", "m": "POST", "h": "hr.internal", "p": "/v1/transfers", "amt": "1", "dc": "internal"}), "SAE_BINDING_MISMATCH"),
    ("no_act", lambda s: craft(s, act="POST /v1/transfers"), "SAE_INVALID"),
    ("other_issuer", lambda s: craft(s, iss="spiffe://sealgate.local/sealgate/other-authorizer"), "SAE_INVALID"),  # jwt_authn
    ("format_version_1", lambda s: craft(s, typ="application/sae+jwt"), "SAE_TYPE_INVALID"),  # the Lua
    ("amount_json_number", lambda s: craft(s, act={**craft_act(), "amt": 1}), "SAE_INVALID"),  # the verifier
    ("null_claim", lambda s: craft(s, ctx={"dc": "internal", "parent": None}), "SAE_INVALID"),  # the verifier
])
def test_pep_rejections(stack, name, token, expected):
    headers = {} if token is None else {"x-sae": token(stack)}
    r = stack.pep_call("POST", "/v1/transfers", TRANSFER, headers=headers)
    assert (r.status, reason(r)) == (403, expected), r.body
    assert r.json()["reason_code"] == expected


def test_the_target_refuses_an_sae_for_another_body_which_the_pep_cannot_see(stack):
    token = craft(stack)  # a valid SAE, bound to TRANSFER's bytes
    r = stack.pep_call("POST", "/v1/transfers", {**TRANSFER, "to": "attacker-1"}, headers={"x-sae": token})
    assert (r.status, reason(r)) == (403, "SAE_BODY_MISMATCH")  # from the target: the PEP let it through
    assert r.json()["reason_code"] == "SAE_BODY_MISMATCH"


def test_pep_accepts_a_valid_sae_once(stack):
    token = craft(stack)
    first = stack.pep_call("POST", "/v1/transfers", TRANSFER, headers={"x-sae": token})
    assert first.status == 200 and first.json()["sae"] == token
    second = stack.pep_call("POST", "/v1/transfers", TRANSFER, headers={"x-sae": token})
    assert (second.status, reason(second)) == (403, "SAE_REPLAYED")


# ------------------------------------------------------------------ malformed CheckRequests

def check(stack, principal="spiffe://sealgate.local/agent/procurement-01", **http):
    req = auth_pb2.CheckRequest()
    req.attributes.source.principal = principal
    req.attributes.source.certificate = urllib.parse.quote(Path(stack.agent_certs["procurement-01"][0]).read_text())
    h = req.attributes.request.http
    h.method, h.host, h.path = http.get("method", "GET"), http.get("host", "payments.internal"), http.get("path", "/v1/balance")
    if "body" in http:
        h.raw_body = http["body"]
    for k, v in http.get("headers", {}).items():
        h.headers[k] = v
    with grpc.insecure_channel(stack.authz_socket) as ch:
        return auth_grpc.AuthorizationStub(ch).Check(req, timeout=5)


@pytest.mark.parametrize("kw,expected", [
    ({"principal": ""}, "IDENTITY_MISSING"),
    ({"principal": "spiffe://sealgate.local/agent/../x"}, "IDENTITY_INVALID"),
    ({"method": ""}, "INPUT_MALFORMED"),
    ({"method": "G\x00T"}, "INPUT_MALFORMED"),
    ({"host": ""}, "INPUT_MALFORMED"),
    ({"path": ""}, "INPUT_MALFORMED"),
    ({"path": "/v1/balance/%2e%2e/admin"}, "INPUT_MALFORMED"),
    ({"path": "/" + "a" * 5000}, "INPUT_OVERSIZED"),
    ({"method": "POST", "path": "/v1/transfers", "body": b"x" * 70_000}, "INPUT_OVERSIZED"),
    ({"headers": {"x-pad": "y" * 20_000}}, "INPUT_OVERSIZED"),
])
def test_malformed_check_requests_are_denied_with_a_reason(stack, kw, expected):
    resp = check(stack, **kw)
    assert resp.status.code == 7  # PERMISSION_DENIED
    assert resp.denied_response.status.code == 403
    headers = {h.header.key: h.header.value for h in resp.denied_response.headers}
    assert headers["x-sealgate-reason"] == expected
    assert verify(headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["reason"] == expected


def test_undecodable_grpc_payload_is_an_error_and_the_server_survives(stack):
    with grpc.insecure_channel(stack.authz_socket) as ch:
        raw = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff", timeout=5)
        assert err.value.code() != grpc.StatusCode.OK
    assert check(stack).status.code == 0


# ------------------------------------------------------------------ anchoring and `sealgate verify`

def sealgate_verify(stack, token, *extra):
    return subprocess.run(
        [sys.executable, "-m", "ext_authz.cli", "verify", token, "--jwks", f"http://127.0.0.1:{stack.ports.authz_admin}/jwks.json",
         "--manifest", str(stack.workdir / "addresses.json"), "--anchor-db", str(stack.workdir / "anchor.sqlite3"), *extra],
        capture_output=True, text=True, timeout=60)


def anchored(stack):
    s = stack.status()
    return s["anchor_queue"] == 0 and s["anchor_store"]["unbatched"] == 0 and s["anchor_store"]["batches_pending"] == 0


def test_sealgate_verify_accepts_an_anchored_sae(stack):
    token = transfer(stack).json()["sae"]
    wait_until(lambda: anchored(stack), 30, "anchoring")
    out = sealgate_verify(stack, token, "--issuer", stack.issuer)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "VALID" in out.stdout and "anchored  root 0x" in out.stdout and "tx 0x" in out.stdout
    assert f"issuer    {stack.issuer}" in out.stdout and f"agent     {stack.spiffe_id('procurement-01')}" in out.stdout
    assert "amount    50000" in out.stdout and "target    payments-api" in out.stdout
    out = sealgate_verify(stack, token, "--issuer", "spiffe://sealgate.local/sealgate/other-authorizer")
    assert out.returncode == 1 and "INVALID SAE_INVALID" in out.stdout


def test_sealgate_verify_shows_who_approved_an_approved_action(stack):
    big = {"amount_cents": 1_500_000, "to": "vendor-42"}
    held = transfer(stack, agent="finance-03", amount=1_500_000)
    approval = stack.approve(held.headers["x-sae-denial"], big)
    token = transfer(stack, agent="finance-03", amount=1_500_000, headers={"x-sealgate-approval": approval}).json()["sae"]
    wait_until(lambda: anchored(stack), 30, "anchoring")
    out = sealgate_verify(stack, token)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "approved  by treasury-lead: approval " in out.stdout and held.json()["approval_request"] in out.stdout

    # an SAE (signed with the authorizer's key) whose approval does not hold up is rejected
    claims = verify(token, stack.jwks)
    other_act = {**claims["act"], "amt": str(int(claims["act"]["amt"]) + 1)}
    out = sealgate_verify(stack, craft(stack, **{**claims, "act": other_act, "jti": "approval-for-another-amount"}))
    assert out.returncode == 1 and "INVALID APPROVAL_MISMATCH" in out.stdout
    from ext_authz.authz.approvals import sign_approval

    forged = sign_approval(Ed25519Signer(bytes([3]) * 32), "treasury-lead", claims["sub"], claims["apr"]["req"], now=claims["iat"])
    out = sealgate_verify(stack, craft(stack, **{**claims, "apr": {**claims["apr"], "tok": forged}, "jti": "forged-approval"}))
    assert out.returncode == 1 and "INVALID APPROVAL_INVALID" in out.stdout


def test_sealgate_verify_accepts_an_anchored_denial(stack):
    token = transfer(stack, amount=9_000_000).headers["x-sae-denial"]
    wait_until(lambda: anchored(stack), 30, "anchoring")
    out = sealgate_verify(stack, token, "--denial")
    assert out.returncode == 0, out.stdout + out.stderr


def test_sealgate_verify_rejects_a_tampered_sae(stack):
    token = transfer(stack).json()["sae"]
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-3]}{'A' if payload[-3] != 'A' else 'B'}{payload[-2:]}.{sig}"
    out = sealgate_verify(stack, tampered)
    assert out.returncode == 1 and "INVALID SAE_INVALID" in out.stdout


def test_sealgate_verify_rejects_a_never_anchored_sae(stack):
    out = sealgate_verify(stack, craft(stack))
    assert out.returncode == 1 and "INVALID NOT_ANCHORED" in out.stdout


def test_anchored_roots_are_on_chain(stack):
    wait_until(lambda: anchored(stack), 30, "anchoring")
    status = stack.status()
    assert stack.anchor.functions.batchCount().call() == status["anchor_store"]["batches_anchored"] > 0


# ------------------------------------------------------------------ failure modes (destructive: last)

def test_stale_chain_state_fails_closed(stack):
    stack.stop_process("anvil")
    wait_until(lambda: reason(transfer(stack)) == "POLICY_STATE_STALE", 15, "POLICY_STATE_STALE denials")
    assert stack.status()["healthy"] is False


def test_authorizer_down_means_envoy_denies(stack):
    stack.stop_process("authorizer")
    r = transfer(stack)
    assert r.status == 403
    assert b"executed" not in r.body

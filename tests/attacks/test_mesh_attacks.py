"""Attacks by an agent through its sidecar (mTLS identity, canonical requests, approvals, parent SAEs, request
smuggling), on the stack's sockets, and on the authorizer's availability (killed, hung). The target checks
nothing itself (target_checks_sae=False): every test counts what it executed. The fail-closed tests run last."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import signal
import ssl
import time

import pytest
from attack_helpers import (
    BODY,
    Receipts,
    as_nobody,
    body_bytes,
    fresh_claims,
    raw_exchange,
    raw_request,
    real_sae,
    reason,
    resign,
    statuses,
    unique,
    verified,
    wait_receipts_settled,
)
from cryptography.x509 import UniformResourceIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID

from ext_authz.authz.actions import OVERRIDE_HEADERS
from ext_authz.authz.approvals import sign_approval
from ext_authz.envelope.jws import DENIAL_TYP, verify
from ext_authz.local.net import envoy_ready, http_get_json
from ext_authz.local.pki import LocalCA
from ext_authz.signing.file_key import Ed25519Signer

pytestmark = pytest.mark.slow
BIG = {"amount_cents": 2_000_000, "to": "vendor-42"}  # over finance's approval threshold (1,000,000), under its max
TLS_REFUSED = (ssl.SSLError, ConnectionError, OSError)


@pytest.fixture(scope="module")
def stack(mesh_stack):
    return mesh_stack


def call(stack, agent, method="POST", path="/v1/transfers", body=BODY, **kw):
    return stack.agent_call(agent, method, path, body, **kw)


def denied(stack, receipts, resp, *expected):
    assert resp.status == 403, (resp.status, resp.body[:300])
    if expected:
        assert reason(resp) in expected, (reason(resp), resp.body[:300])
        if resp.headers.get("x-sae-denial"):  # the authorizer's denials are signed and name the same reason
            assert verify(resp.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["reason"] == reason(resp)
    wait_receipts_settled(receipts)
    assert receipts.count() == 0, receipts.new()


def context_with(stack, issued, tmp_path, name):
    cert, key = issued.write(tmp_path, name)
    ctx = stack.tls_context(None)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def executed_once_as_bound(stack, receipts, resp):
    """The request executed exactly once, on the method and path its SAE names."""
    assert resp.status == 200, resp.body[:300]
    lines = receipts.new()
    assert len(lines) == 1, lines
    act = verify(lines[0]["sae"], stack.jwks, check_time=False)["act"]
    assert (lines[0]["method"], lines[0]["path"]) == (act["m"], act["p"])
    return act


# ------------------------------------------------------------------ mTLS and identity at the sidecar

def test_no_client_certificate(stack):
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None)
    wait_receipts_settled(r)
    assert r.count() == 0


def test_certificate_from_another_ca(stack, tmp_path):
    r = Receipts(stack)
    ctx = context_with(stack, LocalCA("Attacker CA").issue_agent(stack.spiffe_id("procurement-01")), tmp_path, "other-ca")
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=ctx)
    assert r.count() == 0


def test_expired_client_certificate(stack, tmp_path):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    issued = stack.ca.issue_agent(stack.spiffe_id("procurement-01"), lifetime=dt.timedelta(hours=1), not_before=start)
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=context_with(stack, issued, tmp_path, "expired"))
    assert r.count() == 0


def test_not_yet_valid_client_certificate(stack, tmp_path):
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    issued = stack.ca.issue_agent(stack.spiffe_id("procurement-01"), not_before=start)
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=context_with(stack, issued, tmp_path, "future"))
    assert r.count() == 0


@pytest.mark.parametrize("uri", ["spiffe://evil.example/agent/procurement-01", "https://sealgate.local/agent/procurement-01",
                                 "spiffe://sealgate.local.evil.example/agent/procurement-01"],
                         ids=["other_trust_domain", "not_spiffe", "trust_domain_suffix"])
def test_client_certificate_outside_the_trust_domain(stack, tmp_path, uri):
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=context_with(stack, stack.ca.issue_agent(uri), tmp_path, "foreign"))
    assert r.count() == 0


def test_server_certificate_used_as_client_certificate(stack, tmp_path):
    """Signed by the right CA, but no SPIFFE URI SAN and no client-auth usage."""
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=context_with(stack, stack.ca.issue_server(), tmp_path, "server-as-client"))
    assert r.count() == 0


def test_same_spiffe_id_with_another_key(stack, tmp_path):
    ctx = context_with(stack, stack.ca.issue_agent(stack.spiffe_id("procurement-01")), tmp_path, "stolen-id")
    r = Receipts(stack)
    denied(stack, r, call(stack, None, context=ctx), "KEY_NOT_BOUND")


def test_certificate_with_two_spiffe_ids(stack, tmp_path):
    """An unregistered agent's certificate also naming a registered agent: never executes as either."""
    sans = [UniformResourceIdentifier(stack.spiffe_id("rogue-07")), UniformResourceIdentifier(stack.spiffe_id("procurement-01"))]
    issued = stack.ca._issue("two-ids", sans, [ExtendedKeyUsageOID.CLIENT_AUTH], dt.timedelta(hours=1))
    r = Receipts(stack)
    try:
        resp = call(stack, None, context=context_with(stack, issued, tmp_path, "two-ids"))
    except TLS_REFUSED:
        resp = None
    if resp is not None:
        assert resp.status == 403, resp.body[:300]
    wait_receipts_settled(r)
    assert r.count() == 0


def test_plaintext_http_to_the_mtls_listener(stack):
    r = Receipts(stack)
    data = body_bytes(BODY)
    out = raw_exchange(stack.ports.sidecar, raw_request("POST", "/v1/transfers", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")], data))
    assert 200 not in statuses(out)
    wait_receipts_settled(r)
    assert r.count() == 0


def test_tls_1_1_downgrade(stack):
    ctx = stack.tls_context("procurement-01")
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    r = Receipts(stack)
    with pytest.raises(TLS_REFUSED):
        call(stack, None, context=ctx)
    assert r.count() == 0


SPOOFED = {
    "x-forwarded-client-cert": 'By=spiffe://sealgate.local/agent/finance-03;URI=spiffe://sealgate.local/agent/finance-03',
    "x-spiffe-id": "spiffe://sealgate.local/agent/finance-03",
    "x-sealgate-agent": "spiffe://sealgate.local/agent/finance-03",
    "x-sealgate-principal": "spiffe://sealgate.local/agent/finance-03",
    "x-sealgate-identity": "spiffe://sealgate.local/agent/finance-03",
    "x-client-cert-uri": "spiffe://sealgate.local/agent/finance-03",
    "x-forwarded-for": "10.0.0.3",
    "x-real-ip": "10.0.0.3",
}


def test_identity_headers_from_an_unregistered_agent(stack):
    r = Receipts(stack)
    denied(stack, r, call(stack, "rogue-07", method="GET", path="/v1/balance", body=None, headers=SPOOFED), "AGENT_UNKNOWN")


def test_identity_headers_to_borrow_another_agents_limit(stack):
    """procurement-01 (limit 1,000,000) claims to be finance-03: still judged as procurement-01."""
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", body=BIG, headers=SPOOFED), "AMOUNT_OVER_LIMIT")


def test_identity_headers_do_not_change_the_sae_subject(stack):
    r = Receipts(stack)
    resp = call(stack, "procurement-01", body={"amount_cents": 710, "to": "vendor-42"}, headers=SPOOFED)
    executed_once_as_bound(stack, r, resp)
    claims = verify(resp.json()["sae"], stack.jwks)
    assert claims["sub"] == stack.spiffe_id("procurement-01")
    assert "x-forwarded-client-cert" not in resp.json()["header_names"]  # the agent's XFCC is sanitised, not forwarded


def test_agent_brings_its_own_signed_sae_for_a_denied_action(stack):
    """Even a correctly signed SAE for exactly this request does not pass the sidecar when the policy denies."""
    _, _, template = real_sae(stack)
    evil = {"amount_cents": 5_000_000, "to": "vendor-42"}
    token = resign(stack, fresh_claims(template, evil))
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", body=evil, headers={"x-sae": token}), "AMOUNT_OVER_LIMIT")


# ------------------------------------------------------------------ canonical requests through the sidecar

JSON = {"content-type": "application/json"}
CANONICAL_CASES = [
    ("duplicate_names", b'{"amount_cents": 100, "amount_cents": 99999999, "to": "vendor-42"}', JSON, "BODY_INVALID"),
    ("case_variant_names", b'{"amount_cents": 100, "AMOUNT_CENTS": 99999999, "to": "vendor-42"}', JSON, "BODY_INVALID"),
    ("case_variant_nested", b'{"amount_cents": 100, "to": "vendor-42", "m": {"to": "a", "To": "b"}}', JSON, "BODY_INVALID"),
    ("lone_surrogate", b'{"amount_cents": 100, "to": "vendor-42\\ud800"}', JSON, "BODY_INVALID"),
    ("lone_surrogate_name", b'{"amount_cents": 100, "to": "vendor-42", "\\udc00": 1}', JSON, "BODY_INVALID"),
    ("huge_integer_over_uint256", b'{"amount_cents": 1' + b"0" * 80 + b', "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("huge_integer_over_limit", b'{"amount_cents": 1' + b"0" * 70 + b', "to": "vendor-42"}', JSON, "AMOUNT_OVER_LIMIT"),
    ("float_amount", b'{"amount_cents": 700.0, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("exponent_amount", b'{"amount_cents": 7e2, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("huge_exponent_amount", b'{"amount_cents": 1e400, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("tiny_float_amount", b'{"amount_cents": 1e-400, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("negative_amount", b'{"amount_cents": -1, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("negative_zero_amount", b'{"amount_cents": -0.0, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("string_amount", b'{"amount_cents": "700", "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("bool_amount", b'{"amount_cents": true, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("null_amount", b'{"amount_cents": null, "to": "vendor-42"}', JSON, "AMOUNT_INVALID"),
    ("nan", b'{"amount_cents": NaN, "to": "vendor-42"}', JSON, "BODY_INVALID"),
    ("infinity", b'{"amount_cents": Infinity, "to": "vendor-42"}', JSON, "BODY_INVALID"),
    ("deep_nesting", b'{"amount_cents": 1, "x": ' + b"[" * 500 + b"]" * 500 + b"}", JSON, "BODY_INVALID"),
    ("utf8_bom", b'\xef\xbb\xbf{"amount_cents": 100, "to": "vendor-42"}', JSON, "BODY_INVALID"),
    ("utf16_body", '{"amount_cents": 100, "to": "vendor-42"}'.encode("utf-16"), JSON, "BODY_INVALID"),
    ("array_body", b'[{"amount_cents": 100, "to": "vendor-42"}]', JSON, "BODY_INVALID"),
    ("form_body", b"amount_cents=100&to=vendor-42", {"content-type": "application/x-www-form-urlencoded"}, "CONTENT_TYPE_INVALID"),
    ("multipart_body", b'--b\r\nContent-Disposition: form-data; name="amount_cents"\r\n\r\n100\r\n--b--\r\n',
     {"content-type": "multipart/form-data; boundary=b"}, "CONTENT_TYPE_INVALID"),
    ("json_as_text_plain", b'{"amount_cents": 100, "to": "vendor-42"}', {"content-type": "text/plain"}, "CONTENT_TYPE_INVALID"),
    ("json_in_latin1", b'{"amount_cents": 100, "to": "vendor-42"}', {"content-type": "application/json; charset=latin1"},
     "CONTENT_TYPE_INVALID"),
    ("no_content_type", b'{"amount_cents": 100, "to": "vendor-42"}', {"content-type": ""}, "CONTENT_TYPE_INVALID"),
]


@pytest.mark.parametrize("body,headers,expected", [c[1:] for c in CANONICAL_CASES], ids=[c[0] for c in CANONICAL_CASES])
def test_json_and_body_tricks_on_an_amount_route(stack, body, headers, expected):
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", body=body, headers=headers), expected)


@pytest.mark.parametrize("path", ["/v1/transfers?amount_cents=99999999", "/v1/transfers?to=attacker-1", "/v1/transfers?",
                                  "/v1/balance?currency=EUR"],
                         ids=["amount_in_query", "payee_in_query", "empty_query", "undeclared_query_on_prefix_route"])
def test_query_added_to_a_route(stack, path):
    method, body = ("GET", None) if "balance" in path else ("POST", BODY)
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", method=method, path=path, body=body), "QUERY_NOT_ALLOWED")


@pytest.mark.parametrize("header", sorted(OVERRIDE_HEADERS))
def test_method_override_and_original_url_headers(stack, header):
    value = "DELETE" if "method" in header else "/v1/exports"
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", headers={header: value}), "HEADER_NOT_ALLOWED")


def raw_sidecar(stack, agent, method, path, headers, body=b"", authority="payments.internal"):
    return raw_exchange(stack.ports.sidecar, raw_request(method, path, headers + [("Connection", "close")], body, authority),
                        context=stack.tls_context(agent))


def raw_reason(raw):
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"x-sealgate-reason:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


@pytest.mark.parametrize("name", ["x-sae-parent", "x-sae", "content-type", "x-sealgate-approval", "x-sealgate-session"])
def test_header_given_twice(stack, name):
    parent, _, _ = real_sae(stack, method="GET", path="/v1/balance", body=None)
    values = {"x-sae-parent": (parent, parent), "x-sae": (parent, parent), "content-type": ("application/json", "text/plain"),
              "x-sealgate-approval": (parent, parent), "x-sealgate-session": ("s1", "s2")}[name]
    data = body_bytes(BODY)
    headers = [(name, v) for v in values] + [("Content-Length", str(len(data)))]
    if name != "content-type":
        headers.append(("Content-Type", "application/json"))
    r = Receipts(stack)
    out = raw_sidecar(stack, "procurement-01", "POST", "/v1/transfers", headers, data)
    assert statuses(out) == [403] and raw_reason(out) == "HEADER_NOT_ALLOWED", out[:400]
    wait_receipts_settled(r)
    assert r.count() == 0


MUST_NOT_RUN = [
    ("POST", "/v1/balance/../exports", {}),  # dot segments into another route
    ("POST", "/v1/transfers/../exports", {}),
    ("GET", "/v1/balance/..%2fexports", None),  # encoded separators
    ("GET", "/v1/balance%2F..%2Fexports", None),
    ("GET", "/v1/balance/%2e%2e/exports", None),
    ("GET", "/v1/balance/%2E%2E/%2E%2E/admin", None),
    ("POST", "/v1/transfers%2F", BODY),
    ("GET", "/v1/balance\\..\\exports", None),
    ("GET", "/v1/balance-admin/delete-all", None),  # sibling of a prefix route
    ("GET", "/v1/balances", None),
]


@pytest.mark.parametrize("method,path,body", MUST_NOT_RUN, ids=[p for _, p, _ in MUST_NOT_RUN])
def test_path_tricks_to_reach_another_route(stack, method, path, body):
    r = Receipts(stack)
    try:
        resp = call(stack, "procurement-01", method=method, path=path, body=body)
        assert resp.status in (400, 403, 404), (resp.status, resp.body[:200])
    except ValueError:  # http.client refuses to send some paths at all
        pass
    wait_receipts_settled(r)
    assert r.count() == 0, r.new()


EQUIVALENT = [
    ("POST", "/v1/./transfers", BODY), ("POST", "//v1//transfers", BODY), ("POST", "/v1/x/../transfers", BODY),
    ("POST", "/v1/%74ransfers", BODY), ("GET", "/v1/%62alance", None), ("GET", "/v1/balance/./acct-1", None),
    ("GET", "/v1/balance/acct-1/", None), ("POST", "/v1/transfers/", BODY), ("POST", "/V1/TRANSFERS", BODY),
]


@pytest.mark.parametrize("method,path,body", EQUIVALENT, ids=[p for _, p, _ in EQUIVALENT])
def test_path_normalisation_runs_only_what_the_sae_names(stack, method, path, body):
    """Refused, or executed once on exactly the path the authorizer judged and the SAE binds."""
    r = Receipts(stack)
    resp = call(stack, "procurement-01", method=method, path=path, body=body)
    wait_receipts_settled(r)
    if resp.status == 200:
        act = executed_once_as_bound(stack, r, resp)
        assert act["p"].split("?")[0].startswith(("/v1/transfers", "/v1/balance"))
    else:
        assert resp.status in (400, 403, 404)
        assert r.count() == 0


@pytest.mark.parametrize("authority,runs", [("PAYMENTS.INTERNAL", True), ("hr.internal", False),
                                            ("payments.internal.evil.example", False), ("payments.internal:8443", False)])
def test_authority_tricks(stack, authority, runs):
    r = Receipts(stack)
    resp = call(stack, "procurement-01", method="GET", path="/v1/balance", body=None, authority=authority)
    if runs:
        act = executed_once_as_bound(stack, r, resp)
        assert act["h"] == authority.lower()
    else:
        denied(stack, r, resp, "ROUTE_UNKNOWN", "INPUT_MALFORMED")


def smuggle(marker, data):
    """(case -> headers, body): each hides GET /v1/balance/<marker> (a route procurement-01 may call) after the
    outer request, for a proxy that reads the body's length differently from Envoy."""
    inner = f"GET /v1/balance/{marker} HTTP/1.1\r\nHost: payments.internal\r\n\r\n".encode()
    chunked = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    ct = [("Content-Type", "application/json")]
    return {
        "cl_te": (ct + [("Content-Length", str(len(chunked))), ("Transfer-Encoding", "chunked")], chunked + inner),
        "te_cl": (ct + [("Transfer-Encoding", "chunked"), ("Content-Length", "4")], chunked + inner),
        "two_content_lengths": (ct + [("Content-Length", str(len(data))), ("Content-Length", str(len(data) + len(inner)))],
                                data + inner),
        "te_obfuscated_space": (ct + [("Transfer-Encoding ", "chunked"), ("Content-Length", str(len(data)))], data + inner),
        "te_xchunked": (ct + [("Transfer-Encoding", "xchunked"), ("Content-Length", str(len(data)))], data + inner),
        "te_tab_chunked": (ct + [("Transfer-Encoding", "\tchunked"), ("Content-Length", str(len(chunked)))], chunked + inner),
        "chunk_size_overflow": (ct + [("Transfer-Encoding", "chunked")],
                                b"1" + b"0" * 20 + b"\r\n" + data + b"\r\n0\r\n\r\n" + inner),
    }


@pytest.mark.parametrize("case", ["cl_te", "te_cl", "two_content_lengths", "te_obfuscated_space", "te_xchunked",
                                  "te_tab_chunked", "chunk_size_overflow"])
def test_request_smuggling_to_the_sidecar(stack, case):
    marker = unique("smuggled")
    headers, body = smuggle(marker, body_bytes(BODY))[case]
    r = Receipts(stack)
    out = raw_sidecar(stack, "procurement-01", "POST", "/v1/transfers", headers, body)
    wait_receipts_settled(r)
    assert r.count(contains=marker) == 0, r.new()
    assert r.count() <= 1 and all(line["path"] == "/v1/transfers" for line in r.new()), r.new()
    assert all(s in (200, 400, 403, 411, 413, 501) for s in statuses(out)), out[:300]


# ------------------------------------------------------------------ approvals

def held(stack, agent="finance-03", body=BIG):
    resp = call(stack, agent, body=body)
    assert (resp.status, reason(resp)) == (403, "HUMAN_APPROVAL_REQUIRED"), resp.body[:300]
    return resp


def test_approval_replay(stack):
    body = {**BIG, "to": unique("payee")}
    approval = stack.approve(held(stack, body=body).headers["x-sae-denial"], body)
    r = Receipts(stack)
    first = call(stack, "finance-03", body=body, headers={"x-sealgate-approval": approval})
    executed_once_as_bound(stack, r, first)
    again = call(stack, "finance-03", body=body, headers={"x-sealgate-approval": approval})
    assert (again.status, reason(again)) == (403, "APPROVAL_REPLAYED")
    assert r.count() == 1


def test_approval_replay_concurrent(stack):
    body = {**BIG, "to": unique("payee")}
    approval = stack.approve(held(stack, body=body).headers["x-sae-denial"], body)
    r = Receipts(stack)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: (lambda x: (x.status, reason(x)))(
            call(stack, "finance-03", body=body, headers={"x-sealgate-approval": approval})), range(12)))
    assert results.count((200, None)) == 1, results
    assert all(x == (403, "APPROVAL_REPLAYED") for x in results if x[0] != 200), results
    assert r.count() == 1


def test_approval_transferred_to_another_agent(stack):
    """finance-04 has the same role and is held for approval too; finance-03's approval is not its own."""
    approval = stack.approve(held(stack).headers["x-sae-denial"], BIG)
    held(stack, agent="finance-04")
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-04", body=BIG, headers={"x-sealgate-approval": approval}), "APPROVAL_MISMATCH")
    assert call(stack, "finance-03", body=BIG, headers={"x-sealgate-approval": approval}).status == 200  # still unused
    assert r.count() == 1


@pytest.mark.parametrize("other", [{**BIG, "to": "attacker-1"}, {**BIG, "amount_cents": 4_000_000},
                                   {**BIG, "memo": "extra member"}], ids=["other_payee", "bigger_amount", "extra_member"])
def test_approval_transferred_to_another_body(stack, other):
    approval = stack.approve(held(stack).headers["x-sae-denial"], BIG)
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", body=other, headers={"x-sealgate-approval": approval}), "APPROVAL_MISMATCH")


def test_approval_signed_with_a_foreign_key_under_the_approvers_name(stack):
    resp = held(stack)
    forged = sign_approval(Ed25519Signer(os.urandom(32)), "treasury-lead", stack.spiffe_id("finance-03"),
                           resp.json()["approval_request"])
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", body=BIG, headers={"x-sealgate-approval": forged}), "APPROVAL_INVALID")


def test_approval_under_an_unregistered_approver_name(stack):
    resp = held(stack)
    forged = sign_approval(stack.approver, "ceo", stack.spiffe_id("finance-03"), resp.json()["approval_request"])
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", body=BIG, headers={"x-sealgate-approval": forged}), "APPROVAL_INVALID")


def test_expired_approval(stack):
    approval = stack.approve(held(stack).headers["x-sae-denial"], BIG, ttl=1)
    time.sleep(2.2)
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", body=BIG, headers={"x-sealgate-approval": approval}), "APPROVAL_INVALID")


@pytest.mark.parametrize("kind", ["sae", "denial"])
def test_other_envelope_presented_as_approval(stack, kind):
    resp = held(stack)
    token = resp.headers["x-sae-denial"] if kind == "denial" else real_sae(stack, agent="finance-03",
                                                                           body={"amount_cents": 900, "to": "vendor-42"})[0]
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", body=BIG, headers={"x-sealgate-approval": token}), "APPROVAL_INVALID")


# ------------------------------------------------------------------ parent SAEs

def test_parent_sae_from_another_agent(stack):
    parent, _, _ = real_sae(stack, agent="procurement-01", method="GET", path="/v1/balance", body=None)
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", method="GET", path="/v1/balance", body=None, headers={"x-sae-parent": parent}),
           "PARENT_SAE_INVALID")


def test_parent_sae_from_another_agent_claiming_a_session(stack):
    """The other agent's SAE was issued outside any session: naming a session does not make it this one's."""
    parent, _, _ = real_sae(stack, agent="procurement-01", method="GET", path="/v1/balance", body=None)
    r = Receipts(stack)
    denied(stack, r, call(stack, "finance-03", method="GET", path="/v1/balance", body=None,
                   headers={"x-sae-parent": parent, "x-sealgate-session": "s-1"}), "PARENT_SAE_INVALID")


def test_parent_sae_forged_with_a_foreign_key(stack):
    from ext_authz.envelope.jws import EnvelopeEncoder

    _, _, template = real_sae(stack, method="GET", path="/v1/balance", body=None)
    forged = EnvelopeEncoder(Ed25519Signer(os.urandom(32))).encode(fresh_claims(template, None))
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", method="GET", path="/v1/balance", body=None, headers={"x-sae-parent": forged}),
           "PARENT_SAE_INVALID")


def test_parent_sae_tampered(stack):
    parent, _, _ = real_sae(stack, method="GET", path="/v1/balance", body=None)
    head, payload, sig = parent.split(".")
    r = Receipts(stack)
    denied(stack, r, call(stack, "procurement-01", method="GET", path="/v1/balance", body=None,
                   headers={"x-sae-parent": f"{head}.{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BA'}.{sig}"}),
           "PARENT_SAE_INVALID")


# ------------------------------------------------------------------ the stack's sockets

@pytest.mark.parametrize("name", ["authorizer", "sidecar-admin", "pep-admin", "pep_verifier"])
def test_stack_sockets_as_an_unprivileged_user(stack, name):
    """nobody (uid 65534) can open none of them: not the authorizer (it would sign any identity asked for),
    not Envoy admin (POST /quitquitquit is unauthenticated), not the PEP verifier."""
    path = stack.socket(name).removeprefix("unix:")
    r = Receipts(stack)
    out = as_nobody(
        "import socket\ns = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({path!r}); s.sendall(b'POST /quitquitquit HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print('connected')\n"
        "except OSError as e:\n    print(e.errno)")
    assert out.stdout.strip() == "13", out  # EACCES
    assert envoy_ready(stack.socket("sidecar-admin")) and envoy_ready(stack.socket("pep-admin"))
    assert r.count() == 0


def test_envoy_admin_interfaces_are_not_on_tcp(stack):
    for conf in (stack.sidecar_conf, stack.pep_conf):
        address = conf["admin"]["address"]
        assert "pipe" in address and "socket_address" not in address, address
        assert address["pipe"]["mode"] == 0o600


def test_authorizer_admin_http_is_read_only(stack):
    import http.client

    for method, path in (("POST", "/status"), ("PUT", "/jwks.json"), ("DELETE", "/status"), ("POST", "/sign")):
        conn = http.client.HTTPConnection("127.0.0.1", stack.ports.authz_admin, timeout=5)
        conn.request(method, path, body=b'{"principal": "spiffe://sealgate.local/agent/finance-03"}')
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status in (404, 405, 501), (method, path, resp.status)


# ------------------------------------------------------------------ availability: fail closed (last)

def test_hung_authorizer_fails_closed_within_envoys_timeout(stack):
    proc = stack.procs["authorizer"]
    r = Receipts(stack)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        resp = call(stack, "procurement-01", body={"amount_cents": 720, "to": "vendor-42"})
        elapsed = time.monotonic() - start
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert resp.status == 403, resp.body[:300]
    assert elapsed < 3.0, elapsed  # ext_authz timeout 0.5 s
    wait_receipts_settled(r, 1.0)  # nothing arrives late either, once the authorizer runs again
    assert r.count() == 0
    assert http_get_json(f"http://127.0.0.1:{stack.ports.authz_admin}/status", timeout=5)["healthy"] is not None
    ok = call(stack, "procurement-01", body={"amount_cents": 721, "to": "vendor-42"})
    executed_once_as_bound(stack, r, ok)


def test_killed_authorizer_fails_closed(stack):
    stack.stop_process("authorizer")
    r = Receipts(stack)
    for body in (BODY, None):
        resp = call(stack, "procurement-01", method="POST" if body else "GET", path="/v1/transfers" if body else "/v1/balance",
                    body=body)
        assert resp.status == 403 and b"executed" not in resp.body
    wait_receipts_settled(r)
    assert r.count() == 0
    stack.spawn_authorizer("authorizer", stack.authz_socket, stack.ports.authz_admin, False, stack.workdir / "anchor.sqlite3")
    executed_once_as_bound(stack, r, call(stack, "procurement-01"))


def test_tokens_seen_in_this_module_were_issued_by_the_stack(stack):
    """Every receipt of the module names an SAE that verifies: nothing executed under a forged one."""
    lines = Receipts(stack)._lines()
    assert lines
    for line in lines:
        assert line["sae"], line
        verified(line["sae"], stack.jwks, check_time=False)

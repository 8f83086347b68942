"""Attacks on the target's PEP (jwt_authn + Lua + `sealgate pep serve`) by someone who reaches it without the
sidecar, holding real SAEs or making their own. The target checks nothing itself (target_checks_sae=False):
whatever the PEP lets through executes, and every test counts the target's receipts."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import sys
import time

import pytest
from attack_helpers import (
    BODY,
    Receipts,
    body_bytes,
    fresh_claims,
    hs256_with,
    http_call,
    pep_send,
    raw_exchange,
    raw_request,
    real_sae,
    reason,
    resign,
    sign_raw,
    statuses,
    unique,
    wait_receipts_settled,
)

from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, EnvelopeEncoder
from ext_authz.local.net import free_port, tcp_open, wait_until
from ext_authz.local.stack import AUDIENCE, AUTHORITY
from ext_authz.signing.file_key import Ed25519Signer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(pep_stack):
    return pep_stack


@pytest.fixture(scope="module")
def tpl(stack):
    """(token, header, claims) of a real SAE for POST /v1/transfers BODY, issued through the sidecar."""
    return real_sae(stack)


def fresh(stack, tpl, body=BODY, **kw):
    claims = fresh_claims(tpl[2], body, **kw)
    return resign(stack, claims), claims


def refused(stack, receipts, resp, *expected):
    """A 403 with one of the expected reason codes, and nothing executed since `receipts` was taken."""
    assert resp.status == 403, (resp.status, resp.body[:300])
    if expected:
        assert reason(resp) in expected, (reason(resp), resp.body[:300])
    wait_receipts_settled(receipts)
    assert receipts.count() == 0, receipts.new()


# ------------------------------------------------------------------ forged and tampered tokens

def test_foreign_key_token_with_the_authorizers_kid(stack, tpl):
    foreign = Ed25519Signer(os.urandom(32))
    claims = fresh_claims(tpl[2])
    token = sign_raw(tpl[1], claims, foreign.sign)  # the real header, kid included
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_foreign_key_token_with_its_own_kid(stack, tpl):
    token = EnvelopeEncoder(Ed25519Signer(os.urandom(32))).encode(fresh_claims(tpl[2]))
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_tampered_payload_keeps_the_signature(stack, tpl):
    token, claims = fresh(stack, tpl)
    evil_body = {**BODY, "to": "attacker-1", "amount_cents": 99_999_999}
    tampered = fresh_claims(claims, evil_body, jti=claims["jti"], iat=claims["iat"], nbf=claims["nbf"], exp=claims["exp"])
    head, _, sig = token.split(".")
    forged = f"{head}.{b64url(json.dumps(tampered, separators=(',', ':')).encode())}.{sig}"
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, forged, body=evil_body), "SAE_INVALID")
    assert pep_send(stack, token).status == 200  # the genuine one was not used up by the attempt
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


def test_tampered_header_keeps_the_signature(stack, tpl):
    token, _ = fresh(stack, tpl)
    _, payload, sig = token.split(".")
    header = {**tpl[1], "typ": tpl[1]["typ"] + "x"}
    forged = f"{b64url(json.dumps(header).encode())}.{payload}.{sig}"
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, forged), "SAE_INVALID", "SAE_TYPE_INVALID")


def test_signature_spliced_from_another_sae(stack, tpl):
    a, _ = fresh(stack, tpl)
    b, _ = fresh(stack, tpl, body={**BODY, "to": "attacker-1"})
    spliced = ".".join(b.split(".")[:2] + a.split(".")[2:])
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, spliced, body={**BODY, "to": "attacker-1"}), "SAE_INVALID")


def test_signature_stripped(stack, tpl):
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token.rsplit(".", 1)[0] + "."), "SAE_INVALID")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_token(stack, tpl, alg):
    token = sign_raw({**tpl[1], "alg": alg}, fresh_claims(tpl[2]), None)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


@pytest.mark.parametrize("secret", ["raw_public_key", "jwk_x", "jwks_json"])
def test_hs256_with_the_public_key_as_secret(stack, tpl, secret):
    """Algorithm confusion: a verifier that used the public key as an HMAC secret would accept this."""
    key = {"raw_public_key": stack.signer.raw_public, "jwk_x": stack.jwks["keys"][0]["x"].encode(),
           "jwks_json": json.dumps(stack.jwks).encode()}[secret]
    token = sign_raw({**tpl[1], "alg": "HS256"}, fresh_claims(tpl[2]), hs256_with(key))
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_unknown_kid_signed_with_the_real_key(stack, tpl):
    token = sign_raw({**tpl[1], "kid": "rotated-away-" + tpl[1]["kid"][:8]}, fresh_claims(tpl[2]), stack.signer.sign)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_embedded_jwk_header_key_injection(stack, tpl):
    """CVE-2018-0114 style: the token carries its own key in the header."""
    foreign = Ed25519Signer(os.urandom(32))
    header = {**tpl[1], "kid": foreign.kid, "jwk": foreign.public_jwk()}
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, sign_raw(header, fresh_claims(tpl[2]), foreign.sign)), "SAE_INVALID")


def test_jku_and_x5u_headers_pointing_at_attacker_keys(stack, tpl):
    foreign = Ed25519Signer(os.urandom(32))
    port = free_port()  # nothing listens: a verifier that fetched keys from the header would fail differently
    header = {**tpl[1], "kid": foreign.kid, "jku": f"http://127.0.0.1:{port}/jwks.json",
              "x5u": f"http://127.0.0.1:{port}/cert.pem"}
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, sign_raw(header, fresh_claims(tpl[2]), foreign.sign)), "SAE_INVALID")


def test_wrong_audience(stack, tpl):
    token, _ = fresh(stack, tpl, aud="hr-api")
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_other_issuer_with_the_same_key(stack, tpl):
    token, _ = fresh(stack, tpl, iss=tpl[2]["iss"] + "-evil")
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


# ------------------------------------------------------------------ time claims

def test_expired_sae(stack, tpl):
    now = int(time.time())
    token, _ = fresh(stack, tpl, iat=now - 120, nbf=now - 120, exp=now - 60)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_expired_inside_jwt_authn_clock_skew(stack, tpl):
    """jwt_authn allows 5 s of skew; the verifier allows none: an SAE 2 s past exp never executes."""
    now = int(time.time())
    token, _ = fresh(stack, tpl, iat=now - 60, nbf=now - 60, exp=now - 2)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_not_yet_valid_sae(stack, tpl):
    now = int(time.time())
    token, _ = fresh(stack, tpl, iat=now, nbf=now + 120, exp=now + 180)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_iat_in_the_future(stack, tpl):
    now = int(time.time())
    token, _ = fresh(stack, tpl, iat=now + 120, nbf=now, exp=now + 180)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


def test_lifetime_over_300_seconds(stack, tpl):
    now = int(time.time())
    token, _ = fresh(stack, tpl, iat=now, nbf=now, exp=now + 301)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token), "SAE_INVALID")


@pytest.mark.parametrize("field,kind", [("exp", "float"), ("exp", "string"), ("iat", "string"), ("nbf", "float")])
def test_time_claims_of_another_json_type(stack, tpl, field, kind):
    claims = fresh_claims(tpl[2])
    claims[field] = claims[field] + 0.5 if kind == "float" else str(claims[field])
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, resign(stack, claims)), "SAE_INVALID")


# ------------------------------------------------------------------ other envelopes presented as an SAE

def test_denial_presented_as_sae(stack):
    held = stack.agent_call("procurement-01", "POST", "/v1/transfers", {"amount_cents": 5_000_000, "to": "vendor-42"})
    assert held.status == 403 and reason(held) == "AMOUNT_OVER_LIMIT"
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, held.headers["x-sae-denial"], body={"amount_cents": 5_000_000, "to": "vendor-42"}),
            "SAE_INVALID", "SAE_TYPE_INVALID")


def test_sae_claims_under_the_denial_typ(stack, tpl):
    """Signed by the authorizer's key, valid in every claim, but a denial by its typ."""
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, resign(stack, fresh_claims(tpl[2]), DENIAL_TYP)), "SAE_TYPE_INVALID")


def test_approval_presented_as_sae(stack):
    big = {"amount_cents": 2_000_000, "to": "vendor-42"}
    held = stack.agent_call("finance-03", "POST", "/v1/transfers", big)
    assert reason(held) == "HUMAN_APPROVAL_REQUIRED"
    approval = stack.approve(held.headers["x-sae-denial"], big)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, approval, body=big), "SAE_INVALID", "SAE_TYPE_INVALID")


def test_sae_claims_under_the_approval_typ(stack, tpl):
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, resign(stack, fresh_claims(tpl[2]), APPROVAL_TYP)), "SAE_TYPE_INVALID")


# ------------------------------------------------------------------ header duplication and encoding

def raw_pep(stack, method, path, headers, body=b"", authority=AUTHORITY, port=None):
    out = raw_exchange(port or stack.ports.pep, raw_request(method, path, headers + [("Connection", "close")], body, authority))
    return out


def raw_reason(raw):
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"x-sealgate-reason:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def test_two_x_sae_headers(stack, tpl):
    a, ca = fresh(stack, tpl)
    b, cb = fresh(stack, tpl)
    data = body_bytes(BODY)
    r = Receipts(stack)
    out = raw_pep(stack, "POST", "/v1/transfers", [("x-sae", a), ("x-sae", b), ("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(data)))], data)
    assert statuses(out) == [403] and raw_reason(out) == "HEADER_NOT_ALLOWED", out[:400]
    wait_receipts_settled(r)
    assert r.count() == 0
    assert pep_send(stack, a).status == 200 and pep_send(stack, b).status == 200  # neither was used up
    assert r.count(jti=ca["jti"]) == r.count(jti=cb["jti"]) == 1


def test_two_saes_joined_in_one_header(stack, tpl):
    a, _ = fresh(stack, tpl)
    b, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, f"{a},{b}"), "HEADER_NOT_ALLOWED", "SAE_INVALID")


def test_non_canonical_base64url_spelling(stack, tpl):
    """Same signature bytes, other low bits in the last character: jwt_authn accepts it, the verifier must not."""
    token, claims = fresh(stack, tpl)
    head, payload, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(sig) % 4 == 2  # 64 bytes -> 86 characters, 4 unused bits at the end
    spelled = alphabet[alphabet.index(sig[-1]) | 0b0001]
    assert spelled != sig[-1]
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, f"{head}.{payload}.{sig[:-1]}{spelled}"), "SAE_INVALID")
    assert pep_send(stack, token).status == 200  # the legitimate retry executes exactly once
    assert r.count(jti=claims["jti"]) == 1


@pytest.mark.parametrize("trick", ["padding", "standard_alphabet", "bearer_prefix", "authorization_header", "lowercase_typ_segment"])
def test_encoding_tricks_on_x_sae(stack, tpl, trick):
    token, claims = fresh(stack, tpl)
    headers = {}
    if trick == "padding":
        sent = token + "=="
    elif trick == "standard_alphabet":
        sent = token.replace("-", "+").replace("_", "/")
        if sent == token:
            head, payload, sig = token.split(".")
            sent = f"{head}.{payload}.{sig}="
    elif trick == "bearer_prefix":
        sent = "Bearer " + token
    elif trick == "authorization_header":
        sent, headers = None, {"authorization": "Bearer " + token}
    else:
        head, payload, sig = token.split(".")
        sent = f"{head.lower()}.{payload}.{sig}"
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, sent, headers=headers), "SAE_INVALID", "SAE_MISSING", "SAE_TYPE_INVALID")


# ------------------------------------------------------------------ binding to method, path, authority, body

def test_sae_for_another_route(stack):
    """A real SAE for GET /v1/balance, spent on POST /v1/transfers."""
    r = stack.agent_call("procurement-01", "GET", "/v1/balance")
    token = r.json()["sae"]
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, body=BODY), "SAE_BINDING_MISMATCH")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_sae_for_another_method(stack, tpl, method):
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, method=method), "SAE_BINDING_MISMATCH")


@pytest.mark.parametrize("authority", ["hr.internal", "payments.internal.evil.example", "payments-internal"])
def test_sae_for_another_authority(stack, tpl, authority):
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, authority=authority), "SAE_BINDING_MISMATCH")


@pytest.mark.parametrize("path", ["/v1/transfers?amount_cents=99999999", "/v1/transfers?", "/v1/transfers/",
                                  "/v1/transfers/extra", "/v1/transfersx", "/v1/transfers;x=1"],
                         ids=["query_added", "empty_query", "trailing_slash", "extra_segment", "suffix", "matrix_param"])
def test_sae_on_a_path_the_target_would_read_differently(stack, tpl, path):
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    resp = pep_send(stack, token, path=path)
    assert resp.status in (400, 403), resp.status
    if resp.status == 403:
        assert reason(resp) == "SAE_BINDING_MISMATCH"
    wait_receipts_settled(r)
    assert r.count() == 0


@pytest.mark.parametrize("path", ["/v1/./transfers", "/v1//transfers", "//v1/transfers", "/v1/x/../transfers",
                                  "/v1/%74ransfers", "/v1/transfers/.", "/V1/transfers", "/v1/transfers%2f",
                                  "/v1%2Ftransfers", "/v1/transfers%00", "/v1/transfers#frag"],
                         ids=["dot_segment", "double_slash_inside", "double_slash_leading", "dot_dot", "percent_encoded",
                              "trailing_dot", "case", "encoded_slash_end", "encoded_slash", "nul_byte", "fragment"])
def test_path_normalisation_cannot_run_an_sae_twice_or_elsewhere(stack, tpl, path):
    """Whatever Envoy makes of the path, the target runs at most once, and only on the path the SAE names."""
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    resp = pep_send(stack, token, path=path)
    wait_receipts_settled(r)
    if resp.status == 200:
        assert [line["path"] for line in r.new()] == [claims["act"]["p"]]
        assert pep_send(stack, token).status == 403  # and the canonical spelling is now a replay
    else:
        assert resp.status in (400, 403, 404), resp.status
        assert r.count() == 0
        assert pep_send(stack, token).status == 200  # refused attempts do not use the SAE up
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


@pytest.mark.parametrize("authority", ["PAYMENTS.INTERNAL", "Payments.Internal", "payments.internal:80", "payments.internal."])
def test_authority_spelling_cannot_run_an_sae_twice(stack, tpl, authority):
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    first = pep_send(stack, token)
    assert first.status == 200
    again = pep_send(stack, token, authority=authority)
    assert again.status == 403 and reason(again) in ("SAE_REPLAYED", "SAE_BINDING_MISMATCH")
    wait_receipts_settled(r)
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


def test_body_swapped_under_a_valid_sae(stack, tpl):
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, body={**BODY, "to": "attacker-1"}), "SAE_BODY_MISMATCH")
    assert pep_send(stack, token).status == 200
    assert r.count(jti=claims["jti"]) == 1


@pytest.mark.parametrize("variant", [b'{"amount_cents":700,"to":"vendor-42"}', b'{"to": "vendor-42", "amount_cents": 700}',
                                     json.dumps(BODY).encode() + b"\n", json.dumps(BODY).encode() + b'{"to":"attacker-1"}'],
                         ids=["reserialised", "reordered", "trailing_newline", "second_document_appended"])
def test_body_with_the_same_meaning_other_bytes(stack, tpl, variant):
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, body=variant), "SAE_BODY_MISMATCH")


# ------------------------------------------------------------------ override headers straight to the PEP

@pytest.mark.parametrize("header,value", [("x-http-method-override", "DELETE"), ("x-original-url", "/v1/exports"),
                                          ("x-rewrite-url", "/v1/exports"), ("x-forwarded-prefix", "/admin")])
def test_override_headers_with_a_valid_sae_at_the_pep(stack, tpl, header, value):
    """A target framework that obeys these would run another action than the SAE names. The sidecar refuses
    them (HEADER_NOT_ALLOWED); the PEP must too, for an SAE used without the sidecar."""
    token, _ = fresh(stack, tpl)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, headers={header: value}), "HEADER_NOT_ALLOWED")


# ------------------------------------------------------------------ request smuggling (raw sockets to the PEP)

def smuggle_cases(token, marker):
    data = body_bytes(BODY)
    inner = f"GET /v1/balance/{marker} HTTP/1.1\r\nHost: {AUTHORITY}\r\nx-sae: {token}\r\n\r\n".encode()
    chunked = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    base = [("x-sae", token), ("Content-Type", "application/json")]
    return {
        "cl_te": (base + [("Content-Length", str(len(chunked))), ("Transfer-Encoding", "chunked")], chunked + inner),
        "te_cl": (base + [("Transfer-Encoding", "chunked"), ("Content-Length", "4")], chunked + inner),
        "two_content_lengths": (base + [("Content-Length", str(len(data))), ("Content-Length", str(len(data) + len(inner)))],
                                data + inner),
        "te_obfuscated_space": (base + [("Transfer-Encoding ", "chunked"), ("Content-Length", str(len(data)))], data + inner),
        "te_xchunked": (base + [("Transfer-Encoding", "xchunked"), ("Content-Length", str(len(data)))], data + inner),
        "te_chunked_identity": (base + [("Transfer-Encoding", "chunked, identity"), ("Content-Length", str(len(data)))],
                                chunked + inner),
        "negative_content_length": (base + [("Content-Length", "-1")], data + inner),
    }


@pytest.mark.parametrize("case", ["cl_te", "te_cl", "two_content_lengths", "te_obfuscated_space", "te_xchunked",
                                  "te_chunked_identity", "negative_content_length"])
def test_request_smuggling_to_the_pep(stack, tpl, case):
    token, claims = fresh(stack, tpl)
    marker = unique("smuggled")
    headers, body = smuggle_cases(token, marker)[case]
    r = Receipts(stack)
    out = raw_pep(stack, "POST", "/v1/transfers", headers, body)
    wait_receipts_settled(r)
    assert r.count(contains=marker) == 0, r.new()  # the hidden request never ran
    assert r.count() <= 1 and all(line["path"] == "/v1/transfers" for line in r.new()), r.new()
    assert all(s in (200, 400, 403, 411, 413, 501) for s in statuses(out)), out[:300]


def test_pipelined_requests_reuse_one_sae(stack, tpl):
    token, claims = fresh(stack, tpl)
    data = body_bytes(BODY)
    one = raw_request("POST", "/v1/transfers", [("x-sae", token), ("Content-Type", "application/json"),
                                                ("Content-Length", str(len(data)))], data)
    r = Receipts(stack)
    out = raw_exchange(stack.ports.pep, one * 3 + raw_request("GET", "/", [("Connection", "close")]))
    assert statuses(out)[:3].count(200) == 1, out[:600]
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


# ------------------------------------------------------------------ replay

def test_replay_sequential(stack, tpl):
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    assert pep_send(stack, token).status == 200
    for _ in range(3):
        again = pep_send(stack, token)
        assert (again.status, reason(again)) == (403, "SAE_REPLAYED")
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


def test_replay_of_a_real_sae_issued_through_the_sidecar(stack):
    token, _, claims = real_sae(stack, body={"amount_cents": 701, "to": "vendor-42"})  # executed once already
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token, body={"amount_cents": 701, "to": "vendor-42"}), "SAE_REPLAYED")


def test_replay_concurrent_threads(stack, tpl):
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: (lambda x: (x.status, reason(x)))(pep_send(stack, token)), range(32)))
    assert results.count((200, None)) == 1, results
    assert all(x == (403, "SAE_REPLAYED") for x in results if x[0] != 200), results
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


def restart_pep(stack, kill):
    for name in ("pep", "pep_verifier"):
        if kill:
            os.killpg(stack.procs[name].pid, signal.SIGKILL)
            stack.procs.pop(name).wait(10)
        else:
            stack.stop_process(name)
    verifier = stack.spawn_pep_verifier("pep_verifier", f"sqlite://{stack.workdir / 'redeemed.sqlite3'}")
    stack.spawn_pep("pep", stack.ports.pep, stack.socket("pep-admin"), verifier)


@pytest.mark.parametrize("kill", [False, True], ids=["clean_restart", "kill_9"])
def test_replay_after_pep_restart(stack, tpl, kill):
    token, claims = fresh(stack, tpl)
    r = Receipts(stack)
    assert pep_send(stack, token).status == 200
    restart_pep(stack, kill)
    again = pep_send(stack, token)
    assert (again.status, reason(again)) == (403, "SAE_REPLAYED")
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1


def test_replay_across_two_pep_workers(stack, tpl):
    port = free_port()
    stack.spawn_pep("pep_two_workers", port, free_port(), stack.pep_verifier, concurrency=2)
    try:
        for _ in range(2):
            token, claims = fresh(stack, tpl)
            r = Receipts(stack)
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda _, t=token: pep_send(stack, t, port=port).status, range(32)))
            assert results.count(200) == 1, results
            assert r.count(jti=claims["jti"]) == 1 and r.count() == 1
        # and an SAE spent at one PEP is spent at the other
        token, claims = fresh(stack, tpl)
        r = Receipts(stack)
        assert pep_send(stack, token, port=port).status == 200
        assert reason(pep_send(stack, token)) == "SAE_REPLAYED"
        assert r.count(jti=claims["jti"]) == 1
    finally:
        stack.stop_process("pep_two_workers")


# ------------------------------------------------------------------ the target port, bypassing the PEP

def test_target_listens_on_loopback_only(stack):
    """In the local stack the target is on 127.0.0.1; in production nothing but the PEP reaches it (same pod /
    network namespace) and the eBPF egress allowlist keeps agent cgroups from connecting anywhere but the
    mesh. What is testable here: the port is bound to loopback, not to the host's other addresses."""
    assert tcp_open(stack.ports.target)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        host_ip = probe.getsockname()[0]
    except OSError:
        host_ip = None
    finally:
        probe.close()
    if host_ip is None or host_ip.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to probe from")
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((host_ip, stack.ports.target)) != 0


@pytest.fixture(scope="module")
def checking_target(stack):
    """A second target that checks SAEs itself (sdk.check_sae, as the default local stack's does)."""
    port = free_port()
    receipts = stack.workdir / "checking-target-receipts.jsonl"
    stack._spawn("checking_target", [sys.executable, "-m", "ext_authz.local.target", "--port", str(port),
                                     "--receipts", str(receipts), "--jwks", str(stack.workdir / "jwks.json"),
                                     "--issuer", stack.issuer, "--audience", AUDIENCE])
    wait_until(lambda: tcp_open(port), 20, "checking target")
    yield port, receipts
    stack.stop_process("checking_target")


def test_target_port_bypassing_the_pep_without_or_with_a_forged_sae(stack, tpl, checking_target):
    port, path = checking_target
    r = Receipts(stack, path)
    none = http_call(port, "POST", "/v1/transfers", BODY)
    assert (none.status, reason(none)) == (403, "SAE_MISSING")
    forged = EnvelopeEncoder(Ed25519Signer(os.urandom(32))).encode(fresh_claims(tpl[2]))
    bad = http_call(port, "POST", "/v1/transfers", BODY, {"x-sae": forged})
    assert (bad.status, reason(bad)) == (403, "SAE_INVALID")
    token, _ = fresh(stack, tpl)
    other = http_call(port, "POST", "/v1/transfers", {**BODY, "to": "attacker-1"}, {"x-sae": token})
    assert (other.status, reason(other)) == (403, "SAE_BODY_MISMATCH")
    assert r.count() == 0


def test_replay_straight_to_the_target_port_is_refused_by_its_own_redemption(stack, tpl, checking_target):
    """A target checking SAEs itself redeems them too (sdk.check_sae with a store): reached past its PEP, an SAE
    still executes once."""
    port, path = checking_target
    token, claims = fresh(stack, tpl)
    r = Receipts(stack, path)
    first = http_call(port, "POST", "/v1/transfers", BODY, {"x-sae": token})
    assert first.status == 200
    again = http_call(port, "POST", "/v1/transfers", BODY, {"x-sae": token})
    assert again.status == 403 and reason(again) == "SAE_REPLAYED"
    assert r.count(jti=claims["jti"]) == 1


# ------------------------------------------------------------------ the PEP's verifier down (last: restarts it)

def test_pep_verifier_killed_fails_closed(stack, tpl):
    token, claims = fresh(stack, tpl)
    os.killpg(stack.procs["pep_verifier"].pid, signal.SIGKILL)
    stack.procs.pop("pep_verifier").wait(10)
    r = Receipts(stack)
    refused(stack, r, pep_send(stack, token))
    stack.pep_verifier = stack.spawn_pep_verifier("pep_verifier", f"sqlite://{stack.workdir / 'redeemed.sqlite3'}")
    wait_until(lambda: pep_send(stack, token).status == 200, 10, "the PEP to reach its restarted verifier")
    assert r.count(jti=claims["jti"]) == 1 and r.count() == 1

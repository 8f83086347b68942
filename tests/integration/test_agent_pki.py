"""The agent PKI with the real parts: Ed25519 agent certificates from the intermediate CA through the sidecar
Envoy, the authorizer asking the OCSP responder (HTTP on loopback) beside the on-chain registry, the sidecar's
certificate renewed through file SDS under load, expired certificates refused at the TLS layer, and every SAE
stapled with the signing certificate's chain and OCSP answer, verified offline by `sealgate verify` with the
responder down.

Tests run in file order; the last ones stop the OCSP responder."""

import base64
import datetime as dt
import http.client
import json
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from cryptography import x509

from ext_authz import reasons
from ext_authz.envelope.jws import DENIAL_TYP, verify
from ext_authz.local.net import wait_until
from ext_authz.local.stack import AUTHORITY, LocalStack
from ext_authz.pki.ca import CertificateAuthority, KeySpec, init_pki
from ext_authz.pki.events import read_events

pytestmark = pytest.mark.slow
VALIDITY = 8  # OCSP answers' nextUpdate - thisUpdate: the authorizer's cache, the staple's life
SAES = {}


@pytest.fixture(scope="module")
def pki_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("agentpki"), agent_pki=True, ocsp_validity_seconds=VALIDITY,
                    stapling=True) as s:
        yield s


def transfer(stack, agent, amount=100, **kw):
    return stack.agent_call(agent, "POST", "/v1/transfers", {"amount_cents": amount, "to": "vendor-42"}, **kw)


def executed(stack):
    path = stack.workdir / "target-receipts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def context_for(stack, cert, key):
    ctx = ssl.create_default_context(cafile=str(stack.workdir / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_an_ed25519_agent_certificate_from_the_intermediate_is_accepted_and_checked_over_ocsp(pki_stack):
    stack = pki_stack
    cert = x509.load_pem_x509_certificates(stack.agent_certs["procurement-01"][0].read_bytes())
    assert cert[0].public_key().__class__.__name__ == "Ed25519PublicKey" and cert[1] == stack.authority.intermediate
    r = transfer(stack, "procurement-01")
    assert r.status == 200, r.body
    assert stack.status()["decisions"]["OK"] >= 1
    SAES["allowed"] = sae = r.json()["sae"]
    header = json.loads(base64.urlsafe_b64decode(sae.split(".")[0] + "==="))
    assert set(header) == {"alg", "kid", "typ", "x5c", "ocsp"} and len(header["x5c"]) == 2  # stapled


def test_a_revoked_agent_certificate_is_denied_within_one_ocsp_cycle(pki_stack):
    stack = pki_stack
    assert transfer(stack, "procurement-01").status == 200  # its good answer is now cached
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "pki", "revoke", "--dir", str(stack.pki_dir),
                          "--spiffe-id", stack.spiffe_id("procurement-01"), "--reason", "key_compromise"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    revoked_at = time.time()

    def denied():
        r = transfer(stack, "procurement-01")
        if r.status == 200:
            return False  # the cached good answer, until its nextUpdate
        assert r.status == 403 and r.headers["x-sealgate-reason"] == reasons.IDENTITY_REVOKED, r.body
        return r

    r = wait_until(denied, VALIDITY + 10, "the revocation to reach the authorizer")
    assert time.time() - revoked_at <= VALIDITY + 10
    denial = verify(r.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)
    assert denial["reason"] == reasons.IDENTITY_REVOKED and "key_compromise" in denial["msg"]
    assert transfer(stack, "procurement-01").status == 403  # and stays denied
    kinds = [e["unmapped"]["lifecycle"] for e in read_events(stack.pki_dir / "events.jsonl")]
    assert kinds[-1] == "revoked"


def test_an_expired_certificate_is_refused_at_the_tls_layer_before_the_authorizer(pki_stack, tmp_path):
    stack = pki_stack
    past = CertificateAuthority(stack.pki_dir, clock=lambda: time.time() - 3600)
    try:
        expired = past.issue_agent(stack.spiffe_id("finance-03"), dt.timedelta(minutes=5))  # ended 55 min ago
    finally:
        past.close()
    cert, key = expired.write(tmp_path, "expired")
    decisions = sum(stack.status()["decisions"].values())
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        transfer(stack, None, context=context_for(stack, cert, key))
    assert sum(stack.status()["decisions"].values()) == decisions  # the authorizer never saw it


def test_the_sidecar_certificate_renews_under_load_without_a_failed_request_or_a_dropped_connection(pki_stack):
    stack = pki_stack
    agent = "finance-03"

    def served_serial():
        ctx = stack.tls_context(agent)
        with ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", stack.ports.sidecar)),
                             server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number

    old = served_serial()
    kept = stack.agent_connection(agent, stack.ports.sidecar)  # one connection open across the renewal
    kept.request("GET", "/v1/balance", headers={"host": AUTHORITY})
    first = kept.getresponse()
    first.read()
    assert first.status == 200
    sock = kept.sock

    statuses: Counter = Counter()
    stop = threading.Event()

    def load():
        while not stop.is_set():
            statuses[stack.agent_call(agent, "GET", "/v1/balance").status] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    [t.start() for t in threads]
    try:
        wait_until(lambda: sum(statuses.values()) >= 10, 30, "load before the renewal")
        renewer = stack.sidecar_renewer
        assert not renewer.renew_if_due()  # fresh: not due
        renewer._clock = lambda: time.time() + 17 * 3600  # 17 h on: past 2/3 of the 24 h, what the loop then does
        assert renewer.renew_if_due()
        new = x509.load_pem_x509_certificates(stack.sidecar_renewer.cert_path.read_bytes())[0].serial_number
        wait_until(lambda: served_serial() == new, 30, "Envoy to serve the renewed certificate (file SDS)")
        n = sum(statuses.values())
        wait_until(lambda: sum(statuses.values()) >= n + 10, 30, "load after the renewal")
    finally:
        stop.set()
        [t.join() for t in threads]
    assert new != old
    assert set(statuses) == {200}, statuses  # finance-03 may read its balance: every request of the load succeeded
    # the connection opened before the renewal still works (HTTP/1.1 keep-alive on the old handshake)
    assert kept.sock is sock  # not closed by Envoy meanwhile
    kept.request("GET", "/v1/balance", headers={"host": AUTHORITY})
    again = kept.getresponse()
    again.read()
    assert again.status == 200 and kept.sock is sock  # the same TLS connection, not a reconnect
    assert x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number == old  # its old handshake
    kept.close()


def test_with_the_ocsp_responder_down_an_uncached_certificate_is_denied_status_unknown(pki_stack, tmp_path):
    stack = pki_stack
    fresh = stack.authority.issue_agent(stack.spiffe_id("finance-03"))
    cert, key = fresh.write(tmp_path, "fresh")
    stack.stop_process("ocsp")
    r = transfer(stack, None, context=context_for(stack, cert, key))
    assert r.status == 403 and r.headers["x-sealgate-reason"] == reasons.IDENTITY_STATUS_UNKNOWN, r.body
    assert verify(r.headers["x-sae-denial"], stack.jwks, typ=DENIAL_TYP)["reason"] == reasons.IDENTITY_STATUS_UNKNOWN


def test_sealgate_verify_checks_the_staple_offline_with_the_responder_down(pki_stack):
    stack = pki_stack
    (stack.workdir / "jwks-file.json").write_text(json.dumps(stack.jwks))
    (stack.workdir / "allowed.jwt").write_text(SAES["allowed"])
    argv = [sys.executable, "-m", "ext_authz.cli", "verify", f"@{stack.workdir / 'allowed.jwt'}", "--jwks",
            str(stack.workdir / "jwks-file.json"), "--manifest", str(stack.workdir / "addresses.json"), "--anchor-db",
            str(stack.workdir / "anchor.sqlite3"), "--trust-root", str(stack.pki_dir / "root.crt")]

    def verified():
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return out if out.returncode == 0 else None

    out = wait_until(verified, 60, "the SAE to be anchored and verify")
    assert "OCSP good" in out.stdout and "chained to the trust root" in out.stdout
    other = init_pki(stack.workdir / "other-pki", stack.trust_domain, root=KeySpec(file="r.seed"),
                     intermediate=KeySpec(file="i.seed"))
    other.close()
    other_root = stack.workdir / "other-pki" / "root.crt"  # a PKI that never certified the authorizer's key
    wrong = subprocess.run(argv[:-1] + [str(other_root)], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "INVALID SAE_INVALID" in wrong.stdout


def test_with_no_fresh_staple_the_authorizer_signs_nothing(pki_stack):
    """The responder stayed down past the staple's nextUpdate: an envelope without a valid staple would be one
    the verifier rejects, so the authorizer denies unsigned (SIGNING_FAILED) rather than sign it."""
    stack = pki_stack

    def unsigned():
        r = transfer(stack, "finance-03")
        return r if r.headers.get("x-sealgate-reason") == reasons.SIGNING_FAILED else None

    r = wait_until(unsigned, VALIDITY + 10, "the staple to expire")
    assert r.status == 403 and "x-sae-denial" not in r.headers
    status = stack.status()  # and the authorizer says why, rather than report itself healthy
    assert status["healthy"] is False and "OCSP" in status["signing_error"]

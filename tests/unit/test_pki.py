"""The agent PKI (pki/ca.py) and OCSP (pki/ocsp.py) over real HTTP on loopback, with file CA keys (the token
variants are in tests/integration/test_hsm.py)."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from ext_authz import reasons
from ext_authz.errors import ConfigError, InputRejected
from ext_authz.pki.ca import CertificateAuthority, KeySpec, init_pki
from ext_authz.pki.events import read_events
from ext_authz.pki.ocsp import CertStatus, OcspError, OcspResponder, fetch_ocsp, ocsp_request, serve_ocsp, verify_response

TD = "sealgate.local"
AGENT = f"spiffe://{TD}/agent/procurement-01"


@pytest.fixture
def pki(tmp_path):
    ca = init_pki(tmp_path / "pki", TD, root=KeySpec(file="keys/root.seed"), intermediate=KeySpec(file="keys/int.seed"),
                  ocsp_url="http://127.0.0.1:1/ocsp")
    yield ca
    ca.close()


@pytest.fixture
def responder(pki):
    r = OcspResponder.from_directory(pki.directory, pki.status, validity_seconds=60)
    httpd = serve_ocsp(("127.0.0.1", 0), r)
    yield r, f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def test_the_hierarchy_is_root_then_intermediate_then_a_24_hour_ed25519_agent_cert(pki):
    issued = pki.issue_agent(AGENT)
    cert, chain = issued.cert, x509.load_pem_x509_certificates(issued.chain_pem)
    assert chain[1] == pki.intermediate
    cert.verify_directly_issued_by(pki.intermediate)
    pki.intermediate.verify_directly_issued_by(pki.root)
    pki.root.verify_directly_issued_by(pki.root)
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [AGENT]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=24, minutes=1)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert pki.intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert (pki.root.not_valid_after_utc - pki.root.not_valid_before_utc).days == 3650
    assert (pki.intermediate.not_valid_after_utc - pki.intermediate.not_valid_before_utc).days == 730
    key = serialization.load_pem_private_key(issued.key_pem, None)
    assert key.public_key() == cert.public_key()


def test_a_spiffe_id_of_another_trust_domain_or_a_week_long_cert_is_refused(pki):
    with pytest.raises(ConfigError, match="SPIFFE ID under"):
        pki.issue_agent("spiffe://evil.example/agent/x")
    with pytest.raises(ConfigError, match="lifetime"):
        pki.issue_agent(AGENT, dt.timedelta(days=8))


def test_ocsp_over_http_says_good_then_revoked_after_the_revoke(pki, responder):
    _, url = responder
    cert = pki.issue_agent(AGENT).cert
    good = fetch_ocsp(url, cert, pki.intermediate)
    assert good.status == "good" and good.next_update - good.this_update == dt.timedelta(seconds=60)
    assert pki.revoke(subject=AGENT, reason="key_compromise") == [cert.serial_number]
    bad = fetch_ocsp(url, cert, pki.intermediate)
    assert (bad.status, bad.reason) == ("revoked", "key_compromise")
    kinds = [e["unmapped"]["lifecycle"] for e in read_events(pki.directory / "events.jsonl")]
    assert kinds[-2:] == ["issued", "revoked"] and kinds.count("issued") >= 3  # intermediate, OCSP signer, agent


def test_a_second_certificate_for_a_running_agent_is_a_renewal_event(pki):
    pki.issue_agent(AGENT)
    pki.issue_agent(AGENT)
    events = read_events(pki.directory / "events.jsonl")
    assert [e["activity_name"] for e in events[-2:]] == ["Create", "Update"]
    assert events[-1]["class_uid"] == 3004 and events[-1]["type_uid"] == 300403
    assert events[-1]["entity"]["data"]["subject_spiffe_id"] == AGENT


def test_expiry_warnings_are_emitted_once_per_certificate(pki):
    short = pki.issue_agent(AGENT, dt.timedelta(minutes=10))
    pki.issue_agent(f"spiffe://{TD}/agent/other")  # 24 h: not within the window
    assert [w["serial"] for w in pki.expiring(3600)] == [f"{short.serial:x}"]
    assert pki.expiring(3600) == []
    assert read_events(pki.directory / "events.jsonl")[-1]["activity_id"] == 99


def test_a_certificate_the_ca_never_issued_is_unknown(pki, responder, tmp_path):
    _, url = responder
    other = init_pki(tmp_path / "other", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    stranger = other.issue_agent(AGENT).cert
    # same issuer name, another key: the responder will not answer for another CA's key
    with pytest.raises(OcspError, match="UNAUTHORIZED"):
        fetch_ocsp(url, stranger, other.intermediate)
    other.close()


def test_a_response_signed_by_a_responder_the_ca_did_not_certify_is_refused(pki, tmp_path):
    other = init_pki(tmp_path / "other", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    cert = pki.issue_agent(AGENT).cert
    forger = OcspResponder.from_directory(other.directory, lambda serial: ("good", None, None))
    forger.issuer = pki.intermediate  # answers for our CA with its own (uncertified) signer
    der = forger.respond(ocsp_request(cert, pki.intermediate))
    with pytest.raises(OcspError, match="not issued by the CA|neither the CA"):
        verify_response(der, cert, pki.intermediate, dt.datetime.now(dt.UTC))
    other.close()


def test_a_stale_response_is_refused_at_a_time_after_its_next_update(pki):
    cert = pki.issue_agent(AGENT).cert
    r = OcspResponder.from_directory(pki.directory, pki.status, validity_seconds=60)
    der = r.respond(ocsp_request(cert, pki.intermediate))
    now = dt.datetime.now(dt.UTC)
    assert verify_response(der, cert, pki.intermediate, now + dt.timedelta(seconds=59)).status == "good"
    with pytest.raises(OcspError, match="not at"):
        verify_response(der, cert, pki.intermediate, now + dt.timedelta(seconds=120))


def test_cert_status_caches_until_next_update_and_fails_closed(pki, responder):
    r, url = responder
    issued = pki.issue_agent(AGENT)
    pem = issued.cert_pem.decode()
    clock = [dt.datetime.now(dt.UTC).timestamp()]
    status = CertStatus(pki.intermediate, url, clock=lambda: clock[0])
    status.check(pem)
    status.check(pem)
    assert status.fetches == 1  # cached
    pki.revoke(serial=issued.serial)
    status.check(pem)  # still the cached good answer: revocation shows within one OCSP cycle
    clock[0] += 61
    with pytest.raises(InputRejected) as err:
        status.check(pem)
    assert err.value.reason == reasons.IDENTITY_REVOKED and status.fetches == 2


def test_cert_status_refuses_when_the_responder_is_down(pki):
    pem = pki.issue_agent(AGENT).cert_pem.decode()
    with pytest.raises(InputRejected) as err:
        CertStatus(pki.intermediate, "http://127.0.0.1:1/", timeout=0.5).check(pem)
    assert err.value.reason == reasons.IDENTITY_STATUS_UNKNOWN


def test_cert_status_refuses_a_certificate_of_another_issuer(pki, tmp_path):
    other = init_pki(tmp_path / "other", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    other_int = other.intermediate
    other.close()
    pem = pki.issue_agent(AGENT).cert_pem.decode()
    status = CertStatus(other_int.__class__ and x509.load_pem_x509_certificate(pki.root.public_bytes(
        serialization.Encoding.PEM)), "http://127.0.0.1:1/")
    with pytest.raises(InputRejected) as err:
        status.check(pem)
    assert err.value.reason == reasons.IDENTITY_STATUS_UNKNOWN


def test_pki_directory_reopens(pki):
    issued = pki.issue_agent(AGENT)
    again = CertificateAuthority(pki.directory)
    try:
        assert again.status(issued.serial) == ("good", None, None)
        assert again.status(12345) == ("unknown", None, None)
    finally:
        again.close()


def test_renewal_before_expiry_writes_new_files_and_can_keep_a_bound_key(pki, tmp_path):
    import json
    import time

    from ext_authz.authz.identity import spki_fingerprint
    from ext_authz.pki.renewal import Renewer

    clock = [time.time()]
    fresh = Renewer(pki, AGENT, tmp_path, "a", dt.timedelta(hours=24), clock=lambda: clock[0])
    kept = Renewer(pki, AGENT, tmp_path / "kept", "a", dt.timedelta(hours=24), keep_key=True, clock=lambda: clock[0])
    for r in (fresh, kept):
        assert r.renew_if_due() and not r.renew_if_due()  # issued, then not due
    before = {r: (r.cert_path.read_text(), spki_fingerprint(r.cert_path.read_text())) for r in (fresh, kept)}
    clock[0] += 15 * 3600
    assert not fresh.renew_if_due()  # 15 h of 24: not yet at 2/3
    clock[0] += 2 * 3600
    for r in (fresh, kept):
        assert r.renew_if_due()
        assert r.cert_path.read_text() != before[r][0]
        doc = json.loads(r.sds_path.read_text())["resources"][0]
        assert doc["tls_certificate"]["certificate_chain"]["inline_string"] == r.cert_path.read_text()
    assert spki_fingerprint(fresh.cert_path.read_text()) != before[fresh][1]  # a new key
    assert spki_fingerprint(kept.cert_path.read_text()) == before[kept][1]  # the bound key, a new certificate
    lifecycle = [e["unmapped"]["lifecycle"] for e in read_events(pki.directory / "events.jsonl")]
    assert lifecycle[-2:] == ["renewed", "renewed"]

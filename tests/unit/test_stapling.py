"""OCSP stapling (pki/stapling.py): envelopes carry x5c and a fresh OCSP answer; verified offline against the
root; a revoked or unanswered signing certificate signs nothing. The responder is real HTTP on loopback."""

import base64
import datetime as dt
import json

import pytest

from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import DENIAL_TYP, EnvelopeEncoder
from ext_authz.errors import ConfigError, SaeInvalid, SigningError
from ext_authz.pki.ca import KeySpec, init_pki
from ext_authz.pki.ocsp import OcspResponder, serve_ocsp
from ext_authz.pki.stapling import Stapler, verify_stapled
from ext_authz.pki.x509sign import public_key_of
from ext_authz.signing.file_key import Ed25519Signer, P256Signer

TD = "sealgate.local"
ISSUER = f"spiffe://{TD}/sealgate/authorizer"


def claims(iat):
    return {"iss": ISSUER, "sub": "s", "aud": "a", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": iat, "nbf": iat,
            "exp": iat + 60, "jti": f"j{iat}", "ctx": {}, "chain": {}}


@pytest.fixture
def pki(tmp_path):
    ca = init_pki(tmp_path / "pki", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    responder = OcspResponder.from_directory(ca.directory, ca.status, validity_seconds=60)
    httpd = serve_ocsp(("127.0.0.1", 0), responder)
    yield ca, f"http://127.0.0.1:{httpd.server_port}/", httpd
    httpd.shutdown()
    httpd.server_close()
    ca.close()


def stapled_encoder(ca, url, signer):
    chain = ca.issue_sae_signer(ISSUER, public_key_of(signer), dt.timedelta(days=1))
    stapler = Stapler(chain.chain_pem, url, signer)
    return EnvelopeEncoder(signer, staple=stapler), stapler, chain


def header(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))


@pytest.mark.parametrize("signer", [Ed25519Signer(bytes(32)), P256Signer.generate()], ids=["EdDSA", "ES256"])
def test_a_stapled_sae_and_denial_verify_offline_with_the_responder_down(pki, signer):
    ca, url, httpd = pki
    encoder, _, chain = stapled_encoder(ca, url, signer)
    now = int(dt.datetime.now(dt.UTC).timestamp())
    sae = encoder.encode(claims(now))
    denial = encoder.encode({"iss": ISSUER, "pol": {}, "iat": now, "jti": "d", "reason": "X"}, DENIAL_TYP)
    httpd.shutdown()  # offline from here
    result = verify_stapled(sae, ca.root, issuer=ISSUER)
    assert result.claims == claims(now) and result.signer_cert == chain.cert and result.ocsp.status == "good"
    assert set(header(sae)) == {"alg", "kid", "typ", "x5c", "ocsp"} and len(header(sae)["x5c"]) == 2
    assert verify_stapled(denial, ca.root, typ=DENIAL_TYP).claims["reason"] == "X"
    assert len(sae) < 8192


def test_the_staple_is_refreshed_and_an_sae_after_its_next_update_would_not_verify(pki):
    ca, url, _ = pki
    encoder, stapler, _ = stapled_encoder(ca, url, Ed25519Signer(bytes(32)))
    now = int(dt.datetime.now(dt.UTC).timestamp())
    # an envelope claiming issuance long after the stapled answer's nextUpdate: the staple does not vouch for it
    late = encoder.encode(claims(now + 3600))
    with pytest.raises(SaeInvalid, match="does not vouch"):
        verify_stapled(late, ca.root)
    version = stapler.version
    stapler.refresh()
    assert stapler.version == version + 1


def test_a_revoked_signing_certificate_signs_nothing_once_the_staple_says_so(pki):
    ca, url, _ = pki
    encoder, stapler, chain = stapled_encoder(ca, url, Ed25519Signer(bytes(32)))
    ca.revoke(serial=chain.serial, reason="key_compromise")
    stapler.refresh()
    with pytest.raises(SigningError, match="revoked"):
        encoder.encode(claims(1))


def test_no_fresh_answer_past_next_update_signs_nothing(pki):
    ca, url, httpd = pki
    signer = Ed25519Signer(bytes(32))
    chain = ca.issue_sae_signer(ISSUER, public_key_of(signer), dt.timedelta(days=1))
    clock = [dt.datetime.now(dt.UTC).timestamp()]
    stapler = Stapler(chain.chain_pem, url, signer, clock=lambda: clock[0])
    encoder = EnvelopeEncoder(signer, staple=stapler)
    encoder.encode(claims(1))
    httpd.shutdown()
    stapler.refresh()  # fails: the last answer stays in use until its nextUpdate
    encoder.encode(claims(2))
    clock[0] += 61
    with pytest.raises(SigningError, match="no fresh OCSP answer"):
        encoder.encode(claims(3))


def test_a_chain_for_another_key_is_refused_at_start(pki):
    ca, url, _ = pki
    chain = ca.issue_sae_signer(ISSUER, public_key_of(Ed25519Signer(bytes(32))), dt.timedelta(days=1))
    with pytest.raises(ConfigError, match="not for the SAE signing key"):
        Stapler(chain.chain_pem, url, Ed25519Signer(bytes([1]) * 32))


def _swap_header(token, **changes):
    h = {**header(token), **changes}
    head = b64url(json.dumps(h, separators=(",", ":"), sort_keys=True).encode())
    return ".".join([head, *token.split(".")[1:]])


def test_a_chain_to_another_root_or_a_staple_for_another_certificate_is_refused(pki, tmp_path):
    ca, url, _ = pki
    encoder, _, _ = stapled_encoder(ca, url, Ed25519Signer(bytes(32)))
    now = int(dt.datetime.now(dt.UTC).timestamp())
    sae = encoder.encode(claims(now))
    other = init_pki(tmp_path / "other", TD, root=KeySpec(file="r.seed"), intermediate=KeySpec(file="i.seed"))
    with pytest.raises(SaeInvalid, match="trust root"):
        verify_stapled(sae, other.root)
    # the attacker self-signs an envelope with his own key and a chain from his own CA: not our root
    mallory = Ed25519Signer(bytes([9]) * 32)
    forged_chain = other.issue_sae_signer(ISSUER, public_key_of(mallory), dt.timedelta(days=1))
    other_responder = OcspResponder.from_directory(other.directory, other.status)
    httpd = serve_ocsp(("127.0.0.1", 0), other_responder)
    try:
        forged = EnvelopeEncoder(mallory, staple=Stapler(forged_chain.chain_pem, f"http://127.0.0.1:{httpd.server_port}/",
                                                          mallory)).encode(claims(now))
    finally:
        httpd.shutdown()
        httpd.server_close()
    with pytest.raises(SaeInvalid, match="trust root"):
        verify_stapled(forged, ca.root)
    # our chain with the forged envelope's staple (an answer about another certificate): the signature breaks first,
    # and a header naming our chain over mallory's signature does not verify either
    with pytest.raises(SaeInvalid):
        verify_stapled(_swap_header(forged, x5c=header(sae)["x5c"]), ca.root)
    other.close()

"""ES256 (P-256) beside EdDSA: the file key, the DER/r||s conversions, low s, alg confusion, the CLI."""

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from joserfc import jws
from joserfc.jwk import KeySet

from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import SAE_TYP, EnvelopeEncoder, verify
from ext_authz.errors import ConfigError, SaeInvalid, SigningError
from ext_authz.signing.base import jwks_of
from ext_authz.signing.ecdsa import (
    P256_HALF_ORDER,
    P256_ORDER,
    is_low_s,
    jose_from_der,
    jose_from_token,
    verify_jose,
)
from ext_authz.signing.file_key import Ed25519Signer, P256Signer, load_file_signer, new_key_file


def b64decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


CLAIMS = {"iss": "spiffe://t/a", "sub": "s", "aud": "s", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": 100, "nbf": 100,
          "exp": 160, "jti": "j", "ctx": {}, "chain": {}}


def raw_der_signature_with_high_s(key, message):
    """Raw ECDSA until it gives a high s (half of them do), as a token or OpenSSL may."""
    for _ in range(200):
        der = key.sign(message, ec.ECDSA(hashes.SHA256()))
        if decode_dss_signature(der)[1] > P256_HALF_ORDER:
            return der
    raise AssertionError("200 signatures without a high s")


def test_der_from_cryptography_becomes_low_s_r_concat_s_that_still_verifies():
    key = ec.generate_private_key(ec.SECP256R1())
    der = raw_der_signature_with_high_s(key, b"m")
    r, s = decode_dss_signature(der)
    jose = jose_from_der(der)
    assert len(jose) == 64 and jose[:32] == r.to_bytes(32, "big")
    assert int.from_bytes(jose[32:], "big") == P256_ORDER - s and is_low_s(jose)
    assert verify_jose(key.public_key(), b"m", jose)
    assert not verify_jose(key.public_key(), b"other message", jose)


def test_a_tokens_r_concat_s_and_a_tokens_der_give_the_same_jose_signature():
    key = ec.generate_private_key(ec.SECP256R1())
    der = raw_der_signature_with_high_s(key, b"m")
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # CKM_ECDSA's output per PKCS#11
    assert jose_from_token(raw) == jose_from_token(der) == jose_from_der(der)


@pytest.mark.parametrize("bad", [b"", b"\x30\x00", bytes(64), b"\x01" * 32 + bytes(32)], ids=["empty", "empty_der", "zero_r_s", "zero_s"])
def test_garbage_from_a_token_is_a_signing_error_not_a_signature(bad):
    with pytest.raises(SigningError):
        jose_from_token(bad)


def test_p256_signer_is_low_s_deterministic_and_its_jwk_thumbprint_is_the_kid():
    signer = P256Signer.generate()
    sigs = [signer.sign(f"m{i}".encode()) for i in range(32)]
    assert all(is_low_s(s) for s in sigs)
    assert signer.sign(b"m0") == sigs[0]  # RFC 6979
    jwk = signer.public_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    assert KeySet.import_key_set(jwks_of(signer)).keys[0].thumbprint() == signer.kid == jwk["kid"]


def test_es256_sae_verifies_with_joserfc_and_jws_verify():
    signer = P256Signer.generate()
    sae = EnvelopeEncoder(signer).encode(CLAIMS)
    assert jws.extract_compact(sae.encode()).headers() == {"alg": "ES256", "kid": signer.kid, "typ": SAE_TYP}
    keys = KeySet.import_key_set(jwks_of(signer))
    assert json.loads(jws.deserialize_compact(sae, keys, algorithms=["ES256"]).payload) == CLAIMS
    assert verify(sae, jwks_of(signer), now=120) == CLAIMS


def test_a_jwks_with_both_algorithms_verifies_each_by_its_kid():
    ed, p256 = Ed25519Signer(bytes(32)), P256Signer.generate()
    both = jwks_of(ed, p256)
    for signer in (ed, p256):
        assert verify(EnvelopeEncoder(signer).encode(CLAIMS), both, now=120) == CLAIMS


def test_the_high_s_twin_of_a_valid_signature_is_refused():
    signer = P256Signer.generate()
    head, payload, sig = EnvelopeEncoder(signer).encode(CLAIMS).split(".")
    raw = b64decode(sig)
    twin = raw[:32] + (P256_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    assert verify_jose(signer.public_key, f"{head}.{payload}".encode(), twin)  # plain ECDSA accepts it
    with pytest.raises(SaeInvalid, match="low s"):
        verify(f"{head}.{payload}.{b64url(twin)}", jwks_of(signer), now=120)


def test_an_eddsa_header_naming_an_es256_key_is_refused_before_any_signature_check():
    p256, ed = P256Signer.generate(), Ed25519Signer(bytes(32))
    header = b64url(json.dumps({"alg": "EdDSA", "kid": p256.kid, "typ": SAE_TYP}).encode())
    signing_input = f"{header}.{b64url(json.dumps(CLAIMS).encode())}"
    forged = f"{signing_input}.{b64url(ed.sign(signing_input.encode()))}"
    with pytest.raises(SaeInvalid, match="published for ES256"):
        verify(forged, jwks_of(p256, ed), now=120)


@pytest.mark.parametrize("alg", ["ES384", "RS256", "HS256", "none", None])
def test_other_algorithms_are_refused_by_name(alg):
    signer = P256Signer.generate()
    header = b64url(json.dumps({"alg": alg, "kid": signer.kid, "typ": SAE_TYP}).encode())
    signing_input = f"{header}.{b64url(json.dumps(CLAIMS).encode())}"
    with pytest.raises(SaeInvalid, match="not accepted"):
        verify(f"{signing_input}.{b64url(signer.sign(signing_input.encode()))}", jwks_of(signer), now=120)


def test_a_der_signature_is_refused():
    signer = P256Signer.generate()
    head, payload, sig = EnvelopeEncoder(signer).encode(CLAIMS).split(".")
    raw = b64decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    with pytest.raises(SaeInvalid):
        verify(f"{head}.{payload}.{b64url(der)}", jwks_of(signer), now=120)


def test_key_files_of_both_kinds_load_by_content_and_are_never_overwritten(tmp_path):
    ed = new_key_file(tmp_path / "ed.seed", "EdDSA")
    p256 = new_key_file(tmp_path / "p.pem", "ES256")
    assert (tmp_path / "p.pem").stat().st_mode & 0o777 == 0o600
    assert load_file_signer(tmp_path / "ed.seed").kid == ed.kid and load_file_signer(tmp_path / "ed.seed").alg == "EdDSA"
    assert load_file_signer(tmp_path / "p.pem").kid == p256.kid and load_file_signer(tmp_path / "p.pem").alg == "ES256"
    with pytest.raises(ConfigError, match="never overwritten"):
        new_key_file(tmp_path / "p.pem", "ES256")


def test_a_pem_key_on_another_curve_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "p384.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="P-256"):
        load_file_signer(path)


def test_keys_generate_es256_through_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "keys", "generate", "--alg", "ES256", "--out",
                          str(tmp_path / "k.pem")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    jwk = json.loads(out.stdout)
    assert jwk == load_file_signer(tmp_path / "k.pem").public_jwk() and jwk["alg"] == "ES256"
    again = subprocess.run([sys.executable, "-m", "ext_authz.cli", "keys", "generate", "--alg", "ES256", "--out",
                            str(tmp_path / "k.pem")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "never overwritten" in again.stderr

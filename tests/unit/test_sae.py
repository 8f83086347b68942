import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from ext_authz.envelope.encoding import sae_hash
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, EnvelopeEncoder, verify
from ext_authz.errors import SaeInvalid
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

SIGNER = Ed25519Signer(bytes(32))
JWKS = jwks_of(SIGNER)
CLAIMS = {"iss": "spiffe://t/agent/a", "sub": "s", "aud": "s", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": 100,
          "nbf": 100, "exp": 160, "jti": "j", "ctx": {}, "chain": {}}


def test_kid_is_rfc7638_thumbprint():
    # RFC 7638 thumbprint over the required OKP members, independently via joserfc
    key = KeySet.import_key_set(JWKS).keys[0]
    assert SIGNER.kid == key.thumbprint()
    assert JWKS["keys"][0]["kid"] == SIGNER.kid


def test_encoded_sae_verifies_with_joserfc_and_header_is_exact():
    token = EnvelopeEncoder(SIGNER).encode(CLAIMS)
    obj = jws.deserialize_compact(token, KeySet.import_key_set(JWKS), algorithms=["EdDSA"])
    assert obj.headers() == {"alg": "EdDSA", "kid": SIGNER.kid, "typ": SAE_TYP}
    assert verify(token, JWKS, now=120) == CLAIMS


def test_expiry_boundary_is_exclusive():
    token = EnvelopeEncoder(SIGNER).encode(CLAIMS)
    verify(token, JWKS, now=159)
    with pytest.raises(SaeInvalid):
        verify(token, JWKS, now=160)


def test_denial_record_needs_denial_typ():
    record = {"iss": "spiffe://t/sealgate/authorizer", "pol": {}, "iat": 1, "jti": "d", "reason": "AGENT_REVOKED"}
    token = EnvelopeEncoder(SIGNER).encode(record, DENIAL_TYP)
    assert verify(token, JWKS, typ=DENIAL_TYP)["reason"] == "AGENT_REVOKED"
    with pytest.raises(SaeInvalid) as err:
        verify(token, JWKS)
    assert err.value.reason == "SAE_TYPE_INVALID"


def test_non_integer_time_claims_rejected():
    token = EnvelopeEncoder(SIGNER).encode({**CLAIMS, "exp": "160"})
    with pytest.raises(SaeInvalid):
        verify(token, JWKS, now=120)


def test_the_issuer_is_pinned_when_given():
    token = EnvelopeEncoder(SIGNER).encode(CLAIMS)
    assert verify(token, JWKS, now=120, issuer="spiffe://t/agent/a")["iss"] == "spiffe://t/agent/a"
    with pytest.raises(SaeInvalid) as err:
        verify(token, JWKS, now=120, issuer="spiffe://t/sealgate/authorizer")
    assert err.value.reason == "SAE_INVALID"


@pytest.mark.parametrize("segment,canonical", [
    ("", True), ("AA", True), ("AQ", True), ("AR", False), ("AAA", True), ("AAE", True), ("AAB", False),
    ("A", False), ("AA==", False), ("a+b/", False), ("ab-_", True), ("é", False), ("AA.", False),
], ids=["empty", "one_byte", "one_byte_low_bits_zero", "one_byte_low_bits_set", "two_bytes", "two_bytes_last_bits_zero",
        "two_bytes_low_bits_set", "impossible_length", "padded", "standard_alphabet", "url_alphabet", "non_ascii", "dot"])
def test_canonical_base64url(segment, canonical):
    from ext_authz.envelope.jws import canonical_b64url

    assert canonical_b64url(segment) is canonical


@pytest.mark.parametrize("respell", [
    lambda t: t[:-1] + {"A": "B", "Q": "R", "g": "h", "w": "x"}.get(t[-1], t[-1]),
    lambda t: t + "==",
    lambda t: t.replace("-", "+").replace("_", "/"),
], ids=["signature_low_bits_set", "padded", "standard_alphabet"])
def test_a_noncanonical_token_is_refused_though_its_bytes_verify(respell):
    """Base64url malleability: the same signature bytes spelled differently (jwt_authn accepts it)."""
    token = EnvelopeEncoder(SIGNER).encode({**CLAIMS, "jti": "j-+/"})
    while "-" not in token and "_" not in token:  # the standard-alphabet case needs one of them
        token = EnvelopeEncoder(SIGNER).encode({**CLAIMS, "jti": token[-8:]})
    malleated = respell(token)
    if malleated == token:
        pytest.skip("this spelling does not apply to this token")
    with pytest.raises(SaeInvalid) as err:
        verify(malleated, JWKS, now=120)
    assert err.value.reason == "SAE_INVALID" and "canonical base64url" in err.value.message


def test_anchored_value_is_sha256_of_signing_input_whatever_the_signature():
    import hashlib

    token = EnvelopeEncoder(SIGNER).encode(CLAIMS)
    signing_input = token.rsplit(".", 1)[0]
    assert sae_hash(token) == hashlib.sha256(signing_input.encode()).digest()
    # another signature over the same bytes (ES256 (r, n-s), a re-signing) anchors the same value
    assert sae_hash(signing_input + ".AAAA") == sae_hash(token)
    # a changed payload does not
    header, payload, sig = token.split(".")
    assert sae_hash(f"{header}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{sig}") != sae_hash(token)
    with pytest.raises(ValueError):
        sae_hash("no-dots")


def test_payload_is_compact_sorted_json_like_the_stdlib_encoder():
    from ext_authz.envelope.encoding import canonical_json, compact_json

    claims = {**CLAIMS, "act": {"type": "payment.transfer", "amt": 2**63, "p": "/v1/x?a=1&b='c'"}, "ctx": {"parent": None}}
    assert compact_json(claims) == canonical_json(claims)


@pytest.mark.parametrize("amount", [2**64, 2**256 - 1], ids=["amount_beyond_64_bits", "amount_max_uint256"])
def test_amounts_beyond_64_bits_are_encoded_exactly(amount):
    claims = {**CLAIMS, "act": {"amt": amount}}
    assert verify(EnvelopeEncoder(SIGNER).encode(claims), JWKS, now=120)["act"]["amt"] == amount


def test_non_ascii_text_in_a_denial_round_trips():
    claims = {"iss": "spiffe://t/sealgate/authorizer", "sub": "spiffe://t/agent/ä", "pol": {}, "iat": 1, "jti": "j",
              "reason": "IDENTITY_INVALID", "msg": "found 'spïffe://x\u2028'"}
    assert verify(EnvelopeEncoder(SIGNER).encode(claims, DENIAL_TYP), JWKS, typ=DENIAL_TYP) == claims


@pytest.mark.parametrize("s,expected", [
    (1, 1),
    ("half", "half"),
    ("half+1", "n-half-1"),
    ("n-1", 1),
], ids=["low_stays", "half_stays", "just_above_half_flips", "highest_flips_to_one"])
def test_low_s_normalisation_for_wallet_signatures(s, expected):
    from eth_keys.constants import SECPK1_N as n

    from ext_authz.chain.hsm_wallet import low_s

    named = {"half": n // 2, "half+1": n // 2 + 1, "n-half-1": n - (n // 2 + 1), "n-1": n - 1}
    assert low_s(named.get(s, s)) == named.get(expected, expected)


@pytest.mark.parametrize("point,size,ok", [
    (bytes(range(32)), 32, True),
    (b"\x04\x20" + bytes(range(32)), 32, True),
    (b"\x04\x41\x04" + bytes(64), 65, True),
    (b"\x04\x21" + bytes(33), 32, False),
    (b"\x04\x30" + bytes(32), 32, False),
    (bytes(31), 32, False),
], ids=["raw_ed25519", "der_wrapped_ed25519", "der_wrapped_secp256k1", "wrapped_wrong_size", "truncated_der", "raw_short"])
def test_hsm_public_points_are_unwrapped_or_refused(point, size, ok):
    from ext_authz.errors import ConfigError
    from ext_authz.signing.pkcs11 import unwrap_ec_point

    if ok:
        assert len(unwrap_ec_point(point, size, "test")) == size
    else:
        with pytest.raises(ConfigError):
            unwrap_ec_point(point, size, "test")

"""HSM-endorsed short-lived keys (signing/endorsed.py) with a file key standing in for the token (the token
itself: tests/integration/test_hsm.py; the benchmark: bench/hsm_endorsed.py)."""

import base64
import json

import jwt
import pytest
from cryptography import x509

from ext_authz.envelope.jws import DENIAL_TYP, EnvelopeEncoder, verify
from ext_authz.errors import SaeInvalid
from ext_authz.signing.endorsed import EndorsedSigner, verify_endorsed
from ext_authz.signing.file_key import Ed25519Signer, P256Signer

ISSUER = "spiffe://sealgate.local/sealgate/authorizer"


class CountingToken:
    """A token signer that counts its signatures (each a round trip to the device)."""

    def __init__(self, inner):
        self.inner, self.signatures = inner, 0
        self.alg, self.kid, self.blocking = inner.alg, inner.kid, True

    def sign(self, message):
        self.signatures += 1
        return self.inner.sign(message)

    def public_jwk(self):
        return self.inner.public_jwk()


def claims(iat, jti="j"):
    return {"iss": ISSUER, "sub": "s", "aud": "a", "act": {}, "pol": {}, "inp": {}, "mod": "m", "iat": iat, "nbf": iat,
            "exp": iat + 60, "jti": jti, "ctx": {}, "chain": {}}


def header(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))


@pytest.mark.parametrize("token_key", [Ed25519Signer(bytes(32)), P256Signer.generate()], ids=["EdDSA", "ES256"])
def test_a_thousand_saes_cost_two_token_signatures_and_verify_back_to_the_token_key(token_key):
    token = CountingToken(token_key)
    signer = EndorsedSigner(token, period_seconds=60)
    encoder = EnvelopeEncoder(signer)
    now = int(__import__("time").time())
    saes = [encoder.encode(claims(now, f"j{i}")) for i in range(1000)]
    assert token.signatures == 2  # the current and the next key's endorsements, not one per SAE
    for sae in saes[:5]:
        assert verify_endorsed(sae, token_key.public_jwk(), issuer=ISSUER, now=now) == claims(now, json.loads(
            base64.urlsafe_b64decode(sae.split(".")[1] + "==="))["jti"])
        assert verify(sae, signer.jwks, now=now) is not None  # and with the published JWKS (what jwt_authn reads)
    denial = encoder.encode({"iss": ISSUER, "pol": {}, "iat": now, "jti": "d", "reason": "X"}, DENIAL_TYP)
    assert verify_endorsed(denial, token_key.public_jwk(), typ=DENIAL_TYP)["reason"] == "X"


def test_an_endorsed_sae_verifies_with_pyjwt_given_the_checked_chain():
    token_key = Ed25519Signer(bytes(32))
    signer = EndorsedSigner(token_key, period_seconds=60)
    now = int(__import__("time").time())
    sae = EnvelopeEncoder(signer).encode(claims(now))
    verify_endorsed(sae, token_key.public_jwk(), check_time=False)  # the chain back to the token key
    cert = x509.load_der_x509_certificate(base64.b64decode(header(sae)["x5c"][0]))
    assert jwt.decode(sae, cert.public_key(), algorithms=["EdDSA"], audience="a") == claims(now)


def test_rotation_publishes_the_next_key_a_period_ahead_and_keeps_the_previous():
    token_key = Ed25519Signer(bytes(32))
    signer = EndorsedSigner(token_key, period_seconds=60)
    first, second = signer.current().kid, signer._next.signer.kid
    assert [k["kid"] for k in signer.jwks["keys"]] == [token_key.kid, first, second]
    old = EnvelopeEncoder(signer)
    before = old.encode(claims(100))
    signer.rotate()
    assert signer.current().kid == second
    assert [k["kid"] for k in signer.jwks["keys"]][:3] == [token_key.kid, first, second]  # previous still published
    after = old.encode(claims(100))
    assert header(after)["kid"] == second != header(before)["kid"]
    assert verify(before, signer.jwks, check_time=False) and verify(after, signer.jwks, check_time=False)


def test_an_endorsement_by_another_key_or_a_swapped_x5c_is_refused():
    token_key, mallory = Ed25519Signer(bytes(32)), Ed25519Signer(bytes([9]) * 32)
    forged = EnvelopeEncoder(EndorsedSigner(mallory, period_seconds=60)).encode(claims(100))
    with pytest.raises(SaeInvalid, match="not signed by the token key"):
        verify_endorsed(forged, token_key.public_jwk(), check_time=False)
    genuine = EnvelopeEncoder(EndorsedSigner(token_key, period_seconds=60)).encode(claims(100))
    assert header(genuine)["x5c"] != header(forged)["x5c"]
    # the genuine endorsement over mallory's envelope: the header is signed, so the swap breaks the signature
    h = {**header(forged), "x5c": header(genuine)["x5c"]}
    swapped = ".".join([base64.urlsafe_b64encode(json.dumps(h).encode()).decode().rstrip("="), *forged.split(".")[1:]])
    with pytest.raises(SaeInvalid):
        verify_endorsed(swapped, token_key.public_jwk(), check_time=False)


def test_an_sae_claiming_a_time_outside_its_endorsement_is_refused():
    token_key = Ed25519Signer(bytes(32))
    sae = EnvelopeEncoder(EndorsedSigner(token_key, period_seconds=60)).encode(claims(100))  # iat 1970
    with pytest.raises(SaeInvalid, match="outside its endorsement"):
        verify_endorsed(sae, token_key.public_jwk(), check_time=False)


def test_a_failing_token_keeps_the_current_key_and_says_why():
    class Failing(CountingToken):
        fail = False

        def sign(self, message):
            if self.fail:
                from ext_authz.errors import SigningError
                raise SigningError("token gone")
            return super().sign(message)

    token = Failing(Ed25519Signer(bytes(32)))
    signer = EndorsedSigner(token, period_seconds=60)
    kid = signer.kid
    token.fail = True
    signer.rotate()
    assert signer.kid == kid and "token gone" in signer.error

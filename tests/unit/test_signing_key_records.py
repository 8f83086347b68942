"""The SigningKeyRegistry's key encoding (pure): JWK <-> (kid, alg, public key bytes), the kid bound to the key."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from ext_authz.chain.keys import ALG_EDDSA, ALG_ES256, jwk_of, kid_bytes, registration_of
from ext_authz.envelope.encoding import b64url
from ext_authz.errors import ConfigError, InputRejected
from ext_authz.signing.file_key import Ed25519Signer


def test_ed25519_jwk_round_trips_through_the_registry_encoding(tmp_path):
    jwk = Ed25519Signer.from_file(tmp_path / "k.seed", create=True).public_jwk()
    kid, alg, public = registration_of(jwk)
    assert (alg, len(public), b64url(kid)) == (ALG_EDDSA, 32, jwk["kid"])
    assert jwk_of(kid, alg, public) == {k: jwk[k] for k in ("kty", "crv", "x", "kid", "alg", "use")}


def test_p256_jwk_round_trips_for_es256_keys():
    key = ECKey.import_key(ec.generate_private_key(ec.SECP256R1()))
    public = {k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")}
    kid, alg, raw = registration_of(public)
    assert (alg, len(raw), b64url(kid)) == (ALG_ES256, 64, key.thumbprint())
    rebuilt = jwk_of(kid, alg, raw)
    assert (rebuilt["x"], rebuilt["y"], rebuilt["alg"]) == (public["x"], public["y"], "ES256")


def test_registry_entry_whose_key_is_not_its_kid_is_refused(tmp_path):
    a = Ed25519Signer.from_file(tmp_path / "a.seed", create=True).public_jwk()
    b = Ed25519Signer.from_file(tmp_path / "b.seed", create=True).public_jwk()
    kid_a, alg, _ = registration_of(a)
    _, _, public_b = registration_of(b)
    with pytest.raises(InputRejected) as err:
        jwk_of(kid_a, alg, public_b)  # an entry naming a's kid with b's key
    assert err.value.reason == "SIGNING_KEY_UNREGISTERED"
    with pytest.raises(InputRejected):
        jwk_of(kid_a, 3, public_b)  # unknown algorithm
    with pytest.raises(ConfigError):
        registration_of({**a, "kid": b["kid"]})
    with pytest.raises(ConfigError):
        registration_of({"kty": "RSA", "n": "AQAB", "e": "AQAB"})


@pytest.mark.parametrize("kid", ["", "short", "A" * 44, "A" * 42 + "B=", 7])
def test_kid_must_be_a_canonical_sha256_thumbprint(kid):
    with pytest.raises(InputRejected):
        kid_bytes(kid)

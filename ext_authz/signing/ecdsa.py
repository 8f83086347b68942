"""ES256 (ECDSA P-256, SHA-256) signatures in the JOSE form: r || s, 32 bytes each, s in the low half.

cryptography signs in DER (an ASN.1 SEQUENCE of two INTEGERs); a PKCS#11 token's CKM_ECDSA returns
r || s. JOSE (RFC 7518 §3.4) wants r || s. ECDSA is malleable: (r, s) and (r, n - s) both verify
for the same message, so one signed envelope would have two spellings and two hashes (the anchored
value). JOSE does not require low s, and Envoy's jwt_authn, PyJWT and joserfc accept both; Sealgate's
signers always emit low s and `jws.verify()` refuses high s, as it refuses non-canonical base64url.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from joserfc.jwk import ECKey

from ext_authz.envelope.encoding import b64url
from ext_authz.errors import SigningError

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2
ES256_SIGNATURE_BYTES = 64


def low_s_jose(r: int, s: int) -> bytes:
    """r || s with s in the low half (n - s otherwise: the same signature's other form)."""
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER):
        raise SigningError("ECDSA signature component out of range")
    if s > P256_HALF_ORDER:
        s = P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def jose_from_der(der: bytes) -> bytes:
    """DER ECDSA-Sig-Value -> JOSE r || s (low s)."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as e:
        raise SigningError(f"not a DER ECDSA signature: {e}") from e
    return low_s_jose(r, s)


def jose_from_token(signature: bytes) -> bytes:
    """A token's CKM_ECDSA output -> JOSE r || s (low s). PKCS#11 defines r || s; a token answering in DER
    (some vendors' wrappers do) is accepted too."""
    if len(signature) == ES256_SIGNATURE_BYTES:
        return low_s_jose(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    return jose_from_der(signature)


def is_low_s(jose_signature: bytes) -> bool:
    """A 64-byte r || s whose s is at most n / 2."""
    return len(jose_signature) == ES256_SIGNATURE_BYTES and int.from_bytes(jose_signature[32:], "big") <= P256_HALF_ORDER


def verify_jose(public_key: ec.EllipticCurvePublicKey, message: bytes, jose_signature: bytes) -> bool:
    if len(jose_signature) != ES256_SIGNATURE_BYTES:
        return False
    der = encode_dss_signature(int.from_bytes(jose_signature[:32], "big"), int.from_bytes(jose_signature[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


class P256Public:
    """The public half both P-256 signers share (file key, token key): JWK and kid (RFC 7638 thumbprint)."""

    alg = "ES256"
    kid: str
    _public_key: ec.EllipticCurvePublicKey

    def _set_public(self, public_key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise SigningError(f"ES256 needs a P-256 key, found {public_key.curve.name}")
        self._public_key = public_key
        self.kid = ECKey.import_key(dict[str, str | list[str]](self._public_jwk_no_kid())).thumbprint()

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def _public_jwk_no_kid(self) -> dict[str, str]:
        numbers = self._public_key.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big"))}

    def public_jwk(self) -> dict[str, str]:
        return {**self._public_jwk_no_kid(), "kid": self.kid, "alg": self.alg, "use": "sig"}

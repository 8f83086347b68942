"""X.509 certificates signed by a key cryptography cannot hold: a CA key inside a PKCS#11 token (or any Signer).

cryptography's builders sign with a private key object only. The certificate is built and signed
with a throwaway key of the same algorithm (so the TBS names the right signature algorithm), its
TBS bytes are signed by the real key (`Signer.sign`: Ed25519 over the bytes; ES256 over their
SHA-256, JOSE r || s turned into DER), and the certificate is reassembled with asn1crypto. The
result is checked against the issuer's public key before it is returned.
"""

from __future__ import annotations

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ext_authz.errors import SigningError
from ext_authz.signing.base import Signer

_ALGORITHMS = {"EdDSA": "ed25519", "ES256": "sha256_ecdsa"}  # asn1crypto's names of the X.509 signature algorithms

ThrowawayKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _throwaway(alg: str) -> tuple[ThrowawayKey, hashes.SHA256 | None]:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate(), None
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()
    raise SigningError(f"a CA key must be EdDSA or ES256, found {alg}")


def x509_signature(signer: Signer, tbs: bytes) -> bytes:
    """The signer's signature over `tbs` in X.509's encoding (Ed25519 raw; ECDSA DER)."""
    signature = signer.sign(tbs)
    if signer.alg == "ES256":
        return encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    return signature


def sign_certificate(builder: x509.CertificateBuilder, issuer: Signer,
                     issuer_public_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> x509.Certificate:
    """`builder` (subject, issuer name, public key, validity, extensions) signed by `issuer`."""
    key, algorithm = _throwaway(issuer.alg)
    draft = builder.sign(key, algorithm)
    tbs = draft.tbs_certificate_bytes
    der = asn1_x509.Certificate({
        "tbs_certificate": asn1_x509.TbsCertificate.load(tbs),
        "signature_algorithm": {"algorithm": _ALGORITHMS[issuer.alg]},
        "signature_value": x509_signature(issuer, tbs),
    }).dump()
    cert = x509.load_der_x509_certificate(der)
    try:
        if isinstance(issuer_public_key, ec.EllipticCurvePublicKey):
            issuer_public_key.verify(cert.signature, tbs, ec.ECDSA(hashes.SHA256()))
        else:
            issuer_public_key.verify(cert.signature, tbs)
    except InvalidSignature as e:
        raise SigningError("the issuer key's certificate signature does not verify with its public key") from e
    return cert


def public_key_of(signer: Signer) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    """The signer's public key as a cryptography object (from its JWK)."""
    import base64

    jwk = signer.public_jwk()

    def raw(name: str) -> bytes:
        return base64.urlsafe_b64decode(jwk[name] + "=" * (-len(jwk[name]) % 4))

    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(raw("x"))
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(int.from_bytes(raw("x"), "big"), int.from_bytes(raw("y"), "big"),
                                             ec.SECP256R1()).public_key()
    raise SigningError(f"unsupported key {jwk.get('kty')}/{jwk.get('crv')}")

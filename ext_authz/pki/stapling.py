"""OCSP stapling on every SAE and denial: the signing key's certificate chain (`x5c`) and a fresh OCSP response
for that certificate (`ocsp`) in the JWS protected header, so a verifier confirms offline, from the envelope
alone and a trust root, that the signing certificate was good when the envelope was issued (seed section 5).

`Stapler` holds the chain (the SAE key's certificate from `sealgate pki certify-key`, then the
intermediate) and refreshes the OCSP answer at half its validity. With no good answer valid now
(the responder unreachable past nextUpdate, or the certificate revoked) it refuses to sign
(SigningError: the authorizer denies unsigned with SIGNING_FAILED), since an envelope without a
valid staple would be one the verifier rejects.

Header members: `x5c` (RFC 7515 §4.1.6: standard base64 DER, the signing certificate first) and
`ocsp` (private: standard base64 of the DER OCSPResponse). Both are inside the signature.
About 1.8 KB of DER (Ed25519 certificates), so a stapled SAE is ~4.5 KB: raise
`limits.max_parent_sae_bytes` (4096) when SAEs chain to stapled parents.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ext_authz import reasons
from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import SAE_TYP, b64url_decode, verify
from ext_authz.errors import ConfigError, SaeInvalid, SigningError
from ext_authz.pki.ocsp import OcspAnswer, OcspError, fetch_ocsp, verify_response
from ext_authz.pki.x509sign import public_key_of
from ext_authz.signing.base import Signer

log = logging.getLogger("sealgate.stapling")
OCSP_HEADER = "ocsp"
MAX_CHAIN = 4


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


class Stapler:
    """The signing certificate's chain and its current OCSP answer, refreshed on a daemon thread."""

    def __init__(self, chain_pem: bytes, responder_url: str, signer: Signer, timeout: float = 1.0,
                 clock: Any = time.time):
        try:
            certs = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as e:
            raise ConfigError(f"the signing certificate chain is not PEM certificates: {e}") from e
        if not 2 <= len(certs) <= MAX_CHAIN:
            raise ConfigError("the signing certificate chain must be the key's certificate, then its issuer")
        if public_key_of(signer) != certs[0].public_key():
            raise ConfigError("the signing certificate is not for the SAE signing key")
        self.leaf, self.issuer = certs[0], certs[1]
        self.url = responder_url
        self._timeout, self._clock = timeout, clock
        self._x5c = [_b64(c.public_bytes(serialization.Encoding.DER)) for c in certs]
        self._answer: OcspAnswer | None = None
        self.version = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.refresh()
        if self._answer is None:
            raise ConfigError(f"no OCSP answer for the signing certificate from {responder_url}: {self.error}")

    def refresh(self) -> None:
        try:
            answer = fetch_ocsp(self.url, self.leaf, self.issuer, self._timeout)
        except OcspError as e:
            self.error = str(e)
            log.error("OCSP for the signing certificate: %s", e)
            return
        with self._lock:
            self._answer = answer
            self.version += 1
            self._members = {"x5c": self._x5c, OCSP_HEADER: _b64(answer.der)}
        self.error = None if answer.status == "good" else f"the signing certificate is {answer.status}"

    def current(self) -> tuple[int, dict[str, Any]]:
        """(version, header members) of a good answer valid now; SigningError otherwise."""
        answer = self._answer
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        if answer is None or answer.next_update <= now:
            raise SigningError(f"no fresh OCSP answer for the signing certificate ({self.error})")
        if answer.status != "good":
            raise SigningError(f"the signing certificate is {answer.status}: nothing is signed with it")
        return self.version, self._members

    def start(self) -> Stapler:
        threading.Thread(target=self._follow, name="sealgate-stapler", daemon=True).start()
        return self

    def _follow(self) -> None:
        while True:
            answer = self._answer
            wait = 1.0
            if answer is not None and self.error is None:
                wait = max(1.0, (answer.next_update - answer.this_update).total_seconds() / 2)
            if self._stop.wait(wait):
                return
            self.refresh()

    def close(self) -> None:
        self._stop.set()


@dataclass(frozen=True)
class StapledVerification:
    claims: dict[str, Any]
    signer_cert: x509.Certificate
    ocsp: OcspAnswer
    issued_at: dt.datetime


def _jwk_of(cert: x509.Certificate, kid: str, alg: str) -> dict[str, str]:
    key = cert.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey) and alg == "EdDSA":
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": kid, "alg": alg}
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1) and alg == "ES256":
        n = key.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big")),
                "kid": kid, "alg": alg}
    raise SaeInvalid(reasons.SAE_INVALID, f"the x5c certificate's key does not fit alg {alg}")


def verify_stapled(token: str, trust_root: x509.Certificate, *, typ: str = SAE_TYP,
                   issuer: str | None = None) -> StapledVerification:
    """Offline: the signature verifies with the x5c certificate, which chains to `trust_root` and was valid at the
    envelope's `iat`, and the stapled OCSP answer (signed for the issuing CA) said good at `iat`. Returns the claims."""
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0]))
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in header["x5c"]]
        stapled = base64.b64decode(header[OCSP_HEADER], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"no readable x5c and ocsp in the header: {e}") from e
    if not 2 <= len(chain) <= MAX_CHAIN:
        raise SaeInvalid(reasons.SAE_INVALID, "x5c must hold the signing certificate and its issuer")
    leaf, ca = chain[0], chain[1]
    try:
        leaf.verify_directly_issued_by(ca)
        if ca != trust_root:
            ca.verify_directly_issued_by(trust_root)
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, TypeError, x509.ExtensionNotFound, Exception) as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"the x5c chain does not lead to the trust root: {e}") from e
    if not constraints.ca:
        raise SaeInvalid(reasons.SAE_INVALID, "the x5c issuer is not a CA")
    claims = verify(token, {"keys": [_jwk_of(leaf, str(header.get("kid")), str(header.get("alg")))]}, typ=typ,
                    check_time=False, issuer=issuer)
    iat = claims.get("iat")
    if type(iat) is not int:
        raise SaeInvalid(reasons.SAE_INVALID, "iat must be an integer")
    at = dt.datetime.fromtimestamp(iat, dt.UTC)
    for cert in (leaf, ca):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise SaeInvalid(reasons.SAE_INVALID, f"certificate {cert.serial_number:x} was not valid at iat {iat}")
    try:
        answer = verify_response(stapled, leaf, ca, at)
    except OcspError as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"the stapled OCSP response does not vouch for the signing "
                                              f"certificate at iat: {e}") from e
    if answer.status != "good":
        raise SaeInvalid(reasons.SAE_INVALID, f"the stapled OCSP response says the signing certificate was {answer.status}")
    return StapledVerification(claims, leaf, answer, at)

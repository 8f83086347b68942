"""HSM-endorsed short-lived signing keys: the token signs a key, not every envelope.

A token at ~100 ms per signature caps an authorizer that signs every SAE in it at ~10 SAEs/s. Here
the token key (the endorsing key, never leaving the token) signs an X.509 certificate for a fresh
in-memory Ed25519 key every `period_seconds`; envelopes are signed in memory by that key and carry
its certificate as `x5c` (one certificate, issued by the token key). A verifier holding the token
key's public JWK checks the chain back to it (`verify_endorsed`); a stock JOSE library verifies the
envelope with the key in x5c once the chain is checked.

The published JWKS (for jwt_authn, which reads no x5c) holds the token key, the previous endorsed
key (its SAEs live at most 300 s), the current one and the next one, endorsed a period ahead so
every PEP has fetched it before it signs: as with `keyring.py`, a PEP's JWKS cache must be shorter
than the period. The in-memory keys are never written anywhere; a compromise of the process
exposes at most the keys of the current and next periods, both expiring within two periods.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ext_authz import reasons
from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import SAE_TYP, b64url_decode, verify
from ext_authz.errors import ConfigError, SaeInvalid, SigningError
from ext_authz.pki.x509sign import public_key_of, sign_certificate
from ext_authz.signing.base import Signer
from ext_authz.signing.file_key import Ed25519Signer

log = logging.getLogger("sealgate.endorsed")
MIN_PERIOD_SECONDS = 10
MAX_SAE_LIFETIME_SECONDS = 300


@dataclass(frozen=True)
class Endorsed:
    signer: Ed25519Signer
    cert: x509.Certificate
    x5c: str  # base64 DER of the certificate


class EndorsedSigner:
    """A Signer (with `current()` and a live `jwks`, as `Keyring`) over in-memory keys the token endorses."""

    blocking = False  # the token is used once a period, on the endorsing thread, never on the decision path

    def __init__(self, token: Signer, period_seconds: int = 300, subject: str = "spiffe://sealgate.local/sealgate/authorizer",
                 clock: Any = time.time):
        if type(period_seconds) is not int or not MIN_PERIOD_SECONDS <= period_seconds <= 86400:
            raise ConfigError(f"endorsement period must be {MIN_PERIOD_SECONDS} s to 1 day, found {period_seconds!r}")
        self._token, self.period, self._subject, self._clock = token, period_seconds, subject, clock
        self._token_public = public_key_of(token)
        self.token_jwk = token.public_jwk()
        self.endorsements = 0
        self.error: str | None = None
        self.jwks: dict[str, Any] = {"keys": []}
        self._previous: Endorsed | None = None
        self._current = self._endorse()
        self._next = self._endorse()
        self._rotated_at = clock()
        self._publish()
        self._stop = threading.Event()

    def _endorse(self) -> Endorsed:
        """A fresh in-memory key and its certificate, signed by the token (the one token signature per period)."""
        signer = Ed25519Signer(os.urandom(32))
        now = dt.datetime.fromtimestamp(int(self._clock()), dt.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"endorsed {signer.kid}")]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"token {self._token.kid}")]))
                   .public_key(ed25519.Ed25519PublicKey.from_public_bytes(signer.raw_public))
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=1))
                   # current for one period after a period as next, then its SAEs live at most 300 s
                   .not_valid_after(now + dt.timedelta(seconds=2 * self.period + MAX_SAE_LIFETIME_SECONDS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self._subject)]), critical=False))
        cert = sign_certificate(builder, self._token, self._token_public)
        self.endorsements += 1
        return Endorsed(signer, cert, base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode())

    def _publish(self) -> None:
        keys = [self.token_jwk] + [e.signer.public_jwk() for e in (self._previous, self._current, self._next) if e]
        self.jwks["keys"] = keys  # one assignment: whoever holds the dict sees it at once

    # ---------------------------------------------------------------- the Signer protocol (and the encoder's hooks)
    def current(self) -> Ed25519Signer:
        return self._current.signer

    def header_members(self, signer: Signer) -> dict[str, Any]:
        """The x5c of the key `signer` is (the encoder asks with the key it signs with)."""
        for e in (self._current, self._next, self._previous):
            if e is not None and e.signer is signer:
                return {"x5c": [e.x5c]}
        raise SigningError("no endorsement for this key")

    @property
    def alg(self) -> str:
        return "EdDSA"

    @property
    def kid(self) -> str:
        return self._current.signer.kid

    def sign(self, message: bytes) -> bytes:
        return self._current.signer.sign(message)

    def public_jwk(self) -> dict[str, str]:
        return self._current.signer.public_jwk()

    # ---------------------------------------------------------------- the period
    def rotate(self) -> None:
        """Next becomes current; a new next is endorsed (one token signature). A token failure keeps the current
        key (valid two periods) and is retried; it signs nothing past its certificate."""
        try:
            fresh = self._endorse()
        except SigningError as e:
            self.error = str(e)
            log.error("endorsement failed: %s", e)
            return
        self._previous, self._current, self._next = self._current, self._next, fresh
        self._rotated_at = self._clock()
        self.error = None
        self._publish()

    def start(self) -> EndorsedSigner:
        threading.Thread(target=self._follow, name="sealgate-endorse", daemon=True).start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(min(self.period, 5.0) if self.error else self.period):
            self.rotate()

    def close(self) -> None:
        self._stop.set()
        close = getattr(self._token, "close", None)
        if close is not None:
            close()


def verify_endorsed(token: str, endorser_jwk: dict[str, Any], *, typ: str = SAE_TYP, issuer: str | None = None,
                    now: float | None = None, check_time: bool = True) -> dict[str, Any]:
    """The envelope's x5c certificate is signed by the token key `endorser_jwk` and valid at the envelope's iat,
    and the envelope verifies with the certificate's key. Returns the claims."""
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0]))
        chain = header["x5c"]
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"no endorsement (x5c) in the header: {e}") from e
    endorser = _public_of(endorser_jwk)
    try:
        if isinstance(endorser, ec.EllipticCurvePublicKey):
            from cryptography.hazmat.primitives import hashes

            endorser.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        else:
            endorser.verify(cert.signature, cert.tbs_certificate_bytes)
    except Exception as e:  # InvalidSignature, or a certificate of another algorithm
        raise SaeInvalid(reasons.SAE_INVALID, "the endorsement is not signed by the token key") from e
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SaeInvalid(reasons.SAE_INVALID, "the endorsed key must be Ed25519")
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(key.public_bytes_raw()), "kid": str(header.get("kid")),
           "alg": "EdDSA"}
    claims = verify(token, {"keys": [jwk]}, typ=typ, issuer=issuer, now=now, check_time=check_time)
    iat = claims.get("iat")
    if type(iat) is not int:
        raise SaeInvalid(reasons.SAE_INVALID, "iat must be an integer")
    at = dt.datetime.fromtimestamp(iat, dt.UTC)
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise SaeInvalid(reasons.SAE_INVALID, f"signed at {iat}, outside its endorsement's validity")
    return claims


def _public_of(jwk: dict[str, Any]) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    def raw(name: str) -> bytes:
        return base64.urlsafe_b64decode(jwk[name] + "=" * (-len(jwk[name]) % 4))

    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(raw("x"))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            return ec.EllipticCurvePublicNumbers(int.from_bytes(raw("x"), "big"), int.from_bytes(raw("y"), "big"),
                                                 ec.SECP256R1()).public_key()
    except (KeyError, ValueError) as e:
        raise ConfigError(f"the endorsing key's JWK is malformed: {e}") from e
    raise ConfigError("the endorsing key must be an Ed25519 or P-256 JWK")

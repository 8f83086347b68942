"""Signed Action Envelope wire format: JWS compact, typ application/sae.v3+jwt (format version 3).

Encoding sits on the decision path and is a few lines over the Signer (joserfc's
serializer costs ~110 us per call here, more than the whole decision budget).
Verification never is hand-rolled: `verify()` uses joserfc, checks typ, time
and required claims, and returns the verified payload so nothing reads
unverified claims. The typed variants `verify_sae()`, `verify_denial()` and
`verify_approval()` (ext_authz.envelope.models) call it and then check every
claim's type and format, returning the model.

`verify()` refuses non-canonical base64url before anything else: each of the three segments
must be exactly what encoding its bytes gives (alphabet A-Z a-z 0-9 - _, no padding, the unused
low bits of the last character zero). Base64url is otherwise malleable: jwcrypto, authlib, npm
`jose` and Envoy's jwt_authn accept a string with changed low bits and the same signature bytes,
so one signed envelope would have several spellings, several hashes (the anchored value) and,
to a store keyed on the token, several identities. Refused here, every verifier in the package
(the PEP verifier, `check_sae`, the parent SAE, approvals, `sealgate verify`) refuses it.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.envelope.encoding import b64url, canonical_json, compact_json
from ext_authz.errors import SaeInvalid
from ext_authz.signing.base import Signer

# format version 3 (ext_authz.envelope.models.FORMAT_VERSION); versions 1 and 2 are refused
SAE_TYP = "application/sae.v3+jwt"
DENIAL_TYP = "application/sae-denial.v3+jwt"
APPROVAL_TYP = "application/sae-approval.v2+jwt"  # a person's approval of one action (approvals.py)
ALGORITHMS = ("EdDSA",)
SAE_REQUIRED_CLAIMS = ("iss", "sub", "aud", "act", "pol", "inp", "mod", "iat", "nbf", "exp", "jti", "ctx", "chain")
DENIAL_REQUIRED_CLAIMS = ("iss", "pol", "iat", "jti", "reason")  # sub, act: only once they were read
APPROVAL_REQUIRED_CLAIMS = ("iss", "sub", "req", "iat", "exp", "jti")
REQUIRED_CLAIMS = {SAE_TYP: SAE_REQUIRED_CLAIMS, DENIAL_TYP: DENIAL_REQUIRED_CLAIMS, APPROVAL_TYP: APPROVAL_REQUIRED_CLAIMS}
MAX_TOKEN_BYTES = 8192

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # RFC 4648 §5
_ALPHABET_BYTES = _ALPHABET.encode("ascii")
_COMPACT_BYTES = _ALPHABET_BYTES + b"."
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def _canonical_end(segment: str) -> bool:
    """A segment of the base64url alphabet ends canonically: a length that encodes whole bytes and the unused
    low bits of the last character zero (4 bits when the length is 2 mod 4, 2 bits when 3 mod 4)."""
    rest = len(segment) % 4
    if rest == 0:
        return True
    if rest == 1:
        return False
    return _INDEX[segment[-1]] & (0b1111 if rest == 2 else 0b11) == 0


def canonical_b64url(segment: str) -> bool:
    """`segment` is the one base64url spelling of its bytes: RFC 7515 alphabet, no padding, whole bytes,
    unused low bits zero."""
    return segment.isascii() and not segment.encode("ascii").translate(None, _ALPHABET_BYTES) and _canonical_end(segment)


def canonical_compact(token: str) -> bool:
    """Three segments, each canonical base64url (one pass over the token: ~1.5 us per KB)."""
    if not token.isascii() or token.encode("ascii").translate(None, _COMPACT_BYTES):
        return False
    segments = token.split(".")
    return len(segments) == 3 and all(_canonical_end(s) for s in segments)


class EnvelopeEncoder:
    """Encodes SAEs and denial records with one signer; headers are built once."""

    def __init__(self, signer: Signer, kid: str | None = None):
        self._signer = signer
        kid = kid or signer.kid  # an approver's key is named by the approver, not by its thumbprint
        self._headers = {
            typ: b64url(canonical_json({"alg": signer.alg, "kid": kid, "typ": typ})) for typ in REQUIRED_CLAIMS
        }

    @property
    def kid(self) -> str:
        return self._signer.kid

    def encode(self, claims: dict[str, Any], typ: str = SAE_TYP) -> str:
        signing_input = f"{self._headers[typ]}.{b64url(compact_json(claims))}"
        signature = self._signer.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(signature)}"


def _registry() -> jws.JWSRegistry:
    return jws.JWSRegistry(algorithms=list(ALGORITHMS))


def verify(
    token: str,
    jwks: dict[str, Any] | KeySet,
    *,
    typ: str = SAE_TYP,
    now: float | None = None,
    leeway: int = 0,
    check_time: bool = True,
    issuer: str | None = None,
) -> dict[str, Any]:
    """Verifies encoding, signature, typ, required claims, (optionally) time and (when given) that `iss`
    is `issuer`, the authorizer whose key this is (RFC 8725 §3.8); returns the payload."""
    if typ not in REQUIRED_CLAIMS:
        raise ValueError(f"unknown token type {typ!r}")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise SaeInvalid(reasons.SAE_INVALID, f"token must be a string of at most {MAX_TOKEN_BYTES} bytes")
    if not canonical_compact(token):
        raise SaeInvalid(reasons.SAE_INVALID, "not a JWS in canonical base64url: three segments of the URL-safe "
                                              "alphabet, unpadded, unused low bits zero")
    keys = jwks if isinstance(jwks, KeySet) else KeySet.import_key_set(jwks)  # type: ignore[arg-type]  # a JWKS dict
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc flags EdDSA as superseded by RFC 9864 "Ed25519"
            obj = jws.deserialize_compact(token, keys, algorithms=list(ALGORITHMS), registry=_registry())
    except (JoseError, ValueError, KeyError, TypeError) as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"signature or encoding invalid: {e}") from e
    header = obj.headers()
    if header.get("typ") != typ:
        raise SaeInvalid(reasons.SAE_TYPE_INVALID, f"expected typ {typ!r}, found {header.get('typ')!r}")
    try:
        claims = json.loads(obj.payload)
    except ValueError as e:
        raise SaeInvalid(reasons.SAE_INVALID, f"payload is not JSON: {e}") from e
    if not isinstance(claims, dict):
        raise SaeInvalid(reasons.SAE_INVALID, "payload is not a JSON object")
    missing = [c for c in REQUIRED_CLAIMS[typ] if c not in claims]
    if missing:
        raise SaeInvalid(reasons.SAE_INVALID, f"missing claims {missing}")
    if issuer is not None and claims["iss"] != issuer:
        raise SaeInvalid(reasons.SAE_INVALID, f"issued by {_short(claims['iss'])}, expected {issuer!r}")
    if check_time and typ == SAE_TYP:
        t = time.time() if now is None else now
        for name in ("iat", "nbf", "exp"):
            if type(claims[name]) is not int:
                raise SaeInvalid(reasons.SAE_INVALID, f"claim {name} must be an integer")
        if claims["exp"] <= t - leeway:
            raise SaeInvalid(reasons.SAE_INVALID, f"expired at {claims['exp']}, now {int(t)}")
        if claims["nbf"] > t + leeway:
            raise SaeInvalid(reasons.SAE_INVALID, f"not valid before {claims['nbf']}, now {int(t)}")
    return claims



def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""Signed Action Envelope wire format: JWS compact, typ application/sae+jwt.

Encoding sits on the decision path and is a few lines over the Signer (joserfc's
serializer costs ~110 us per call here, more than the whole decision budget).
Verification never is hand-rolled: `verify()` uses joserfc, checks typ, time
and required claims, and returns the verified payload so nothing reads
unverified claims. The typed variants `verify_sae()`, `verify_denial()` and
`verify_approval()` (ext_authz.envelope.models) call it and then check every
claim's type and format, returning the model.
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

SAE_TYP = "application/sae+jwt"
DENIAL_TYP = "application/sae-denial+jwt"
APPROVAL_TYP = "application/sae-approval+jwt"  # a person's approval of one action (approvals.py)
ALGORITHMS = ("EdDSA",)
SAE_REQUIRED_CLAIMS = ("iss", "sub", "aud", "act", "pol", "mod", "iat", "nbf", "exp", "jti", "ctx", "chain")
DENIAL_REQUIRED_CLAIMS = ("iss", "sub", "act", "pol", "iat", "jti", "reason")
APPROVAL_REQUIRED_CLAIMS = ("iss", "sub", "req", "iat", "exp", "jti")
REQUIRED_CLAIMS = {SAE_TYP: SAE_REQUIRED_CLAIMS, DENIAL_TYP: DENIAL_REQUIRED_CLAIMS, APPROVAL_TYP: APPROVAL_REQUIRED_CLAIMS}
MAX_TOKEN_BYTES = 8192


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
) -> dict[str, Any]:
    """Verifies signature, typ, required claims and (optionally) time; returns the payload."""
    if typ not in REQUIRED_CLAIMS:
        raise ValueError(f"unknown token type {typ!r}")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise SaeInvalid(reasons.SAE_INVALID, f"token must be a string of at most {MAX_TOKEN_BYTES} bytes")
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


"""What a target service checks itself, behind the PEP: the SAE names exactly this request.

The PEP (jwt_authn + Lua) verifies the signature, expiry, audience and the
method/path/authority binding, but Envoy's Lua has no hash function, so it cannot
check the body. The SAE carries the body's SHA-256 (`act.bd`); a target that
calls `check_sae()` before executing closes that gap (the SDK deployment model).
"""

from __future__ import annotations

import hashlib
from typing import Any

from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.envelope.jws import SAE_TYP, verify
from ext_authz.errors import InputRejected


def check_sae(token: str | None, keys: KeySet | dict[str, Any], *, method: str, path: str, authority: str,
              body: bytes, audience: str, now: float | None = None) -> dict[str, Any]:
    """Returns the SAE's claims if it verifies and is bound to this method, path, authority and body."""
    if not token:
        raise InputRejected(reasons.SAE_MISSING, "no x-sae header")
    claims = verify(token, keys, typ=SAE_TYP, now=now)
    act = claims["act"]
    if claims.get("aud") != audience:
        raise InputRejected(reasons.SAE_INVALID, f"SAE is for {claims.get('aud')!r}, this service is {audience!r}")
    if not isinstance(act, dict) or (act.get("m"), act.get("p"), act.get("h")) != (method, path, authority.lower()):
        raise InputRejected(reasons.SAE_BINDING_MISMATCH, "SAE is bound to a different method, path or authority")
    if act.get("bd") != hashlib.sha256(body).hexdigest():
        raise InputRejected(reasons.SAE_BODY_MISMATCH, "the body is not the one the SAE was issued for")
    return claims

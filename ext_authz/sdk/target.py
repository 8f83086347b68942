"""What a target service checks itself, behind the PEP: the SAE names exactly this request.

The PEP (jwt_authn + Lua) verifies the signature, expiry, issuer, audience, iat, lifetime and the
method/path/authority binding, but Envoy's Lua has no hash function, so it cannot check the body.
The SAE carries the body's SHA-256 (`act.bd`); a target that calls `check_sae()` before executing
closes that gap (the SDK deployment model). The PEP's verifier (`sealgate pep serve`) calls it too,
so every check the Lua makes is also made here, in Python.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.envelope.jws import SAE_TYP, verify
from ext_authz.envelope.models import Sae
from ext_authz.errors import ConfigError, InputRejected
from ext_authz.sdk.redemption import RedemptionStore, RedemptionUnavailable

MAX_SAE_LIFETIME_SECONDS = 300  # the seed design's upper bound on exp - iat (the PEP's Lua has the same)
CLOCK_SKEW_SECONDS = 5  # as the PEP's jwt_authn clock_skew_seconds and the Lua's CLOCK_SKEW_SECONDS


def check_lifetime_bound(max_lifetime_seconds: int) -> int:
    """A configured lifetime bound: an integer 1-300 s; raises ConfigError otherwise."""
    if type(max_lifetime_seconds) is not int or not 1 <= max_lifetime_seconds <= MAX_SAE_LIFETIME_SECONDS:
        raise ConfigError(f"max SAE lifetime must be 1-{MAX_SAE_LIFETIME_SECONDS} s, found {max_lifetime_seconds!r}")
    return max_lifetime_seconds


def check_sae(token: str | None, keys: KeySet | dict[str, Any], *, method: str, path: str, authority: str,
              body: bytes, audience: str, issuer: str, now: float | None = None,
              max_lifetime_seconds: int = MAX_SAE_LIFETIME_SECONDS,
              redemptions: RedemptionStore | None = None) -> dict[str, Any]:
    """Returns the SAE's claims if it verifies (canonical encoding, signature, typ v2, time, `iss` is
    `issuer`, every claim's format), was not issued in the future (`iat` at most now + 5 s), lives at
    most `max_lifetime_seconds` (`exp - iat`, never over 300 s) and is bound to this audience, method,
    path, authority and body. With `redemptions`, the SAE is also redeemed there, last: a second use is
    SAE_REPLAYED (a target that executes only once per SAE even when reached past its PEP); a store that cannot
    answer is PEP_ERROR."""
    if not token:
        raise InputRejected(reasons.SAE_MISSING, "no x-sae header")
    check_lifetime_bound(max_lifetime_seconds)
    t = time.time() if now is None else now
    claims = verify(token, keys, typ=SAE_TYP, now=t, issuer=issuer)
    sae = Sae.from_claims(claims)  # every claim's type and format: nothing below reads an unchecked value
    if sae.issued_at > t + CLOCK_SKEW_SECONDS:
        raise InputRejected(reasons.SAE_INVALID, f"SAE issued in the future (iat {sae.issued_at}, now {int(t)})")
    if sae.expires - sae.issued_at > max_lifetime_seconds:
        raise InputRejected(reasons.SAE_INVALID, f"SAE lifetime {sae.expires - sae.issued_at} s exceeds "
                                                 f"{max_lifetime_seconds} s")
    if sae.audience != audience:
        raise InputRejected(reasons.SAE_INVALID, f"SAE is for {sae.audience!r}, this service is {audience!r}")
    act = sae.action
    if (act.method, act.path, act.authority) != (method, path, authority.lower()):
        raise InputRejected(reasons.SAE_BINDING_MISMATCH, "SAE is bound to a different method, path or authority")
    if act.body_sha256 != hashlib.sha256(body).hexdigest():
        raise InputRejected(reasons.SAE_BODY_MISMATCH, "the body is not the one the SAE was issued for")
    if redemptions is not None:
        try:
            first_use = redemptions.redeem(claims["jti"], claims["exp"])
        except RedemptionUnavailable as e:
            raise InputRejected(reasons.PEP_ERROR, f"redemption store unavailable: {e}") from e
        if not first_use:
            raise InputRejected(reasons.SAE_REPLAYED, "SAE was already used")
    return claims

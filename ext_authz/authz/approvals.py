"""Human approval of actions the policy marks REQUIRE_APPROVAL.

The policy contract decides *that* an action needs a person (its amount is over the
rule's approval threshold); an approver registered in the on-chain ApproverRegistry
decides *whether*. The denial names the action's digest; the approver signs that
digest (Ed25519 JWS, typ application/sae-approval.v2+jwt, at most 15 minutes); the agent
sends the same request again with the approval in `x-sealgate-approval`; the
authorizer checks it and issues an SAE whose `apr` claim carries the approval. One
approval, one action.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.authz.actions import ActionRequest
from ext_authz.envelope.encoding import b64url
from ext_authz.envelope.jws import APPROVAL_TYP, EnvelopeEncoder
from ext_authz.envelope.models import Action, Approval, verify_approval
from ext_authz.errors import ConfigError, InputRejected, SaeInvalid
from ext_authz.signing.base import Signer

MAX_APPROVAL_SECONDS = 900
APPROVER_NAME = re.compile(r"[a-z0-9][a-z0-9.\-_]{0,63}")


def action_digest(action: ActionRequest) -> str:
    """SHA-256 over exactly what the approver approves: who, what, where, how much, and the body
    (so an approval of "pay vendor-7" cannot carry "pay someone else" the same amount)."""
    return Action.of(action).approval_digest(action.agent_spiffe_id, action.target)


def digest_of(agent: str, target: str, act: Action | dict[str, Any]) -> str:
    """The same digest from an SAE's `sub` (the agent), `aud` (the target) and `act` claims, or a denial's
    `sub`, `tgt` and `act` (`sealgate verify`, `sealgate approver sign`); malformed `act` claims raise
    SaeInvalid."""
    return (act if isinstance(act, Action) else Action.from_claims(act)).approval_digest(agent, target)


def sign_approval(signer: Signer, approver: str, agent: str, digest: str, ttl_seconds: int = 300,
                  now: float | None = None, jti: str | None = None) -> str:
    """The approver's side (`sealgate approver sign`)."""
    if not 1 <= ttl_seconds <= MAX_APPROVAL_SECONDS:
        raise ConfigError(f"an approval lives 1-{MAX_APPROVAL_SECONDS} s, asked for {ttl_seconds}")
    issued = int(time.time() if now is None else now)
    approval = Approval(approver, agent, digest, issued, issued + ttl_seconds, jti or secrets.token_urlsafe(16))
    return EnvelopeEncoder(signer, kid=approver).encode(approval.to_claims(), APPROVAL_TYP)


class MemoryClaims:
    """Used approvals in memory: for tests and tools; the authorizer uses its SQLite store."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, jti: str, exp: int, now: float) -> bool:
        with self._lock:
            self._used = {k: v for k, v in self._used.items() if v >= now}
            if jti in self._used:
                return False
            self._used[jti] = exp
            return True


class ApprovalVerifier:
    """Checks an approval against the action it is presented with; each approval is accepted once.

    `approver_key(name)` gives the approver's Ed25519 public key, or None when unknown or
    revoked: the authorizer reads the on-chain ApproverRegistry at the pinned block.
    `claim(jti, exp, now)` records the use and says whether it is the first: the authorizer
    passes its SQLite store, so a restart inside an approval's lifetime does not reopen it.
    """

    def __init__(self, approver_key: Callable[[str], bytes | None], clock: Callable[[], float] = time.time,
                 claim: Callable[[str, int, float], bool] | None = None):
        self._approver_key = approver_key
        self._clock = clock
        self._claim = claim or MemoryClaims()

    def verify(self, token: str, action: ActionRequest, digest: str | None = None) -> dict[str, Any]:
        """`digest`: the action's digest when the caller already computed it (the decision has)."""
        now = self._clock()
        claims = check_approval(token, self._approver_key, action.agent_spiffe_id, digest or action_digest(action), now)
        if not self._claim(f"{claims['iss']}/{claims['jti']}", claims["exp"], now):
            raise InputRejected(reasons.APPROVAL_REPLAYED, "this approval was already used")
        return claims


def check_approval(token: str, approver_key: Callable[[str], bytes | None], agent: str, digest: str,
                   at: float) -> dict[str, Any]:
    """Signature by a registered approver, lifetime covering `at`, and exactly this agent and action.

    Used on the decision path (at = now) and by `sealgate verify` (at = the SAE's iat, the key
    read at the SAE's policy block). Returns the approval's claims."""
    try:
        name = jws.extract_compact(token.encode("ascii")).headers().get("kid")
    except (JoseError, ValueError, UnicodeEncodeError) as e:
        raise InputRejected(reasons.APPROVAL_INVALID, f"the approval is not a JWS: {e}") from e
    if not isinstance(name, str) or not APPROVER_NAME.fullmatch(name):
        raise InputRejected(reasons.APPROVAL_INVALID, "approval kid is not an approver name")
    key = approver_key(name)  # chain errors propagate: the caller fails closed
    if key is None:
        raise InputRejected(reasons.APPROVAL_INVALID, f"approver {name!r} is not registered or was revoked")
    keys = KeySet.import_key_set({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(key), "kid": name}]})
    try:
        approval = verify_approval(token, keys)  # signature, typ, and every claim's type
    except SaeInvalid as e:
        raise InputRejected(reasons.APPROVAL_INVALID, f"approval: {e.message}") from e
    if approval.approver != name:
        raise InputRejected(reasons.APPROVAL_INVALID, "approval iss is not the approver whose key signed it")
    iat, exp = approval.issued_at, approval.expires
    if exp <= at or iat > at + 5 or exp - iat > MAX_APPROVAL_SECONDS:
        raise InputRejected(reasons.APPROVAL_INVALID, f"approval is expired or not yet valid (iat {iat}, exp {exp})")
    if approval.agent != agent or approval.request != digest:
        raise InputRejected(reasons.APPROVAL_MISMATCH, "the approval is for another agent or another action")
    return approval.to_claims()

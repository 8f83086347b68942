"""The PEP's verifier: an ext_authz service next to the target's Envoy that decides what executes.

Envoy's jwt_authn + Lua reject most bad SAEs cheaply, but Lua has no hash function and its memory is per
worker and lost on restart. This service, called by the PEP's ext_authz filter with the whole body, is the
enforcement decision: the SAE verifies (sdk.check_sae: canonical base64url, signature, typ, issuer, time,
iat, lifetime, every claim's format, audience, method, path, authority and body digest), it is the only
x-sae of the request, and its jti is redeemed for the first time in a store shared by every worker, restart
and replica (sdk.redemption). Anything else is a 403 with a reason code; an error of its own is PEP_ERROR,
never an allow.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from joserfc.jwk import KeySet

from ext_authz import reasons
from ext_authz.authz.actions import OVERRIDE_HEADERS
from ext_authz.envelope.models import check_issuer
from ext_authz.errors import InputRejected
from ext_authz.sdk.jwks import JwksStale, RemoteJwks
from ext_authz.sdk.redemption import RedemptionStore, RedemptionUnavailable
from ext_authz.sdk.target import MAX_SAE_LIFETIME_SECONDS, check_lifetime_bound, check_sae

log = logging.getLogger("sealgate.pep")
_ALLOW = auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


@dataclass(frozen=True)
class Verdict:
    reason: str  # reasons.OK when the request may execute
    message: str
    jti: str | None = None


def deny_response(reason: str, message: str) -> auth_pb2.CheckResponse:
    body = json.dumps({"reason_code": reason, "message": message})
    headers = [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v)) for k, v in
               (("content-type", "application/json"), ("x-sealgate-reason", reason))]
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=auth_pb2.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=403), headers=headers, body=body))


class PepVerifier:
    """Pure decision over one request, with the redemption store as its only I/O."""

    def __init__(self, keys: KeySet | dict[str, Any] | RemoteJwks, audience: str, store: RedemptionStore, *, issuer: str,
                 max_lifetime_seconds: int = MAX_SAE_LIFETIME_SECONDS):
        """`issuer`: the authorizer's issuer URI, the only `iss` accepted (as the PEP's jwt_authn pins it).
        `keys`: fixed, or a RemoteJwks that follows the authorizer's key rotation."""
        self._remote = keys if isinstance(keys, RemoteJwks) else None
        self._keys = (keys if isinstance(keys, (KeySet, RemoteJwks))
                      else KeySet.import_key_set(keys))  # type: ignore[arg-type]  # a JWKS dict
        self._audience = audience
        self._issuer = check_issuer(issuer)
        self._max_lifetime = check_lifetime_bound(max_lifetime_seconds)
        self._store = store

    @property
    def store(self) -> RedemptionStore:
        return self._store

    def check(self, method: str, path: str, authority: str, headers: dict[str, str], body: bytes) -> Verdict | dict[str, Any]:
        """Everything but the redemption (pure CPU): a refusal, or the verified claims to redeem."""
        token = headers.get("x-sae")
        if token is not None and "," in token:  # Envoy joins a repeated header's values with ","
            return Verdict(reasons.HEADER_NOT_ALLOWED, "more than one x-sae header")
        override = OVERRIDE_HEADERS.intersection(headers)
        if override:  # a framework obeying it would run another action than the one the SAE names
            return Verdict(reasons.HEADER_NOT_ALLOWED, f"header {sorted(override)[0]} would change the request executed")
        try:
            keys = self._remote.keys() if self._remote is not None else self._keys
        except JwksStale as e:  # a key retired meanwhile must not stay trusted: refuse until a fetch succeeds
            log.error("%s", e)
            return Verdict(reasons.PEP_ERROR, "the authorizer's JWKS could not be refreshed")
        try:
            return check_sae(token, keys, method=method, path=path, authority=authority, body=body,  # type: ignore[arg-type]
                             audience=self._audience, issuer=self._issuer, max_lifetime_seconds=self._max_lifetime)
        except InputRejected as e:
            return Verdict(e.reason, e.message)

    @staticmethod
    def redeemed(claims: dict[str, Any], first_use: bool | BaseException) -> Verdict:
        if isinstance(first_use, BaseException):
            log.error("redemption store failed, refusing: %s", first_use)
            return Verdict(reasons.PEP_ERROR, "redemption store unavailable")
        if not first_use:
            return Verdict(reasons.SAE_REPLAYED, "SAE was already used", claims["jti"])
        return Verdict(reasons.OK, "allowed", claims["jti"])

    def verify(self, method: str, path: str, authority: str, headers: dict[str, str], body: bytes) -> Verdict:
        checked = self.check(method, path, authority, headers, body)
        if isinstance(checked, Verdict):
            return checked
        try:
            return self.redeemed(checked, self._store.redeem(checked["jti"], checked["exp"]))
        except RedemptionUnavailable as e:
            return self.redeemed(checked, e)


class PepVerifierService(auth_grpc.AuthorizationServicer):
    """On the event loop: the checks are ~0.3 ms of CPU; only the redemption waits (on the store's group commit),
    as an awaited future. No thread per request: with threads, GIL hand-offs between them cost more than the
    work (8 client threads got 324 requests/s with a thread pool)."""

    REDEEM_TIMEOUT_SECONDS = 2.0

    def __init__(self, verifier: PepVerifier):
        self._verifier = verifier
        self.counters: dict[str, int] = {}

    def _redeem(self, jti: str, exp: int) -> asyncio.Future[bool]:
        # the store's writer thread commits whatever waits in one transaction; the loop never blocks on fsync
        # (committing on the loop held it ~5 ms per commit under load and capped the PEP near 200 requests/s)
        return asyncio.wrap_future(self._verifier.store.submit(jti, exp))

    def _check(self, request: auth_pb2.CheckRequest) -> Verdict | dict[str, Any]:
        http = request.attributes.request.http
        body = http.raw_body or http.body.encode("utf-8", "surrogatepass")
        return self._verifier.check(http.method, http.path, http.host, dict(http.headers), body)

    async def Check(self, request: auth_pb2.CheckRequest, context: Any) -> auth_pb2.CheckResponse:  # noqa: N802
        try:
            checked = self._check(request)
            if isinstance(checked, Verdict):
                verdict = checked
            else:
                try:
                    first_use: bool | BaseException = await asyncio.wait_for(
                        self._redeem(checked["jti"], checked["exp"]), self.REDEEM_TIMEOUT_SECONDS)
                except (RedemptionUnavailable, TimeoutError) as e:
                    first_use = e
                verdict = self._verifier.redeemed(checked, first_use)
        except Exception:  # fail closed on anything unforeseen
            log.exception("PEP verification failed")
            verdict = Verdict(reasons.PEP_ERROR, "enforcement point error")
        self.counters[verdict.reason] = self.counters.get(verdict.reason, 0) + 1
        return _ALLOW if verdict.reason == reasons.OK else deny_response(verdict.reason, verdict.message)

    def close(self) -> None:
        pass

"""grpc.aio Authorization/Check service and its server."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz import reasons
from ext_authz.authz.actions import ActionRequest, map_request
from ext_authz.authz.decision import Decision, DecisionMaker
from ext_authz.authz.response import ALLOW_ALL, UNSIGNED_DENIALS, request_view, to_check_response
from ext_authz.errors import ChainError, InputRejected, SigningError, StateStale
from ext_authz.server.config import AuthorizerConfig

log = logging.getLogger("sealgate.authz")


class AuthorizationService(auth_grpc.AuthorizationServicer):
    def __init__(self, config: AuthorizerConfig, decider: DecisionMaker,
                 enqueue: Callable[[bytes, str, str], None], allow_all: bool = False, signing_threads: int = 0,
                 mesh_clients: frozenset[str] | None = None,
                 identity_check: Callable[[str], None] | None = None):
        self._config = config
        # the agent certificate's revocation status (OCSP: ext_authz.pki.ocsp.CertStatus); raises InputRejected
        self._identity_check = identity_check
        # on a TLS link: the peer certificate's URI SAN must be one of these; None: a Unix socket, no peer check
        self._mesh_clients = None if mesh_clients is None else frozenset(c.encode() for c in mesh_clients)
        self._decider = decider
        self._enqueue = enqueue
        self._allow_all = allow_all
        self.counters: collections.Counter[str] = collections.Counter()
        self.signing_error: str | None = None  # set while the signer fails; /healthz reports it
        # a device signer (HSM) blocks for its round trip: decide on threads so the loop keeps accepting
        self._executor = (concurrent.futures.ThreadPoolExecutor(signing_threads, thread_name_prefix="sealgate-decide")
                          if signing_threads > 0 else None)

    def decide(self, request: auth_pb2.CheckRequest) -> Decision:
        action: ActionRequest | None = None
        principal = ""
        try:
            view = request_view(request)
            principal = view.principal[:512]
            action = map_request(view, self._config)
            if self._identity_check is not None:  # after the SPIFFE ID parsed: a certificate to ask about
                self._identity_check(view.certificate)
            return self._decider.decide(action)
        except InputRejected as e:
            return self._decider.deny(e.reason, e.message, action, principal=principal)
        except StateStale as e:
            return self._decider.deny(reasons.POLICY_STATE_STALE, str(e), action, principal=principal)
        except ChainError as e:
            return self._decider.deny(reasons.POLICY_EVALUATION_FAILED, str(e), action, principal=principal)
        except SigningError:
            raise  # a denial could not be signed either
        except Exception as e:  # fail closed on anything unforeseen, with its own code
            log.exception("decision failed")
            return self._decider.deny(reasons.INTERNAL_ERROR, f"{type(e).__name__}", action, principal=principal)

    async def Check(self, request: auth_pb2.CheckRequest, context: Any) -> auth_pb2.CheckResponse:  # noqa: N802
        if self._mesh_clients is not None and not self._mesh_clients.intersection(context.peer_identities() or ()):
            self.counters["MESH_CLIENT_REFUSED"] += 1
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "caller is not an allowlisted mesh Envoy")
        if self._executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.check, request)
        # on the event loop thread: a decision is ~0.3 ms of CPU; it waits on I/O only when pyrevm
        # reads storage the pinned EVM has not cached yet (an agent or rule not seen since the pin)
        return self.check(request)

    def check(self, request: auth_pb2.CheckRequest) -> auth_pb2.CheckResponse:
        if self._allow_all:
            return ALLOW_ALL
        try:
            decision = self.decide(request)
            self._enqueue(decision.token_hash, "sae" if decision.allowed else "denial", decision.decision_id)
        except SigningError as e:
            log.error("denied unsigned: %s", e)
            self.counters[reasons.SIGNING_FAILED] += 1
            self.signing_error = str(e)
            return UNSIGNED_DENIALS[reasons.SIGNING_FAILED]
        except Exception:
            log.exception("could not sign a denial")
            self.counters[reasons.INTERNAL_ERROR] += 1
            return UNSIGNED_DENIALS[reasons.INTERNAL_ERROR]
        self.counters[decision.reason] += 1
        self.signing_error = None
        return to_check_response(decision)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

"""grpc.aio Authorization/Check service: decide, then answer only once the decision's record is durable.

`persist(record)` hands the decision's evidence record (the signed token with what it is found by) to the
group committer and returns a future; the answer waits for it, at most `evidence.commit_timeout_seconds`. A
record that cannot be persisted turns the answer into a denial with EVIDENCE_UNAVAILABLE: no allowed action
runs without its record. (`persist` returning None means "do not wait": the former in-memory queue, kept for
the benchmark's side-by-side baseline only.)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, cast

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from ext_authz import reasons
from ext_authz.authz.actions import ActionRequest, map_request
from ext_authz.authz.decision import Decision, DecisionMaker
from ext_authz.authz.response import ALLOW_ALL, UNSIGNED_DENIALS, request_view, to_check_response
from ext_authz.errors import ChainError, InputRejected, SigningError, StateNotCached, StateStale
from ext_authz.evidence.store import EvidenceRecord, EvidenceUnavailable
from ext_authz.server.config import AuthorizerConfig

APPROVAL_HEADER = "x-sealgate-approval"
Persist = Callable[[EvidenceRecord], "concurrent.futures.Future[None] | None"]

log = logging.getLogger("sealgate.authz")


class AuthorizationService(auth_grpc.AuthorizationServicer):
    def __init__(self, config: AuthorizerConfig, decider: DecisionMaker,
                 persist: Persist, allow_all: bool = False, signing_threads: int = 0,
                 mesh_clients: frozenset[str] | None = None, fetch_state: Callable[[StateNotCached], None] | None = None):
        self._config = config
        # on a TLS link: the peer certificate's URI SAN must be one of these; None: a Unix socket, no peer check
        self._mesh_clients = None if mesh_clients is None else frozenset(c.encode() for c in mesh_clients)
        self._decider = decider
        self._persist = persist
        self._commit_timeout = config.evidence.commit_timeout_seconds
        self.evidence_error: str | None = None  # set while records cannot be persisted; /healthz reports it
        self._allow_all = allow_all
        self.counters: collections.Counter[str] = collections.Counter()
        self.signing_error: str | None = None  # set while the signer fails; /healthz reports it
        # a device signer (HSM) blocks for its round trip: decide on threads so the loop keeps accepting
        self._executor = (concurrent.futures.ThreadPoolExecutor(signing_threads, thread_name_prefix="sealgate-decide")
                          if signing_threads > 0 else None)
        # state the pinned EVM has not cached is fetched on these threads, never on the event loop (and requests
        # carrying an approval are decided here: claiming it is a durable write)
        self._fetch_state = fetch_state
        self._fetch_timeout = config.policy_fetch_timeout_seconds
        self._fetcher = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="sealgate-fetch")

    def decide(self, request: auth_pb2.CheckRequest, state_unavailable: str | None = None) -> Decision:
        """`state_unavailable`: fetching the state this request needs failed; a miss now denies with
        POLICY_STATE_UNAVAILABLE (else it propagates, for the caller to fetch off its loop and decide again)."""
        action: ActionRequest | None = None
        principal = ""
        try:
            view = request_view(request)
            principal = view.principal[:512]
            action = map_request(view, self._config)
            return self._decider.decide(action)
        except InputRejected as e:
            return self._decider.deny(e.reason, e.message, action, principal=principal)
        except StateStale as e:
            return self._decider.deny(reasons.POLICY_STATE_STALE, str(e), action, principal=principal)
        except StateNotCached:
            if state_unavailable is None and self._fetch_state is not None:
                raise
            return self._decider.deny(reasons.POLICY_STATE_UNAVAILABLE, state_unavailable or "state not cached",
                                      action, principal=principal)
        except EvidenceUnavailable as e:  # an approval's use could not be recorded
            return self._decider.deny(reasons.EVIDENCE_UNAVAILABLE, str(e), action, principal=principal)
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
        loop = asyncio.get_running_loop()
        unavailable: str | None = None
        # a request carrying an approval writes its use durably while deciding (single use): on a thread, so a
        # slow disk never holds the loop; such requests are rare
        executor = self._executor or (self._fetcher if APPROVAL_HEADER in request.attributes.request.http.headers
                                      else None)
        for _ in range(self.MAX_FETCHES + 1):
            try:
                if executor is not None:
                    decided = await loop.run_in_executor(executor, self.decide_and_persist, request, unavailable)
                else:
                    # on the event loop thread: a decision is ~0.3 ms of CPU, from state in memory
                    decided = self.decide_and_persist(request, unavailable)
                break
            except StateNotCached as miss:  # fetched off the loop, with a deadline; other requests go on meanwhile
                unavailable = await self._fetch(loop, miss)
        else:
            decided = self.decide_and_persist(request, "the state kept changing while it was fetched")
        if isinstance(decided, auth_pb2.CheckResponse):
            return decided
        decision, durable = decided
        if durable is not None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(durable), self._commit_timeout)
            except (TimeoutError, EvidenceUnavailable) as e:
                return self._unrecorded(decision, e)
        return self._answer(decision)

    MAX_FETCHES = 3  # a decision may need state from several contracts (policy, then an approver's key)

    async def _fetch(self, loop: asyncio.AbstractEventLoop, miss: StateNotCached) -> str | None:
        """None when fetched; else why not (the request is then denied with POLICY_STATE_UNAVAILABLE)."""
        assert self._fetch_state is not None
        try:
            await asyncio.wait_for(loop.run_in_executor(self._fetcher, self._fetch_state, miss), self._fetch_timeout)
            return None
        except TimeoutError:
            self.counters["STATE_FETCH_TIMEOUT"] += 1
            return f"the chain did not serve the state of block {miss.block} within {self._fetch_timeout}s"
        except ChainError as e:
            return f"fetching the state of block {miss.block} failed: {e}"[:200]

    def check(self, request: auth_pb2.CheckRequest) -> auth_pb2.CheckResponse:
        """The same as Check, blocking (tests and tools)."""
        unavailable: str | None = None
        for _ in range(self.MAX_FETCHES + 1):
            try:
                decided = self.decide_and_persist(request, unavailable)
                break
            except StateNotCached as miss:
                assert self._fetch_state is not None
                try:
                    self._fetcher.submit(self._fetch_state, miss).result(timeout=self._fetch_timeout)
                except (concurrent.futures.TimeoutError, ChainError) as e:
                    unavailable = f"fetching the state of block {miss.block} failed: {e}"[:200]
        else:
            decided = self.decide_and_persist(request, "the state kept changing while it was fetched")
        if isinstance(decided, auth_pb2.CheckResponse):
            return decided
        decision, durable = decided
        if durable is not None:
            try:
                durable.result(timeout=self._commit_timeout)
            except (EvidenceUnavailable, concurrent.futures.TimeoutError) as e:
                return self._unrecorded(decision, e)
        return self._answer(decision)

    def decide_and_persist(self, request: auth_pb2.CheckRequest, state_unavailable: str | None = None
                           ) -> auth_pb2.CheckResponse | tuple[Decision, concurrent.futures.Future[None] | None]:
        """The decision and its record handed to the store; or the unsigned answer when nothing could be signed.
        Raises StateNotCached when the policy needs state not fetched yet (and `state_unavailable` is None)."""
        if self._allow_all:
            return ALLOW_ALL
        try:
            decision = self.decide(request, state_unavailable)
        except StateNotCached:
            raise
        except SigningError as e:
            log.error("denied unsigned: %s", e)
            self.counters[reasons.SIGNING_FAILED] += 1
            self.signing_error = str(e)
            return UNSIGNED_DENIALS[reasons.SIGNING_FAILED]
        except Exception:
            log.exception("could not sign a denial")
            self.counters[reasons.INTERNAL_ERROR] += 1
            return UNSIGNED_DENIALS[reasons.INTERNAL_ERROR]
        self.signing_error = None
        return decision, self._persist(cast(EvidenceRecord, decision.record))

    def _answer(self, decision: Decision) -> auth_pb2.CheckResponse:
        self.evidence_error = None
        self.counters[decision.reason] += 1
        return to_check_response(decision)

    def _unrecorded(self, decision: Decision, error: BaseException) -> auth_pb2.CheckResponse:
        """The record is not durable: whatever was decided, the answer is a denial that is not recorded either
        (it says so). A record that turns durable after the timeout only adds evidence of an SAE never delivered."""
        message = str(error) or f"the evidence store did not commit within {self._commit_timeout}s"
        self.evidence_error = message
        self.counters[reasons.EVIDENCE_UNAVAILABLE] += 1
        try:
            principal = decision.record.agent if decision.record is not None else None
            return to_check_response(self._decider.deny(reasons.EVIDENCE_UNAVAILABLE, message, principal=principal or ""))
        except Exception:
            return UNSIGNED_DENIALS[reasons.EVIDENCE_UNAVAILABLE]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._fetcher.shutdown(wait=False, cancel_futures=True)

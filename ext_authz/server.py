"""gRPC edge: envoy.service.auth.v3.Authorization/Check, plus a small admin HTTP endpoint."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from . import reasons
from .actions import ActionRequest, RequestView, map_request
from .config import AuthorizerConfig
from .decision import Decision, DecisionMaker
from .errors import ChainError, InputRejected, SigningError, StateStale

log = logging.getLogger("sealgate.authz")

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ALLOW_ALL = auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


def request_view(request: auth_pb2.CheckRequest) -> RequestView:
    http = request.attributes.request.http
    source = request.attributes.source
    body = http.raw_body or http.body.encode("utf-8", "surrogatepass")
    return RequestView(
        method=http.method,
        authority=http.host,
        path=http.path,
        headers=http.headers,
        body=body,
        principal=source.principal,
        request_size=max(http.size, 0),
        certificate=source.certificate,
        # everything but the body, protobuf framing included: an upper bound of the headers' size
        headers_size=max(http.ByteSize() - len(body), 0),
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


# the allow answer's shape, filled per decision (copying a template: ~2 us vs ~9 us building it)
_ALLOW_TEMPLATE = auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK),
    ok_response=auth_pb2.OkHttpResponse(
        headers=[_header("x-sae", ""), _header("x-sealgate-decision-id", "")],
        headers_to_remove=["x-sae-parent", "x-sealgate-approval"],
    ),
)


def to_check_response(decision: Decision) -> auth_pb2.CheckResponse:
    if decision.allowed:
        response = auth_pb2.CheckResponse()
        response.CopyFrom(_ALLOW_TEMPLATE)
        sae_header, id_header = response.ok_response.headers
        sae_header.header.value = decision.token
        id_header.header.value = decision.decision_id
        return response
    doc = {"decision_id": decision.decision_id, "reason_code": decision.reason, "message": decision.message}
    if decision.approval_request is not None:
        doc["approval_request"] = decision.approval_request
    body = json.dumps(doc)
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=decision.reason),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[
                _header("content-type", "application/json"),
                _header("x-sae-denial", decision.token),
                _header("x-sealgate-reason", decision.reason),
                _header("x-sealgate-decision-id", decision.decision_id),
            ],
            body=body,
        ),
    )


def unsigned_denial(reason: str) -> auth_pb2.CheckResponse:
    """Last-resort answer when not even a denial can be signed: still a denial, with its reason."""
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=reason),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[_header("content-type", "application/json"), _header("x-sealgate-reason", reason)],
            body=json.dumps({"decision_id": None, "reason_code": reason, "message": reasons.MESSAGES[reason]}),
        ),
    )


_UNSIGNED = {reason: unsigned_denial(reason) for reason in (reasons.INTERNAL_ERROR, reasons.SIGNING_FAILED)}


class AuthorizationService(auth_grpc.AuthorizationServicer):
    def __init__(self, config: AuthorizerConfig, decider: DecisionMaker,
                 enqueue: Callable[[bytes, str, str], None], allow_all: bool = False, signing_threads: int = 0):
        self._config = config
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
        if self._executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.check, request)
        # on the event loop thread: a decision is ~0.3 ms of CPU; it waits on I/O only when pyrevm
        # reads storage the pinned EVM has not cached yet (an agent or rule not seen since the pin)
        return self.check(request)

    def check(self, request: auth_pb2.CheckRequest) -> auth_pb2.CheckResponse:
        if self._allow_all:
            return _ALLOW_ALL
        try:
            decision = self.decide(request)
            self._enqueue(decision.token_hash, "sae" if decision.allowed else "denial", decision.decision_id)
        except SigningError as e:
            log.error("denied unsigned: %s", e)
            self.counters[reasons.SIGNING_FAILED] += 1
            self.signing_error = str(e)
            return _UNSIGNED[reasons.SIGNING_FAILED]
        except Exception:
            log.exception("could not sign a denial")
            self.counters[reasons.INTERNAL_ERROR] += 1
            return _UNSIGNED[reasons.INTERNAL_ERROR]
        self.counters[decision.reason] += 1
        self.signing_error = None
        return to_check_response(decision)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


class GrpcServer:
    """grpc.aio server on its own event-loop thread.

    One loop thread, no thread-pool handoff per RPC: under load the sync server's
    handoffs and GIL convoys cost more CPU than the decision itself.
    """

    def __init__(self, service: AuthorizationService, address: str):
        self._service = service
        self._address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sealgate-grpc", daemon=True)
        self._server: grpc.aio.Server | None = None

    async def _start(self) -> int:
        self._server = grpc.aio.server()
        auth_grpc.add_AuthorizationServicer_to_server(self._service, self._server)
        port = self._server.add_insecure_port(self._address)
        if port == 0:
            raise OSError(f"cannot bind gRPC address {self._address}")
        await self._server.start()
        return port

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(timeout=grace + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def serve_admin(address: tuple[str, int], status: Callable[[], dict[str, Any]], jwks: dict[str, Any]) -> ThreadingHTTPServer:
    """GET /status (JSON), /jwks.json, /healthz (200 only while the pinned state is fresh)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path == "/jwks.json":
                self._send(200, jwks)
            elif self.path == "/status":
                self._send(200, status())
            elif self.path == "/healthz":
                st = status()
                self._send(200 if st.get("healthy") else 503, {"healthy": st.get("healthy")})
            else:
                self._send(404, {"error": "not found"})

        def _send(self, code: int, doc: Any) -> None:
            body = json.dumps(doc, sort_keys=True).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(address, Handler)
    threading.Thread(target=httpd.serve_forever, name="sealgate-admin", daemon=True).start()
    return httpd

"""The anchoring service's read-only HTTP: GET /healthz and GET /v1/proofs/<anchored value hex>."""

from __future__ import annotations

from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from ext_authz.anchoring.proofs import parse_value, proof_document
from ext_authz.anchoring.store import AnchorStore
from ext_authz.errors import InputRejected
from ext_authz.httpd import QuietHandler, serve_in_thread

PROOFS_PREFIX = "/v1/proofs/"


def serve_anchor_http(address: tuple[str, int], store: AnchorStore, health: Callable[[], dict[str, Any]],
                      chain_id: int, anchor: str) -> ThreadingHTTPServer:
    """/healthz: 200 {"status": "ok", ...} or 503 {"status": "degraded", backlog, oldest age, last error};
    /v1/proofs/<hash>: 200 with the value's proof, 404 when unknown, 400 for anything but 32 bytes of hex.
    Every other method is 405: nothing here writes."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            try:
                if self.path == "/healthz":
                    doc = health()
                    self.send_json(200 if doc["status"] == "ok" else 503, doc)
                elif self.path.startswith(PROOFS_PREFIX):
                    value = parse_value(self.path[len(PROOFS_PREFIX):])
                    found = proof_document(store, value, chain_id, anchor)
                    self.send_json(404, {"error": "unknown value"}) if found is None else self.send_json(200, found)
                else:
                    self.send_json(404, {"error": "not found"})
            except InputRejected as e:
                self.send_json(400, {"error": e.message, "reason_code": e.reason})
            except Exception as e:  # the store is unreadable: say so, never a traceback
                self.send_json(503, {"error": f"store unavailable: {type(e).__name__}"})

        def _refuse(self) -> None:
            self.send_json(405, {"error": "read-only"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    return serve_in_thread(address, Handler, "sealgate-anchor-http")

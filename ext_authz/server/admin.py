"""Admin HTTP: /status, /jwks.json, /healthz."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


"""Admin HTTP: /status, /jwks.json, /healthz."""

from __future__ import annotations

from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from ext_authz.httpd import QuietHandler, serve_in_thread


def serve_admin(address: tuple[str, int], status: Callable[[], dict[str, Any]], jwks: dict[str, Any]) -> ThreadingHTTPServer:
    """GET /status (JSON), /jwks.json, /healthz (200 only while the pinned state is fresh)."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path == "/jwks.json":
                self.send_json(200, jwks)
            elif self.path == "/status":
                self.send_json(200, status())
            elif self.path == "/healthz":
                st = status()
                self.send_json(200 if st.get("healthy") else 503, {"healthy": st.get("healthy")})
            else:
                self.send_json(404, {"error": "not found"})

    return serve_in_thread(address, Handler, "sealgate-admin")


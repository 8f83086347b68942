"""The small read-only HTTP endpoints (authorizer admin, anchoring service, OCSP responder): one handler base
that writes a whole response and logs nothing per request, and a server on its own daemon thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    def send_body(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, doc: Any) -> None:
        self.send_body(code, json.dumps(doc, sort_keys=True).encode(), "application/json")

    def log_message(self, *args: Any) -> None:
        pass  # requests are not logged: the callers report what matters (status, errors)


def serve_in_thread(address: tuple[str, int], handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(address, handler)
    threading.Thread(target=httpd.serve_forever, name=name, daemon=True).start()
    return httpd

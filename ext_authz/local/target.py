"""Demo target service: answers every request with what it received (behind the PEP)."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from joserfc.jwk import KeySet

from ext_authz.errors import InputRejected
from ext_authz.sdk.redemption import RedemptionStore, open_redemptions
from ext_authz.sdk.target import check_sae


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TargetServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms stalls

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.server.keys is not None:  # verify the SAE here too: the body binding the PEP cannot check
            try:
                check_sae(self.headers.get("x-sae"), self.server.keys, method=self.command, path=self.path,
                          authority=self.headers.get("host") or "", body=body, audience=self.server.audience,
                          issuer=self.server.issuer, redemptions=self.server.redemptions)
            except InputRejected as e:
                return self._send(403, {"reason_code": e.reason, "message": e.message}, {"x-sealgate-reason": e.reason})
        doc = {
            "executed": True,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("host"),
            "sae": self.headers.get("x-sae"),  # the target keeps the SAE as its receipt
            "body_bytes": len(body),
            "header_names": sorted({k.lower() for k in self.headers.keys()}),  # shows what the mesh stripped
        }
        if self.server.receipts is not None:  # one line per executed request: what ran, under which SAE
            with self.server.lock:
                self.server.receipts.write(json.dumps({"method": self.command, "path": self.path, "sae": doc["sae"]}) + "\n")
        self._send(200, doc)

    def _send(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> None:
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


class TargetServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    receipts: TextIO | None = None
    keys: KeySet | None = None  # with --jwks: SAEs are checked here too, body included
    audience = ""
    issuer = ""
    lock = threading.Lock()
    redemptions: RedemptionStore | None = None  # with --jwks: each SAE executes once here


def main() -> None:
    parser = argparse.ArgumentParser(description="Sealgate demo target service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--receipts", help="append a JSON line per executed request (with its SAE) to this file")
    parser.add_argument("--jwks", help="the authorizer's JWKS file: check every SAE here as well, body digest included")
    parser.add_argument("--audience", default="payments-api", help="this service's name, the SAEs' aud")
    parser.add_argument("--issuer", help="the authorizer's issuer URI, the SAEs' iss (needed with --jwks)")
    parser.add_argument("--redemptions", metavar="URL",
                        help="with --jwks: redeem each SAE once in this store (default: target-redeemed.sqlite3 here), "
                             "so a request reaching the target past its PEP cannot run an SAE twice")
    args = parser.parse_args()
    if args.jwks and not args.issuer:
        parser.error("--jwks needs --issuer: an SAE is checked against the authorizer that issued it")
    server = TargetServer(("127.0.0.1", args.port), _Handler)
    if args.jwks:
        server.keys = KeySet.import_key_set(json.loads(Path(args.jwks).read_text()))
        server.audience = args.audience
        server.issuer = args.issuer
        server.redemptions = open_redemptions(args.redemptions or str(Path("target-redeemed.sqlite3").resolve()))
    if args.receipts:
        server.receipts = open(args.receipts, "a", buffering=1)
    server.serve_forever()


if __name__ == "__main__":
    main()

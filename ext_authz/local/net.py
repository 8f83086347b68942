"""Small process and network helpers for the local stack and the tests: binaries, free ports, waits, HTTP."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ext_authz.errors import ConfigError, SealgateError

ANVIL_IN_CHECKOUT = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def anvil_binary() -> str:
    """$ANVIL_BIN, else anvil on the PATH, else the npm one of the checkout the command runs in (the local stack is
    a development tool; the installed package's runtime never needs anvil)."""
    for path in (os.environ.get("ANVIL_BIN"), shutil.which("anvil"), str(Path.cwd() / ANVIL_IN_CHECKOUT)):
        if path and Path(path).is_file():
            return path
    raise ConfigError(f"anvil not found: set ANVIL_BIN, put anvil on the PATH, or run from a checkout after `make install` "
                      f"({ANVIL_IN_CHECKOUT})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing waited for is not up yet
            last = e
        time.sleep(interval)
    raise SealgateError(f"timed out after {timeout}s waiting for {what}" + (f": {last}" if last else ""))


def http_get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any, headers: dict[str, str] | None,
             authority: str) -> Response:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    hdrs = {"host": authority, **({"content-type": "application/json"} if data is not None else {}), **(headers or {})}
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def unix_open(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        return s.connect_ex(str(path)) == 0


def tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (Envoy's admin interface)."""

    def __init__(self, path: str, timeout: float = 2.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def envoy_admin(admin: int | str, method: str, path: str) -> tuple[int, bytes]:
    """One request to an Envoy admin interface: `unix:/path` or a loopback port."""
    conn = (UnixHTTPConnection(admin.removeprefix("unix:")) if isinstance(admin, str)
            else http.client.HTTPConnection("127.0.0.1", admin, timeout=2))
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def envoy_ready(admin: int | str) -> bool:
    return envoy_admin(admin, "GET", "/ready")[0] == 200

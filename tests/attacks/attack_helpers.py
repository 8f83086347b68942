"""Shared helpers of the attack suite: receipt counting, token re-signing, raw HTTP, probes as another user.

Every attack asserts what the target actually executed (lines of `<workdir>/target-receipts.jsonl` written
since the attack began), never only a status code. Forged tokens are built format-agnostically: a real SAE,
denial or approval issued by the running stack is verified, its header and claims are changed only where the
attack needs it (act.m/h/p/bd, jti, exp, iat, nbf, aud) and it is re-signed with the authorizer's key (the
tests hold it) or with a foreign one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ext_authz.envelope.encoding import b64url, canonical_json, compact_json
from ext_authz.envelope.jws import SAE_TYP, EnvelopeEncoder, verify
from ext_authz.local.net import Response, request
from ext_authz.local.stack import AUTHORITY, LocalStack

BODY = {"amount_cents": 700, "to": "vendor-42"}
NOBODY = 65534


# ------------------------------------------------------------------ what the target executed

def _unverified_claims(token: Any) -> dict[str, Any]:
    """The payload of whatever token the target received (forged ones too: a forged SAE that executed must count)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception:
        return {}


class Receipts:
    """The target's receipt lines written after this object was made: one per executed request."""

    def __init__(self, stack: LocalStack, path: Path | None = None):
        self.path = path or stack.workdir / "target-receipts.jsonl"
        self.start = len(self._lines())

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def new(self) -> list[dict[str, Any]]:
        return self._lines()[self.start:]

    def count(self, jti: str | None = None, path: str | None = None, contains: str | None = None) -> int:
        n = 0
        for line in self.new():
            if jti is not None and _unverified_claims(line.get("sae")).get("jti") != jti:
                continue
            if path is not None and line["path"] != path:
                continue
            if contains is not None and contains not in line["path"]:
                continue
            n += 1
        return n


def wait_receipts_settled(receipts: Receipts, seconds: float = 0.3) -> None:
    """A request refused or cut off may still be in flight upstream: give it a moment before counting zero."""
    time.sleep(seconds)


# ------------------------------------------------------------------ tokens

def body_bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_segment(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def verified(token: str, jwks: dict[str, Any], typ: str = SAE_TYP, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a real token, after verify() accepted it (nothing reads unverified claims of a
    template)."""
    claims = verify(token, jwks, typ=typ, **kw)
    return decode_segment(token.split(".")[0]), claims


def sign_raw(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    """A compact JWS with exactly this header and these claims; `sign(bytes) -> bytes` (or None: no signature)."""
    signing_input = f"{b64url(canonical_json(header))}.{b64url(compact_json(claims))}"
    signature = b"" if sign is None else sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def hs256_with(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def unique(prefix: str = "atk") -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def real_sae(stack: LocalStack, agent: str = "procurement-01", method: str = "POST", path: str = "/v1/transfers",
             body: Any = BODY) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A real SAE issued through the sidecar (it executes once: take Receipts after this): token, header, claims."""
    r = stack.agent_call(agent, method, path, body)
    assert r.status == 200, r.body
    token = r.json()["sae"]
    header, claims = verified(token, stack.jwks)
    return token, header, claims


def fresh_claims(template: dict[str, Any], body: Any = BODY, act: dict[str, Any] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """A template's claims with a new jti, fresh times (same lifetime), act.bd of `body`, then overrides."""
    claims = copy.deepcopy(template)
    now = int(time.time())
    lifetime = template["exp"] - template["iat"]
    claims.update(jti=unique("fresh"), iat=now, nbf=now, exp=now + lifetime)
    if body is not None:
        claims["act"]["bd"] = sha256_hex(body_bytes(body))
    claims["act"].update(act or {})
    claims.update(overrides)
    return claims


def resign(stack: LocalStack, claims: dict[str, Any], typ: str = SAE_TYP) -> str:
    """Signed with the authorizer's own key and header layout (as the authorizer would issue it)."""
    return EnvelopeEncoder(stack.signer).encode(claims, typ)


# ------------------------------------------------------------------ HTTP

def http_call(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              authority: str = AUTHORITY, timeout: float = 10) -> Response:
    return request(http.client.HTTPConnection("127.0.0.1", port, timeout=timeout), method, path, body, headers, authority)


def pep_send(stack: LocalStack, token: str | None, body: Any = BODY, path: str = "/v1/transfers", method: str = "POST",
             headers: dict[str, str] | None = None, authority: str = AUTHORITY, port: int | None = None) -> Response:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["x-sae"] = token
    return http_call(port or stack.ports.pep, method, path, body, hdrs, authority)


def reason(resp: Response) -> str | None:
    return resp.headers.get("x-sealgate-reason")


def raw_exchange(port: int, data: bytes, context: ssl.SSLContext | None = None, timeout: float = 3.0) -> bytes:
    """Sends raw bytes (TLS with `context`) and reads until the peer closes or `timeout` passes in silence."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    out = b""
    try:
        sock.sendall(data)
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ssl.SSLError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        sock.close()
    return out


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3})", raw)]


def raw_request(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
                authority: str = AUTHORITY) -> bytes:
    """An HTTP/1.1 request with exactly these header lines (duplicates kept, nothing added but Host)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------ another user

def as_nobody(code: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as an unprivileged user (uid 65534)")
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3 for the unprivileged probe")
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=30, cwd="/",
                          preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))

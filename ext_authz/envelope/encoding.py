"""Byte-level encodings shared by every envelope: base64url, canonical and compact JSON, the anchored hash."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def canonical_json(claims: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(claims).encode("ascii")


def compact_json(claims: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys for the decision path: orjson (~1 us) instead of the
    stdlib encoder (~11 us). orjson refuses integers beyond 64 bits (amounts may reach
    2**256 - 1): those claims take the stdlib encoder. Both outputs are valid JSON with
    the same values; nothing re-serializes a payload to check it."""
    try:
        return orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return canonical_json(claims)


def sae_hash(token: str) -> bytes:
    """The anchored value of an SAE or denial: SHA-256 of its JWS signing input, the ASCII bytes
    `BASE64URL(header) "." BASE64URL(payload)` (RFC 7515 §5.1), i.e. exactly what the signature covers.

    The signature is left out on purpose: an ES256 signature (r, s) has a second valid spelling (r, n - s)
    and a signer may sign the same bytes twice with different signatures; neither may change what was
    anchored. Every verifier refuses a segment that is not canonical base64url, so the signing input of a
    token that verifies is the one canonical spelling of its header and payload bytes
    (docs/evidence-format.md)."""
    signing_input, dot, _signature = token.rpartition(".")
    if not dot or signing_input.count(".") != 1:
        raise ValueError("a JWS compact token has exactly three segments")
    return hashlib.sha256(signing_input.encode("ascii")).digest()


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
    """SHA-256 of the compact serialization: the value anchored on-chain."""
    return hashlib.sha256(token.encode("ascii")).digest()


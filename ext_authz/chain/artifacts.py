"""Compiled contract artifacts (ABI + bytecode) shipped as package data, and revert decoding."""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

from eth_utils import keccak

from ext_authz.errors import ConfigError

# ours compiled from contracts/src, Safe's vendored from its npm build (contracts/compile.cjs writes both)
ARTIFACTS_DIR = Path(str(importlib.resources.files("ext_authz.chain") / "contracts"))


@functools.cache
def artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"contract artifact {path} unreadable: {e}") from e


@functools.cache
def _error_selectors() -> dict[str, str]:
    names = {}
    for path in ARTIFACTS_DIR.glob("*.json"):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] == "error":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                names["0x" + keccak(text=sig)[:4].hex()] = sig
    return names


def describe_revert(error: Exception) -> str:
    """Names the contract's custom error behind a web3 revert, when it is one of ours."""
    data = str(getattr(error, "data", "") or "")
    sig = _error_selectors().get(data[:10]) if data.startswith("0x") else None
    return f"reverted with {sig}" if sig else str(error)


def role_id(name: str) -> bytes:
    """OpenZeppelin AccessControl role id; DEFAULT_ADMIN_ROLE is 0x00, not a hash."""
    return bytes(32) if name == "DEFAULT_ADMIN_ROLE" else keccak(name.encode("ascii"))


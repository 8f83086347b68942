"""The receipts root of a block, rebuilt from its receipts: binds a receipt (and its logs) to a block header.

Ethereum's `receiptsRoot` is the root of a hexary Merkle Patricia trie mapping `rlp(index)` to each receipt's
consensus encoding (EIP-2718: the type byte, then `rlp([status, cumulativeGasUsed, logsBloom, logs])`; a
legacy receipt without the byte). Rebuilding it from every receipt of the block and comparing it with the
header's field proves offline that a `BatchAnchored` log is in that block. Checked against anvil's own roots
in tests/integration/test_evidence_bundle.py.
"""

from __future__ import annotations

from typing import Any

import rlp
from eth_utils import keccak

EMPTY_ROOT = keccak(rlp.encode(b""))


def _nibbles(key: bytes) -> tuple[int, ...]:
    return tuple(n for b in key for n in (b >> 4, b & 0x0F))


def _hex_prefix(path: tuple[int, ...], leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(path) % 2:
        path = (flag + 1, *path)
    else:
        path = (flag, 0, *path)
    return bytes(path[i] << 4 | path[i + 1] for i in range(0, len(path), 2))


def _ref(node: Any) -> Any:
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else keccak(encoded)


def _build(pairs: list[tuple[tuple[int, ...], bytes]], depth: int) -> Any:
    if len(pairs) == 1:
        key, value = pairs[0]
        return [_hex_prefix(key[depth:], True), value]
    rests = [k[depth:] for k, _ in pairs]
    shared = 0
    while all(len(r) > shared for r in rests) and len({r[shared] for r in rests}) == 1:
        shared += 1
    if shared:
        return [_hex_prefix(rests[0][:shared], False), _ref(_build(pairs, depth + shared))]
    branch: list[Any] = [b""] * 17
    for nibble in range(16):
        sub = [(k, v) for k, v in pairs if len(k) > depth and k[depth] == nibble]
        if sub:
            branch[nibble] = _ref(_build(sub, depth + 1))
    for k, v in pairs:
        if len(k) == depth:
            branch[16] = v
    return branch


def trie_root(items: list[bytes]) -> bytes:
    """Root of the trie of `items` keyed by rlp(index), as transactionsRoot and receiptsRoot are built."""
    if not items:
        return EMPTY_ROOT
    pairs = sorted((_nibbles(rlp.encode(i)), v) for i, v in enumerate(items))
    return keccak(rlp.encode(_build(pairs, 0)))


def encode_receipt(r: dict[str, Any]) -> bytes:
    """The consensus encoding of a receipt given as {type, status, cumulativeGasUsed, logsBloom, logs:[{address,
    topics, data}]} (hex strings and integers, as a bundle carries them)."""
    logs = [[bytes.fromhex(lg["address"][2:]), [bytes.fromhex(t[2:]) for t in lg["topics"]], bytes.fromhex(lg["data"][2:])]
            for lg in r["logs"]]
    body = rlp.encode([b"\x01" if r["status"] == 1 else b"", r["cumulativeGasUsed"], bytes.fromhex(r["logsBloom"][2:]), logs])
    kind = r["type"]
    if type(kind) is not int or not 0 <= kind < 0x7F:
        raise ValueError(f"receipt type {kind!r}")
    return body if kind == 0 else bytes([kind]) + body

"""Inclusion proofs in the OpenZeppelin StandardMerkleTree format, one anchored value at a time.

A proof names only its own value: the siblings on its path are hashes of hashes of other values, so a
reader learns nothing about other decisions it does not already know. Verify with
`StandardMerkleTree.verify(root, ["bytes32"], [value], proof)` (npm @openzeppelin/merkle-tree), with
`SaeAnchor.verifyInclusion(root, value, proof)` on-chain, or with `verify_document` here.
"""

from __future__ import annotations

import re
from typing import Any

from ext_authz import reasons
from ext_authz.anchoring.merkle import leaf_hash, verify_proof
from ext_authz.anchoring.store import AnchorStore
from ext_authz.errors import InputRejected

PROOF_FORMAT = "sealgate-inclusion-proof/1"
LEAF_ENCODING = ["bytes32"]
_HASH = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def parse_value(text: str) -> bytes:
    """A 32-byte anchored value as hex (with or without 0x); anything else is refused."""
    if not _HASH.fullmatch(text):
        raise InputRejected(reasons.MERKLE_INPUT_INVALID, "an anchored value is 32 bytes in hex (64 digits, optional 0x)")
    return bytes.fromhex(text.removeprefix("0x"))


def proof_document(store: AnchorStore, value: bytes, chain_id: int, anchor: str) -> dict[str, Any] | None:
    """The proof of `value`, or None when this store never saw it."""
    found = store.proof_for(value)
    if found is None:
        return None
    doc: dict[str, Any] = {"format": PROOF_FORMAT, "value": "0x" + value.hex(), "leafEncoding": LEAF_ENCODING,
                           "status": found.status, "chainId": chain_id, "anchor": anchor}
    if found.status == "queued":
        return doc
    doc.update({"leaf": "0x" + leaf_hash(value).hex(), "root": "0x" + found.root.hex(),
                "proof": ["0x" + p.hex() for p in found.proof]})
    if found.status in ("mined", "anchored"):
        doc.update({"txHash": found.tx_hash, "block": found.block, "firstSeq": found.chain_first,
                    "lastSeq": found.chain_last})
    return doc


def verify_document(doc: dict[str, Any]) -> bytes:
    """Checks a proof document's shape and that its proof leads from its value to its root; returns the root."""
    try:
        if doc["format"] != PROOF_FORMAT or doc["leafEncoding"] != LEAF_ENCODING:
            raise InputRejected(reasons.MERKLE_INPUT_INVALID, f"not a {PROOF_FORMAT} proof over {LEAF_ENCODING}")
        value, root = parse_value(doc["value"]), parse_value(doc["root"])
        proof = [parse_value(p) for p in doc["proof"]]
        if "leaf" in doc and parse_value(doc["leaf"]) != leaf_hash(value):
            raise InputRejected(reasons.ANCHOR_MISMATCH, "the proof's leaf is not the leaf of its value")
    except (KeyError, TypeError, AttributeError) as e:
        raise InputRejected(reasons.MERKLE_INPUT_INVALID, f"malformed proof document: {e!r}") from e
    if not verify_proof(root, value, proof):
        raise InputRejected(reasons.ANCHOR_MISMATCH, "the Merkle proof does not lead from the value to the root")
    return root

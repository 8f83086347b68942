"""`sealgate verify`: signature and claims against the JWKS, then inclusion in an anchored root."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from . import reasons
from web3.logs import DISCARD

from .anchoring import AnchorStore
from .chain import ChainClient, Manifest
from .errors import InputRejected, SaeInvalid
from .merkle import leaf_hash, verify_proof
from .sae import SAE_TYP, sae_hash, verify



@dataclass(frozen=True)
class VerifiedAnchor:
    claims: dict[str, Any]
    sae_hash: str
    root: str
    block: int
    tx_hash: str
    expired: bool


def verify_anchored(token: str, jwks: dict[str, Any], manifest: Manifest, store: AnchorStore,
                    typ: str = SAE_TYP, now: float | None = None) -> VerifiedAnchor:
    """Raises InputRejected (with a reason) unless the token verifies and is anchored on-chain."""
    claims = verify(token, jwks, typ=typ, check_time=False)
    chain = claims.get("chain") or {}
    if chain.get("id") != manifest.chain_id or str(chain.get("anchor", "")).lower() != manifest.anchor.lower():
        raise SaeInvalid(reasons.SAE_INVALID, f"token names chain {chain}, this deployment is {manifest.chain_id}/{manifest.anchor}")
    digest = sae_hash(token)
    found = store.proof_for(digest)
    if found is None:
        raise InputRejected(reasons.NOT_ANCHORED, "this token's hash was never queued for anchoring by this authorizer")
    if found.status != "anchored":
        raise InputRejected(reasons.NOT_ANCHORED, f"this token's hash is {found.status}, not yet anchored")
    if not verify_proof(found.root, digest, found.proof):
        raise InputRejected(reasons.ANCHOR_MISMATCH, "the stored Merkle proof does not lead to the stored root")
    client = ChainClient(manifest.rpc_url)
    anchor = client.contract("SaeAnchor", manifest.anchor)
    if not anchor.functions.verifyInclusion(found.root, leaf_hash(digest), found.proof).call():
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"root 0x{found.root.hex()} is not anchored on-chain or the proof fails there")
    batch_block = anchor.functions.batchOf(found.root).call()[0]
    receipt = client.w3.eth.get_transaction_receipt(found.tx_hash)
    events = anchor.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
    if receipt.blockNumber != batch_block or to_checksum_address(receipt.to) != to_checksum_address(manifest.anchor) \
            or not any(e["args"]["root"] == found.root for e in events):
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"transaction {found.tx_hash} does not anchor root 0x{found.root.hex()}")
    t = time.time() if now is None else now
    expired = typ == SAE_TYP and claims["exp"] <= t
    return VerifiedAnchor(claims, digest.hex(), found.root.hex(), batch_block, found.tx_hash, expired)

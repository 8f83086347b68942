"""`sealgate verify`: signature and claims against the JWKS, then inclusion in an anchored root."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_typing import HexStr
from eth_utils.address import to_checksum_address
from web3.logs import DISCARD

from ext_authz import reasons
from ext_authz.anchoring.merkle import verify_proof
from ext_authz.anchoring.store import AnchorStore
from ext_authz.authz.approvals import check_approval, digest_of
from ext_authz.chain.client import ChainClient
from ext_authz.chain.manifest import Manifest
from ext_authz.envelope.encoding import sae_hash
from ext_authz.envelope.jws import SAE_TYP, verify
from ext_authz.envelope.models import Denial, Sae
from ext_authz.errors import InputRejected, SaeInvalid
from ext_authz.policy.abi import text_id


@dataclass(frozen=True)
class VerifiedAnchor:
    claims: dict[str, Any]
    sae_hash: str
    root: str
    block: int
    tx_hash: str
    expired: bool
    approval: dict[str, Any] | None = None  # the approval's claims, re-checked, when a person approved


def verify_anchored(token: str, jwks: dict[str, Any], manifest: Manifest, store: AnchorStore,
                    typ: str = SAE_TYP, now: float | None = None, issuer: str | None = None) -> VerifiedAnchor:
    """Raises InputRejected (with a reason) unless the token verifies (format version 2, every claim's format,
    `iss` is `issuer` when given) and is anchored on-chain."""
    claims = verify(token, jwks, typ=typ, check_time=False, issuer=issuer)
    (Sae if typ == SAE_TYP else Denial).from_claims(claims)  # every claim's type and format
    chain = claims.get("chain") or {}
    if chain.get("id") != manifest.chain_id or str(chain.get("anchor", "")).lower() != manifest.anchor.lower():
        raise SaeInvalid(reasons.SAE_INVALID, f"token names chain {chain}, this deployment is {manifest.chain_id}/{manifest.anchor}")
    client = ChainClient(manifest.rpc_url)
    approval = _verify_approval(claims, client, manifest) if typ == SAE_TYP and "apr" in claims else None
    digest = sae_hash(token)
    found = store.proof_for(digest)
    if found is None:
        raise InputRejected(reasons.NOT_ANCHORED, "this token's hash was never queued for anchoring by this authorizer")
    if found.status != "anchored":  # 'mined' is not enough: it still lacks its confirmations
        raise InputRejected(reasons.NOT_ANCHORED, f"this token's hash is {found.status}, not yet anchored")
    if found.tx_hash is None:
        raise InputRejected(reasons.NOT_ANCHORED, "this token's batch has no anchoring transaction recorded yet")
    if not verify_proof(found.root, digest, found.proof):
        raise InputRejected(reasons.ANCHOR_MISMATCH, "the stored Merkle proof does not lead to the stored root")
    anchor = client.contract("SaeAnchor", manifest.anchor)
    if not anchor.functions.verifyInclusion(found.root, digest, found.proof).call():
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"root 0x{found.root.hex()} is not anchored on-chain or the proof fails there")
    batch_block = anchor.functions.batchOf(found.root).call()[0]
    receipt = client.w3.eth.get_transaction_receipt(HexStr(found.tx_hash))
    events = anchor.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
    if receipt["blockNumber"] != batch_block or to_checksum_address(receipt["to"]) != to_checksum_address(manifest.anchor) \
            or not any(e["args"]["root"] == found.root for e in events):
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"transaction {found.tx_hash} does not anchor root 0x{found.root.hex()}")
    t = time.time() if now is None else now
    expired = typ == SAE_TYP and claims["exp"] <= t
    return VerifiedAnchor(claims, digest.hex(), found.root.hex(), batch_block, found.tx_hash, expired, approval)


def _verify_approval(claims: dict[str, Any], client: ChainClient, manifest: Manifest) -> dict[str, Any]:
    """The approval inside the SAE: signed by an approver registered at the SAE's policy block,
    valid when the SAE was issued, and for exactly the action the SAE describes."""
    apr, block = claims["apr"], claims["pol"]["block"]
    if not isinstance(apr, dict) or not isinstance(apr.get("tok"), str) or type(block) is not int:
        raise SaeInvalid(reasons.SAE_INVALID, "apr claim must carry the approval token (tok) and pol.block a number")
    registry = client.contract("ApproverRegistry", manifest.approvers)

    def key_at_policy_block(name: str) -> bytes | None:
        key, active = registry.functions.approverKey(text_id(name)).call(block_identifier=block)
        return bytes(key) if active else None

    digest = digest_of(claims["sub"], claims["aud"], claims["act"])  # the claims' formats were checked
    approval = check_approval(apr["tok"], key_at_policy_block, claims["sub"], digest, claims["iat"])
    if (approval["iss"], approval["jti"], approval["req"]) != (apr.get("by"), apr.get("jti"), apr.get("req")):
        raise InputRejected(reasons.APPROVAL_MISMATCH, "the apr claim does not describe the approval it carries")
    return approval

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
from ext_authz.chain.keys import KeyRecord, SigningKeys
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
    key: KeyRecord | None = None  # the signing key as the SigningKeyRegistry holds it at the token's block


def unverified_kid_and_block(token: str) -> tuple[str, int | None]:
    """The header's kid and the payload's pol.block, read before verification only to pick which key to fetch."""
    import base64
    import json

    try:
        header_b64, payload_b64, _sig = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
        kid = header["kid"]
        block = (payload.get("pol") or {}).get("block")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SaeInvalid(reasons.SAE_INVALID, "not a JWS compact token with a kid") from e
    if not isinstance(kid, str) or (block is not None and type(block) is not int):
        raise SaeInvalid(reasons.SAE_INVALID, "kid must be a string and pol.block a number")
    return kid, block


def verify_anchored(token: str, jwks: dict[str, Any] | None, manifest: Manifest, store: AnchorStore,
                    typ: str = SAE_TYP, now: float | None = None, issuer: str | None = None) -> VerifiedAnchor:
    """Raises InputRejected (with a reason) unless the token verifies (format version 2, every claim's format,
    `iss` is `issuer` when given) and is anchored on-chain. With `jwks` None the key comes from the chain's
    SigningKeyRegistry; either way, when the manifest names a registry, the key must be registered at the
    token's block (pol.block, else the anchoring block), its window must cover `iat`, and it must not be
    revoked by the block that anchored the token."""
    client = ChainClient(manifest.rpc_url)
    keys = SigningKeys(client, manifest.signing_keys) if manifest.signing_keys else None
    kid, pol_block = unverified_kid_and_block(token)
    if jwks is None:
        if keys is None:
            raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED, "no JWKS given and the manifest names no SigningKeyRegistry")
        rec = keys.record(kid, pol_block if pol_block is not None else "latest")
        if rec is None:
            raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED,
                                f"key {kid} is not in the SigningKeyRegistry {manifest.signing_keys} at block {pol_block}")
        jwks = {"keys": [rec.jwk]}
    claims = verify(token, jwks, typ=typ, check_time=False, issuer=issuer)
    (Sae if typ == SAE_TYP else Denial).from_claims(claims)  # every claim's type and format
    chain = claims.get("chain") or {}
    if chain.get("id") != manifest.chain_id or str(chain.get("anchor", "")).lower() != manifest.anchor.lower():
        raise SaeInvalid(reasons.SAE_INVALID, f"token names chain {chain}, this deployment is {manifest.chain_id}/{manifest.anchor}")
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
    key = None
    if keys is not None:
        key_block = claims["pol"].get("block", batch_block)
        key = keys.check(kid, claims["iat"], key_block, batch_block)
    t = time.time() if now is None else now
    expired = typ == SAE_TYP and claims["exp"] <= t
    return VerifiedAnchor(claims, digest.hex(), found.root.hex(), batch_block, found.tx_hash, expired, approval, key)


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

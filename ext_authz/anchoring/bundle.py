"""Evidence bundles: everything needed to check a set of SAEs and denials without the operator's database.

A bundle is one canonical JSON document (sorted keys, no spaces, ASCII; any other spelling is refused, so a
changed byte never passes as formatting). Per token it carries the token, its anchored value and its
OpenZeppelin-format inclusion proof; per anchoring transaction every receipt of its block (they rebuild the
header's receiptsRoot, which binds the `BatchAnchored` log to the header) and, for root-only batches, the raw
signed transaction (its hash and calldata are checked offline; a leaves-mode transaction is left out because
its calldata holds the other values of the batch); per block the full header, whose hash is recomputed from
its fields; the signing keys
as the SigningKeyRegistry held them at each token's block; the policy address and block; the approvers'
keys. Nothing about other decisions: a proof's siblings are hashes of hashes.

Offline (`verify_bundle(doc)`) every token's signature, claims, key window, value, proof, receipts root and
log, transaction and header hash are checked against each other. What offline cannot show is that those headers
are the chain's: `verify_bundle(doc, client)` (`sealgate verify --bundle F --rpc URL`) also compares every
header hash, receipt, root's on-chain batch and key record with the chain.
"""

from __future__ import annotations

import json
from typing import Any

import rlp
from eth_typing import HexStr
from eth_utils import keccak, to_checksum_address
from web3 import Web3

from ext_authz import reasons
from ext_authz.anchoring.merkle import leaf_hash, verify_proof
from ext_authz.anchoring.proofs import LEAF_ENCODING, PROOF_FORMAT, parse_value
from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.artifacts import artifact
from ext_authz.chain.client import ChainClient
from ext_authz.chain.keys import KeyRecord, SigningKeys, jwk_of, kid_bytes
from ext_authz.chain.manifest import Manifest
from ext_authz.envelope.encoding import sae_hash
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, verify
from ext_authz.envelope.models import Denial, Sae
from ext_authz.errors import InputRejected

BUNDLE_FORMAT = "sealgate-evidence-bundle/1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
# header fields in RLP order (London .. Prague); a block has a prefix of the optional tail
HEADER_FIELDS = ("parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom",
                 "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData", "mixHash", "nonce")
HEADER_OPTIONAL = ("baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot",
                   "requestsHash")
INT_FIELDS = {"difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed", "excessBlobGas"}
BATCH_ANCHORED = "0x" + keccak(text="BatchAnchored(uint256,bytes32,uint64,uint64,uint64,bool)").hex()


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return Web3.to_hex(value)


def _bad(message: str) -> InputRejected:
    return InputRejected(reasons.BUNDLE_INVALID, message)


# ------------------------------------------------------------------ headers

def header_of(block: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in HEADER_FIELDS + HEADER_OPTIONAL:
        if name not in block:
            if name in HEADER_OPTIONAL:
                break
            raise _bad(f"block {block.get('number')} has no {name}")
        v = block[name]
        out[name] = int(v) if name in INT_FIELDS else _hex(v) if not isinstance(v, str) else v.lower()
    return out


def header_hash(header: dict[str, Any]) -> str:
    """keccak256 of the RLP of the header's fields, which every Ethereum block hash is."""
    items: list[Any] = []
    names = list(HEADER_FIELDS)
    for name in HEADER_OPTIONAL:
        if name not in header:
            break
        names.append(name)
    if set(header) != set(names):
        raise _bad(f"header fields {sorted(set(header) ^ set(names))} out of place")
    for name in names:
        v = header[name]
        if name in INT_FIELDS:
            if type(v) is not int or v < 0:
                raise _bad(f"header {name} must be a non-negative integer")
            items.append(v)
        else:
            if not isinstance(v, str) or not v.startswith("0x"):
                raise _bad(f"header {name} must be 0x-hex")
            items.append(bytes.fromhex(v[2:]))
    return "0x" + keccak(rlp.encode(items)).hex()


# ------------------------------------------------------------------ export

def build_bundle(tokens: list[str], store: AnchorStore, client: ChainClient, manifest: Manifest) -> dict[str, Any]:
    """The bundle of `tokens` (SAEs and denials, as the authorizer issued them), each anchored and confirmed."""
    anchor = client.contract("SaeAnchor", manifest.anchor)
    keys = SigningKeys(client, manifest.signing_keys) if manifest.signing_keys else None
    approvers = client.contract("ApproverRegistry", manifest.approvers)
    records, txs, headers, key_records, approver_keys = [], {}, {}, {}, {}
    for token in tokens:
        value = sae_hash(token)
        found = store.proof_for(value)
        if found is None or found.status != "anchored" or found.tx_hash is None or found.block is None:
            raise InputRejected(reasons.NOT_ANCHORED, f"value 0x{value.hex()} is {found.status if found else 'unknown'}, "
                                                      "not anchored: nothing to export yet")
        claims = json.loads(_b64(token.split(".")[1]))
        header = json.loads(_b64(token.split(".")[0]))
        pol_block = (claims.get("pol") or {}).get("block", found.block)
        records.append({"kind": "denial" if header.get("typ") == DENIAL_TYP else "sae", "token": token,
                        "proof": {"format": PROOF_FORMAT, "value": "0x" + value.hex(), "leafEncoding": LEAF_ENCODING,
                                  "leaf": "0x" + leaf_hash(value).hex(), "root": "0x" + found.root.hex(),
                                  "proof": ["0x" + p.hex() for p in found.proof]},
                        "txHash": found.tx_hash, "keyBlock": pol_block})
        if found.tx_hash not in txs:
            receipt = client.w3.eth.get_transaction_receipt(HexStr(found.tx_hash))
            logs = [lg for lg in receipt["logs"] if to_checksum_address(lg["address"]) == anchor.address
                    and _hex(lg["topics"][0]) == BATCH_ANCHORED and bytes(lg["topics"][2]) == found.root]
            tx = client.w3.eth.get_transaction(HexStr(found.tx_hash))
            if not logs:
                raise InputRejected(reasons.ANCHOR_MISMATCH, f"tx {found.tx_hash} has no BatchAnchored log of its root")
            block_txs = client.w3.eth.get_block(int(receipt["blockNumber"]))["transactions"]
            entry: dict[str, Any] = {
                "blockNumber": int(receipt["blockNumber"]), "blockHash": _hex(receipt["blockHash"]),
                "transactionHash": _hex(receipt["transactionHash"]), "index": int(receipt["transactionIndex"]),
                # every receipt of the block: the verifier rebuilds the header's receiptsRoot from them
                "receipts": [_receipt_json(client.w3.eth.get_transaction_receipt(HexStr(_hex(h)))) for h in block_txs]}
            if not anchor.decode_function_input(tx["input"])[0].fn_name == "anchorWithLeaves":
                entry["raw"] = _hex(client.w3.eth.get_raw_transaction(HexStr(found.tx_hash)))
            txs[found.tx_hash] = entry
            number = int(receipt["blockNumber"])
            headers[str(number)] = header_of(client.w3.eth.get_block(number))
        if keys is not None and header.get("kid"):
            rec = keys.record(header["kid"], pol_block)
            if rec is not None:
                key_records[f"{header['kid']}@{pol_block}"] = rec.to_json()
        apr = claims.get("apr")
        if isinstance(apr, dict) and isinstance(apr.get("by"), str):
            from ext_authz.envelope.encoding import b64url
            from ext_authz.policy.abi import text_id

            key, active = approvers.functions.approverKey(text_id(apr["by"])).call(block_identifier=pol_block)
            approver_keys[f"{apr['by']}@{pol_block}"] = {"name": apr["by"], "x": b64url(bytes(key)), "active": bool(active)}
    return {"format": BUNDLE_FORMAT,
            "chain": {"id": manifest.chain_id, "anchor": manifest.anchor},
            "records": records, "transactions": txs, "headers": headers, "keys": key_records, "approvers": approver_keys}


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# ------------------------------------------------------------------ verification

def load_bundle(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise _bad(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(f"not a JSON bundle: {e}") from e
    if canonical(doc) != data.rstrip(b"\n") or data.count(b"\n") > 1:
        raise _bad("the bundle is not in its canonical form (sorted keys, no spaces): changed after export")
    return doc


def verify_bundle(doc: dict[str, Any], client: ChainClient | None = None, manifest: Manifest | None = None
                  ) -> list[dict[str, Any]]:
    """Checks every record; returns the verified claims per record. Raises InputRejected on the first failure.
    With `client` (and the deployment's `manifest` for its registries) the chain is compared too."""
    if client is not None and manifest is None:
        raise _bad("checking a bundle against the chain needs the deployment's manifest (its registries)")
    try:
        return _verify(doc, client, manifest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        if isinstance(e, InputRejected):
            raise
        raise _bad(f"malformed bundle: {type(e).__name__}: {e}") from e


def _verify(doc: dict[str, Any], client: ChainClient | None, manifest: Manifest | None) -> list[dict[str, Any]]:
    if doc.get("format") != BUNDLE_FORMAT:
        raise _bad(f"not a {BUNDLE_FORMAT} document")
    chain = doc["chain"]
    anchor_address = to_checksum_address(chain["anchor"])
    abi = client.contract("SaeAnchor", anchor_address) if client else Web3().eth.contract(abi=artifact("SaeAnchor")["abi"])
    for number, header in doc["headers"].items():
        if str(header["number"]) != number:
            raise _bad(f"header {number} carries number {header['number']}")
    used_txs: set[str] = set()
    used_headers: set[str] = set()
    used_keys: set[str] = set()
    used_approvers: set[str] = set()
    out = []
    for rec in doc["records"]:
        token, proof = rec["token"], rec["proof"]
        typ = DENIAL_TYP if rec["kind"] == "denial" else SAE_TYP
        if rec["kind"] not in ("sae", "denial"):
            raise _bad(f"record kind {rec['kind']!r}")
        kid = json.loads(_b64(token.split(".")[0]))["kid"]
        key_id = f"{kid}@{rec['keyBlock']}"
        key = doc["keys"].get(key_id)
        if key is None:
            raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED, f"the bundle holds no registry record of key {kid}")
        used_keys.add(key_id)
        record = _key_record(key, kid)
        claims = verify(token, {"keys": [record.jwk]}, typ=typ, check_time=False)
        (Sae if typ == SAE_TYP else Denial).from_claims(claims)
        if claims["chain"]["id"] != chain["id"] or str(claims["chain"]["anchor"]).lower() != anchor_address.lower():
            raise _bad("a token names another chain or anchor than the bundle")
        if claims["pol"].get("block", tx_block(doc, rec)) != rec["keyBlock"]:
            raise _bad("the key was looked up at another block than the token's pol.block (or its anchoring block)")
        if record.revoked_at != 0 or not record.covers(claims["iat"]):
            raise InputRejected(reasons.SIGNING_KEY_REVOKED, f"key {kid} was not valid at iat {claims['iat']}")
        value = sae_hash(token)
        if parse_value(proof["value"]) != value or proof["format"] != PROOF_FORMAT or proof["leafEncoding"] != LEAF_ENCODING:
            raise _bad("the proof is not of this token's anchored value")
        if parse_value(proof["leaf"]) != leaf_hash(value):
            raise _bad("the proof's leaf is not the leaf of the value")
        root = parse_value(proof["root"])
        path = [parse_value(p) for p in proof["proof"]]
        if not verify_proof(root, value, path):
            raise InputRejected(reasons.ANCHOR_MISMATCH, "the Merkle proof does not lead from the value to its root")
        tx = doc["transactions"][rec["txHash"]]
        used_txs.add(rec["txHash"])
        block = int(tx["blockNumber"])
        header = doc["headers"][str(block)]
        used_headers.add(str(block))
        _check_tx(tx, rec["txHash"], root, anchor_address, abi, header)
        if header_hash(header) != tx["blockHash"]:
            raise InputRejected(reasons.ANCHOR_MISMATCH, f"header {block} does not hash to the receipt's block hash")
        approval = None
        if typ == SAE_TYP and "apr" in claims:
            approval = _check_approval(doc, claims, rec["keyBlock"], used_approvers)
        if client is not None and manifest is not None:
            _check_chain(client, manifest, abi, root, value, path, tx, block, chain, kid, rec["keyBlock"], record,
                         claims, doc)
        out.append({"claims": claims, "value": "0x" + value.hex(), "root": "0x" + root.hex(), "block": block,
                    "txHash": rec["txHash"], "key": kid, "approval": approval})
    for name, table, used in (("transactions", doc["transactions"], used_txs), ("headers", doc["headers"], used_headers),
                              ("keys", doc["keys"], used_keys), ("approvers", doc["approvers"], used_approvers)):
        if set(table) != used:
            raise _bad(f"{name} {sorted(set(table) - used)} belong to no record")
    if set(doc) != {"format", "chain", "records", "transactions", "headers", "keys", "approvers"}:
        raise _bad("unknown top-level fields")
    return out


def _key_record(key: dict[str, Any], kid: str) -> KeyRecord:
    if key["kid"] != kid:
        raise _bad(f"key record {key['kid']} filed under {kid}")
    jwk = key["jwk"]
    public = _b64(jwk["x"]) + (_b64(jwk["y"]) if "y" in jwk else b"")
    rebuilt = jwk_of(kid_bytes(kid), key["alg"], public)  # the thumbprint must be the kid
    if rebuilt != jwk:
        raise _bad(f"key record {kid} is not the registry's form of its key")
    return KeyRecord(kid, key["alg"], key["validFrom"], key["validUntil"], key["revokedAt"], rebuilt)


def _receipt_json(r: Any) -> dict[str, Any]:
    return {"type": int(r["type"]), "status": int(r["status"]), "cumulativeGasUsed": int(r["cumulativeGasUsed"]),
            "logsBloom": _hex(r["logsBloom"]),
            "logs": [{"address": to_checksum_address(lg["address"]), "topics": [_hex(t) for t in lg["topics"]],
                      "data": _hex(lg["data"])} for lg in r["logs"]]}


def _check_tx(tx: dict[str, Any], tx_hash: str, root: bytes, anchor: str, abi: Any, header: dict[str, Any]) -> int:
    from ext_authz.anchoring.receipts_trie import encode_receipt, trie_root

    if tx["transactionHash"] != tx_hash:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"transaction {tx_hash} is filed under another hash")
    receipts = tx["receipts"]
    if "0x" + trie_root([encode_receipt(r) for r in receipts]).hex() != header["receiptsRoot"]:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"the receipts of block {tx['blockNumber']} do not rebuild its "
                                                     "receiptsRoot")
    receipt = receipts[tx["index"]]
    logs = [lg for lg in receipt["logs"] if to_checksum_address(lg["address"]) == anchor and lg["topics"]
            and lg["topics"][0] == BATCH_ANCHORED and parse_value(lg["topics"][2]) == root]
    if receipt["status"] != 1 or len(logs) != 1:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"transaction {tx_hash} has no BatchAnchored log of root 0x{root.hex()}")
    data = bytes.fromhex(logs[0]["data"][2:])
    count, first, last, with_leaves = (int.from_bytes(data[i:i + 32], "big") for i in range(0, 128, 32))
    if len(data) != 128 or last - first + 1 != count or with_leaves != (0 if "raw" in tx else 1):
        raise _bad(f"transaction {tx_hash}: its BatchAnchored range does not hold together")
    if "raw" in tx:
        raw = bytes.fromhex(tx["raw"][2:])
        if "0x" + keccak(raw).hex() != tx_hash:
            raise InputRejected(reasons.ANCHOR_MISMATCH, f"the raw transaction does not hash to {tx_hash}")
        fn, params = abi.decode_function_input(_calldata(raw))
        if fn.fn_name != "anchor" or bytes(params["root"]) != root or params["leafCount"] != count:
            raise InputRejected(reasons.ANCHOR_MISMATCH, f"transaction {tx_hash} does not anchor root 0x{root.hex()}")
    return int(tx["blockNumber"])


def _calldata(raw: bytes) -> bytes:
    """The data field of a typed (EIP-2718) or legacy signed transaction."""
    if raw and raw[0] < 0x7F:  # typed: type byte, then the RLP list
        fields = rlp.decode(raw[1:])
        index = {1: 6, 2: 7, 3: 7, 4: 7}.get(raw[0])
        if index is None:
            raise _bad(f"transaction type {raw[0]} is not one this verifier reads")
        return bytes(fields[index])
    return bytes(rlp.decode(raw)[5])


def _check_approval(doc: dict[str, Any], claims: dict[str, Any], block: int, used: set[str]) -> dict[str, Any]:
    import base64

    from ext_authz.authz.approvals import check_approval, digest_of

    apr = claims["apr"]
    entry_id = f"{apr['by']}@{block}"
    entry = doc["approvers"].get(entry_id)
    if entry is None or entry["name"] != apr["by"]:
        raise InputRejected(reasons.APPROVAL_INVALID, f"the bundle holds no key of approver {apr['by']} at block {block}")
    used.add(entry_id)

    def key_of(name: str) -> bytes | None:
        return base64.urlsafe_b64decode(entry["x"] + "=") if name == apr["by"] and entry["active"] else None

    approval = check_approval(apr["tok"], key_of, claims["sub"], digest_of(claims["sub"], claims["aud"], claims["act"]),
                              claims["iat"])
    if (approval["iss"], approval["jti"], approval["req"]) != (apr.get("by"), apr.get("jti"), apr.get("req")):
        raise InputRejected(reasons.APPROVAL_MISMATCH, "the apr claim does not describe the approval it carries")
    return approval


def tx_block(doc: dict[str, Any], rec: dict[str, Any]) -> int:
    return int(doc["transactions"][rec["txHash"]]["blockNumber"])


def _check_chain(client: ChainClient, manifest: Manifest, anchor: Any, root: bytes, value: bytes, path: list[bytes],
                 tx: dict[str, Any], block: int, chain: dict[str, Any], kid: str, key_block: int, record: KeyRecord,
                 claims: dict[str, Any], doc: dict[str, Any]) -> None:
    """--rpc: the headers are the chain's, the root is anchored there as the receipt says, the key record is the
    registry's at the token's block and was not revoked by the anchoring block, the approver's key is the registry's."""
    if client.w3.eth.chain_id != chain["id"] or manifest.chain_id != chain["id"] \
            or manifest.anchor.lower() != chain["anchor"].lower():
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"the RPC serves chain {client.w3.eth.chain_id}, the bundle {chain['id']}")
    on_chain = client.w3.eth.get_block(block)
    if _hex(on_chain["hash"]) != tx["blockHash"]:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"block {block} on the chain is not the bundle's (reorged or forged)")
    receipt = client.w3.eth.get_transaction_receipt(tx["transactionHash"])
    if _hex(receipt["blockHash"]) != tx["blockHash"] or int(receipt["status"]) != 1 \
            or int(receipt["transactionIndex"]) != tx["index"]:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"the chain's receipt of {tx['transactionHash']} differs")
    if not anchor.functions.verifyInclusion(root, value, path).call():
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"SaeAnchor does not accept the proof for root 0x{root.hex()}")
    if anchor.functions.batchOf(root).call()[0] != block:
        raise InputRejected(reasons.ANCHOR_MISMATCH, f"root 0x{root.hex()} is anchored in another block on the chain")
    if manifest.signing_keys:
        live = SigningKeys(client, manifest.signing_keys)
        if live.record(kid, key_block) != record:
            raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED, f"key {kid} in the bundle is not the registry's at {key_block}")
        live.check(kid, claims["iat"], key_block, block)
    if "apr" in claims:
        from ext_authz.policy.abi import text_id

        name = claims["apr"]["by"]
        entry = doc["approvers"][f"{name}@{key_block}"]
        approvers = client.contract("ApproverRegistry", manifest.approvers)
        key, active = approvers.functions.approverKey(text_id(name)).call(block_identifier=key_block)
        if (_b64(entry["x"]), entry["active"]) != (bytes(key), bool(active)):
            raise InputRejected(reasons.APPROVAL_INVALID, f"approver {name} in the bundle is not the registry's at {key_block}")

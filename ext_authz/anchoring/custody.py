"""Custody from L2 alone: rebuild the anchored record set from chain data (leaves mode), no operator database.

Reads every `BatchAnchored` event of the anchor contract, decodes the values from the calldata of the
transaction that emitted it (`anchorWithLeaves(root, values)`), rebuilds the StandardMerkleTree and checks it
gives the anchored root and the event's leaf count. Root-only batches are listed without values.
"""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

from ext_authz import reasons
from ext_authz.anchoring.merkle import MerkleTree
from ext_authz.chain.client import ChainClient
from ext_authz.errors import InputRejected


@dataclass(frozen=True)
class RecoveredBatch:
    root: bytes
    first_seq: int
    last_seq: int
    tx_hash: str
    block: int
    values: tuple[bytes, ...] | None  # None: a root-only batch, its values are not on-chain

    def tree(self) -> MerkleTree:
        if self.values is None:
            raise InputRejected(reasons.MERKLE_LEAF_ABSENT, f"batch 0x{self.root.hex()} was anchored root-only")
        return MerkleTree.build(list(self.values))


def recover_batches(client: ChainClient, anchor_address: str, from_block: int = 0,
                    to_block: int | str = "latest") -> list[RecoveredBatch]:
    """Every batch of `anchor_address` in chain order; a leaves-mode batch whose calldata does not rebuild its
    root is refused (ANCHOR_MISMATCH): the chain then holds a root its values do not prove."""
    anchor = client.contract("SaeAnchor", anchor_address)
    out = []
    for ev in anchor.events.BatchAnchored().get_logs(from_block=from_block, to_block=to_block):
        args, tx_hash = ev["args"], Web3.to_hex(ev["transactionHash"])
        values: tuple[bytes, ...] | None = None
        if args["withLeaves"]:
            tx = client.w3.eth.get_transaction(tx_hash)
            fn, params = anchor.decode_function_input(tx["input"])
            if fn.fn_name != "anchorWithLeaves" or params["root"] != args["root"]:
                raise InputRejected(reasons.ANCHOR_MISMATCH, f"tx {tx_hash} does not carry the leaves of its batch")
            values = tuple(bytes(v) for v in params["values"])
            if len(values) != args["leafCount"] or MerkleTree.build(list(values)).root != args["root"]:
                raise InputRejected(reasons.ANCHOR_MISMATCH, f"the values in tx {tx_hash} do not rebuild root "
                                                             f"0x{bytes(args['root']).hex()}")
        out.append(RecoveredBatch(bytes(args["root"]), args["firstSeq"], args["lastSeq"], tx_hash, ev["blockNumber"], values))
    return sorted(out, key=lambda b: b.first_seq)

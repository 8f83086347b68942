"""OpenZeppelin StandardMerkleTree for bytes32 values, as `@openzeppelin/merkle-tree` builds it.

Leaves are keccak256(keccak256(abi.encode(bytes32))), pairs are hashed sorted, leaves
are sorted, the tree is the library's array layout; so a proof from here verifies
with OpenZeppelin `MerkleProof.verify` on-chain. The tests cross-check roots and
proofs against the npm library.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import keccak

from ext_authz import reasons
from ext_authz.errors import InputRejected


def leaf_hash(value: bytes) -> bytes:
    if len(value) != 32:
        raise InputRejected(reasons.MERKLE_INPUT_INVALID, f"leaf value must be 32 bytes, found {len(value)}")
    return keccak(keccak(value))  # abi.encode(bytes32) is the 32 bytes themselves


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class MerkleTree:
    nodes: tuple[bytes, ...]
    leaf_index: dict[bytes, int]  # leaf hash -> node index

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    @classmethod
    def build(cls, values: list[bytes]) -> MerkleTree:
        if not values:
            raise InputRejected(reasons.MERKLE_INPUT_INVALID, "cannot build a tree with no leaves")
        leaves = sorted(leaf_hash(v) for v in values)
        size = 2 * len(leaves) - 1
        nodes: list[bytes] = [b""] * size
        for i, leaf in enumerate(leaves):
            nodes[size - 1 - i] = leaf
        for i in range(size - 1 - len(leaves), -1, -1):
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
        return cls(tuple(nodes), {leaf: size - 1 - i for i, leaf in enumerate(leaves)})

    def proof(self, value: bytes) -> list[bytes]:
        index = self.leaf_index.get(leaf_hash(value))
        if index is None:
            raise InputRejected(reasons.MERKLE_LEAF_ABSENT, "value is not a leaf of this tree")
        proof = []
        while index > 0:
            sibling = index - 1 if index % 2 == 0 else index + 1
            proof.append(self.nodes[sibling])
            index = (index - 1) // 2
        return proof


def verify_proof(root: bytes, value: bytes, proof: list[bytes]) -> bool:
    node = leaf_hash(value)
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root

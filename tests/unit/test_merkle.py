import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ext_authz.anchoring.merkle import MerkleTree, verify_proof
from ext_authz.errors import InputRejected

ROOT = Path(__file__).resolve().parents[2]


def values(n):
    return [hashlib.sha256(f"sae-{i}".encode()).digest() for i in range(n)]


def oz_reference(vals):
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules/@openzeppelin/merkle-tree").exists():
        pytest.fail("node and @openzeppelin/merkle-tree are required (make install)")
    out = subprocess.run([node, str(Path(__file__).with_name("oz_merkle.cjs"))], cwd=ROOT,
                         input=json.dumps(["0x" + v.hex() for v in vals]), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 64, 100])
def test_root_and_proofs_match_openzeppelin_library(n):
    vals = values(n)
    tree = MerkleTree.build(vals)
    ref = oz_reference(vals)
    assert "0x" + tree.root.hex() == ref["root"]
    for v, ref_proof in zip(vals, ref["proofs"], strict=True):
        proof = tree.proof(v)
        assert ["0x" + p.hex() for p in proof] == ref_proof
        assert verify_proof(tree.root, v, proof)


def test_proof_fails_for_other_value_and_tampered_sibling():
    vals = values(9)
    tree = MerkleTree.build(vals)
    proof = tree.proof(vals[3])
    assert not verify_proof(tree.root, vals[4], proof)
    bad = list(proof)
    bad[0] = bytes(32)
    assert not verify_proof(tree.root, vals[3], bad)


def test_absent_leaf_and_empty_tree_rejected():
    tree = MerkleTree.build(values(3))
    with pytest.raises(InputRejected):
        tree.proof(bytes(32))
    with pytest.raises(InputRejected):
        MerkleTree.build([])
    with pytest.raises(InputRejected):
        MerkleTree.build([b"short"])



@pytest.mark.parametrize("path", sorted((ROOT / "tests/vectors").glob("merkle_*_lea*.json")), ids=lambda p: p.stem)
def test_merkle_vectors_match_openzeppelin_library(path):
    vec = json.loads(path.read_text())
    ref = oz_reference([bytes.fromhex(v[2:]) for v in vec["values"]])
    assert (vec["root"], vec["proofs"]) == (ref["root"], ref["proofs"])


def test_hand_encoded_anchor_calldata_is_the_abi_encoding():
    from web3 import Web3

    from ext_authz.anchoring.anchorer import ANCHOR_SELECTOR, anchor_with_leaves_calldata
    from ext_authz.chain.artifacts import artifact

    c = Web3().eth.contract(abi=artifact("SaeAnchor")["abi"])
    vals = values(5)
    root = MerkleTree.build(vals).root
    assert anchor_with_leaves_calldata(root, vals) == bytes.fromhex(
        c.encode_abi("anchorWithLeaves", [root, vals])[2:])
    assert ANCHOR_SELECTOR + root + (5).to_bytes(32, "big") == bytes.fromhex(c.encode_abi("anchor", [root, 5])[2:])

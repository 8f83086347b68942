"""Evidence bundles verified offline by our tool and independently (OpenZeppelin merkle-tree + PyJWT), refused
when any checked byte changes, checked against the chain with --rpc, and silent about other decisions."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from eth_account import Account

from ext_authz.anchoring.anchorer import Anchorer, AnchoringPolicy
from ext_authz.anchoring.bundle import build_bundle, canonical, load_bundle, verify_bundle
from ext_authz.anchoring.queue import LeafQueue
from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.envelope.encoding import sae_hash
from ext_authz.errors import InputRejected

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VECTOR = json.loads((ROOT / "tests/vectors/sae_valid.json").read_text())["claims"]


def issue(stack, jti):
    from ext_authz.envelope.jws import EnvelopeEncoder

    w3 = stack.chain.w3
    block = w3.eth.block_number
    iat = int(w3.eth.get_block(block)["timestamp"])
    claims = {**VECTOR, "jti": jti, "iat": iat, "nbf": iat, "exp": iat + 60,
              "chain": {"id": stack.manifest.chain_id, "anchor": stack.manifest.anchor},
              "pol": {**VECTOR["pol"], "block": block}}
    return EnvelopeEncoder(stack.sae_signer()).encode(claims)


@pytest.fixture(scope="module")
def evidence(chain_stack, tmp_path_factory):
    """Ten SAEs in batches of four (root mode) and three more in a leaves-mode batch; a bundle of three of them."""
    tmp = tmp_path_factory.mktemp("bundle")
    db = tmp / "anchor.sqlite3"
    tokens = [issue(chain_stack, f"b-{i}") for i in range(13)]
    q = LeafQueue(AnchorStore(db))
    for t in tokens[:10]:
        q.enqueue(sae_hash(t), "sae", t[-10:])
    q.flush()
    anchorer = Anchorer(AnchorStore(db), chain_stack.chain, chain_stack.manifest.anchor,
                        Account.from_key(DEV_KEYS["anchorer"]), batch_max_leaves=4)
    anchorer.anchor_pending()
    for t in tokens[10:]:
        q.enqueue(sae_hash(t), "sae", t[-10:])
    q.flush()
    Anchorer(AnchorStore(db), chain_stack.chain, chain_stack.manifest.anchor, Account.from_key(DEV_KEYS["anchorer"]),
             batch_max_leaves=4, policy=AnchoringPolicy(mode="leaves")).anchor_pending()
    chosen = [tokens[1], tokens[6], tokens[11]]  # two root-mode batches and the leaves-mode one
    doc = build_bundle(chosen, AnchorStore(db), chain_stack.chain, chain_stack.manifest)
    path = tmp / "bundle.json"
    path.write_bytes(canonical(doc) + b"\n")
    return {"tokens": tokens, "chosen": chosen, "path": path, "db": db}


def test_bundle_verifies_offline_with_no_operator_database(chain_stack, evidence):
    evidence["db"].rename(evidence["db"].with_suffix(".gone"))  # nothing of the operator's store is needed
    try:
        results = verify_bundle(load_bundle(evidence["path"].read_bytes()))
    finally:
        evidence["db"].with_suffix(".gone").rename(evidence["db"])
    assert [r["claims"]["jti"] for r in results] == ["b-1", "b-6", "b-11"]
    assert all(r["key"] == chain_stack.sae_signer().kid for r in results)


def test_bundle_verifies_against_the_chain_with_rpc(chain_stack, evidence):
    results = verify_bundle(load_bundle(evidence["path"].read_bytes()), chain_stack.chain, chain_stack.manifest)
    assert len(results) == 3


def test_bundle_verifies_independently_with_openzeppelin_merkle_tree_and_pyjwt(chain_stack, evidence):
    doc = json.loads(evidence["path"].read_text())
    node = shutil.which("node")
    assert node, "node is required (make install)"
    out = subprocess.run([node, str(Path(__file__).with_name("oz_bundle.cjs"))], cwd=ROOT, input=evidence["path"].read_text(),
                         capture_output=True, text=True, check=True, timeout=60)
    checks = json.loads(out.stdout)
    assert [c["verified"] and c["sameValue"] for c in checks] == [True, True, True]
    assert [c["leaf"] for c in checks] == [r["proof"]["leaf"] for r in doc["records"]]
    for rec in doc["records"]:
        header = jwt.get_unverified_header(rec["token"])
        key = doc["keys"][f"{header['kid']}@{rec['keyBlock']}"]
        claims = jwt.decode(rec["token"], jwt.PyJWK(key["jwk"]).key, algorithms=["EdDSA"],
                            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False})
        assert claims["pol"]["block"] == rec["keyBlock"]
        assert key["revokedAt"] == 0 and key["validFrom"] <= claims["iat"] < key["validUntil"]


def _flip(data: bytes, index: int) -> bytes:
    """Changes one byte to another valid character of its kind (a hex digit stays a hex digit, a base64url
    character stays base64url), so the change is caught by a check, not by a parser."""
    c = chr(data[index])
    if c in "0123456789abcdef":
        repl = "0123456789abcdef"[int(c, 16) ^ 1]
    elif c.isalnum():
        repl = "B" if c == "A" else "A"
    else:
        repl = "x"
    return data[:index] + repl.encode() + data[index + 1:]


def _positions(data: bytes, doc):
    """Byte offsets inside each part of the bundle that a verifier must bind."""
    text = data.decode()
    rec = doc["records"][0]
    tx = doc["transactions"][rec["txHash"]]
    header = doc["headers"][str(tx["blockNumber"])]
    key = next(iter(doc["keys"].values()))
    receipt = tx["receipts"][tx["index"]]
    ours = next(lg for lg in receipt["logs"] if lg["topics"][2] == rec["proof"]["root"])
    spots = {
        "token header": text.index(rec["token"]) + 5,
        "token payload": text.index(rec["token"]) + len(rec["token"].split(".")[0]) + 20,
        "token signature": text.index(rec["token"]) + len(rec["token"]) - 5,
        "proof value": text.index(rec["proof"]["value"]) + 10,
        "proof sibling": text.index(rec["proof"]["proof"][0]) + 10,
        "proof root": text.index('"root":"' + rec["proof"]["root"]) + 20,
        "proof leaf": text.index(rec["proof"]["leaf"]) + 10,
        "tx raw": text.index(tx["raw"]) + 40,
        "receipt block hash": text.index('"blockHash":"' + tx["blockHash"]) + 20,
        "receipt log data": text.index(ours["data"]) + 60,
        "receipt log topic": text.index(ours["topics"][2]) + 10,
        "receipt bloom": text.index(receipt["logsBloom"]) + 30,
        "receipt gas": text.index('"cumulativeGasUsed":' + str(receipt["cumulativeGasUsed"])) + 21,
        "receipt index": text.index('"index":' + str(tx["index"])) + 8,
        "header state root": text.index('"stateRoot":"' + header["stateRoot"]) + 20,
        "header timestamp": text.index('"timestamp":' + str(header["timestamp"])) + 13,
        "key jwk x": text.index(key["jwk"]["x"]) + 5,
        "key block": text.index('"keyBlock":') + 11,
        "format": text.index(doc["format"]) + 3,
        "chain anchor": text.index(doc["chain"]["anchor"]) + 12,
        "structure": text.index('"records":') + 1,
    }
    return spots


def test_flipping_any_bound_byte_of_the_bundle_fails_verification(evidence):
    data = evidence["path"].read_bytes()
    doc = json.loads(data)
    failures = {}
    for name, index in _positions(data, doc).items():
        with pytest.raises(InputRejected) as err:
            verify_bundle(load_bundle(_flip(data, index)))
        failures[name] = err.value.reason
    assert len(failures) == 21
    with pytest.raises(InputRejected):  # a reformatted bundle is refused as well: no byte is "just formatting"
        load_bundle(json.dumps(doc, indent=1).encode())


def test_a_forged_key_window_passes_offline_only_to_fail_against_the_chain(chain_stack, evidence):
    """What offline cannot know (the registry's windows) --rpc checks."""
    doc = json.loads(evidence["path"].read_text())
    key = next(iter(doc["keys"].values()))
    key["validFrom"] = 1
    verify_bundle(doc)  # offline: the window still covers iat
    with pytest.raises(InputRejected) as err:
        verify_bundle(doc, chain_stack.chain, chain_stack.manifest)
    assert err.value.reason == "SIGNING_KEY_UNREGISTERED"


def test_bundle_reveals_nothing_about_other_decisions(evidence):
    text = evidence["path"].read_text()
    for token in evidence["tokens"]:
        if token in evidence["chosen"]:
            continue
        assert sae_hash(token).hex() not in text  # no other anchored value
        assert json.loads(jwt.api_jws.base64url_decode(token.split(".")[1]))["jti"] + '"' not in text
    doc = json.loads(text)
    leaves_tx = doc["transactions"][doc["records"][2]["txHash"]]
    assert "raw" not in leaves_tx  # its calldata carries the batch's other values


def test_verify_bundle_cli_offline_and_with_rpc(chain_stack, evidence):
    base = [sys.executable, "-m", "ext_authz.cli", "verify", "--bundle", str(evidence["path"])]
    ok = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.count("VALID") == 3, ok.stdout + ok.stderr
    rpc = subprocess.run(base + ["--rpc", chain_stack.rpc_url, "--manifest", str(chain_stack.workdir / "addresses.json")],
                         capture_output=True, text=True, timeout=60)
    assert rpc.returncode == 0 and "checked against the chain" in rpc.stdout, rpc.stdout + rpc.stderr
    bad = evidence["path"].with_name("bad.json")
    bad.write_bytes(_flip(evidence["path"].read_bytes(), 200))
    out = subprocess.run(base[:-1] + [str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout.startswith("INVALID"), out.stdout + out.stderr


def test_receipts_trie_rebuilds_anvils_receipts_and_transactions_roots_for_a_full_block(chain_stack):
    """140 transactions in one block (keys rlp(0) .. rlp(139) cross the one-byte boundary at 128)."""
    from web3.types import RPCEndpoint

    from ext_authz.anchoring.bundle import _receipt_json
    from ext_authz.anchoring.receipts_trie import encode_receipt, trie_root

    w3 = chain_stack.chain.w3
    make = w3.provider.make_request
    make(RPCEndpoint("evm_setAutomine"), [False])
    try:
        accounts = w3.eth.accounts
        for i in range(140):
            w3.eth.send_transaction({"from": accounts[i % 5], "to": accounts[9], "value": i + 1})
        make(RPCEndpoint("evm_mine"), [])
    finally:
        make(RPCEndpoint("evm_setAutomine"), [True])
    block = w3.eth.get_block("latest")
    assert len(block["transactions"]) == 140
    receipts = [encode_receipt(_receipt_json(w3.eth.get_transaction_receipt(h))) for h in block["transactions"]]
    assert trie_root(receipts) == bytes(block["receiptsRoot"])
    assert trie_root([bytes(w3.eth.get_raw_transaction(h)) for h in block["transactions"]]) == bytes(block["transactionsRoot"])
    assert trie_root(receipts[:-1]) != bytes(block["receiptsRoot"])

"""SaeAnchor's invariants and the anchorer against a misbehaving chain, on anvil with the compiled contracts.

Named after the attack or failure: a front-run root, an inner node passed off as a leaf, caller-chosen
(overlapping, backwards) ranges, a stuck transaction, a reorg that drops a batch.
"""

import re
from pathlib import Path

import pytest
from eth_account import Account
from web3.exceptions import ContractCustomError
from web3.types import RPCEndpoint

from ext_authz.anchoring.anchorer import Anchorer, AnchoringPolicy
from ext_authz.anchoring.merkle import MerkleTree, hash_pair, leaf_hash
from ext_authz.anchoring.queue import LeafQueue
from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.dev import DEV_KEYS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def rpc(stack, method, *params):
    out = stack.chain.w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in out, out
    return out.get("result")


def selector(stack, error):
    return "0x" + stack.chain.w3.keccak(text=error)[:4].hex()


def values(tag, n):
    return [bytes([tag, i % 256, i // 256]) + bytes(29) for i in range(n)]


def anchorer_account():
    return Account.from_key(DEV_KEYS["anchorer"])


def batch_events(stack, from_block=0):
    return stack.anchor.events.BatchAnchored().get_logs(from_block=from_block)


def test_overlapping_or_backwards_range_cannot_be_chosen_the_contract_counter_assigns_it(chain_stack):
    """Overlapping or backwards ranges: the caller cannot name a range at all; each batch takes the next ones."""
    a, anchor = anchorer_account(), chain_stack.anchor
    fn = anchor.functions.anchor
    assert [i["name"] for i in fn(bytes(31) + b"\x01", 1).abi["inputs"]] == ["root", "leafCount"]
    start = anchor.functions.nextSeq().call()
    ranges = []
    for n in (3, 1, 5):
        receipt = chain_stack.chain.transact(a, fn(MerkleTree.build(values(0x10 + n, n)).root, n))
        ev = anchor.events.BatchAnchored().process_receipt(receipt)[0]["args"]
        ranges.append((ev["firstSeq"], ev["lastSeq"]))
    assert ranges == [(start, start + 2), (start + 3, start + 3), (start + 4, start + 8)]
    assert anchor.functions.nextSeq().call() == start + 9


def test_front_run_root_cannot_move_its_range_and_honest_reanchor_is_idempotent(chain_stack):
    """An attacker holding the anchorer key anchors the honest batch's root first (or a reorg re-includes it):
    the honest transaction neither reverts nor takes a second range; a different leaf count is refused."""
    a, anchor = anchorer_account(), chain_stack.anchor
    root = MerkleTree.build(values(0x21, 4)).root
    first = chain_stack.chain.transact(a, anchor.functions.anchor(root, 4))
    bound = anchor.functions.batchOf(root).call()
    count, next_seq = anchor.functions.batchCount().call(), anchor.functions.nextSeq().call()
    again = chain_stack.chain.transact(a, anchor.functions.anchor(root, 4))  # the honest one, mined after
    assert again.status == 1 and anchor.events.BatchAnchored().process_receipt(again) == ()
    assert anchor.functions.anchor(root, 4).call({"from": a.address}) == [bound[2], bound[3]]
    assert anchor.functions.batchOf(root).call() == bound and bound[0] == first.blockNumber
    assert (anchor.functions.batchCount().call(), anchor.functions.nextSeq().call()) == (count, next_seq)
    for fn in (anchor.functions.anchor(root, 5), anchor.functions.anchorWithLeaves(root, values(0x21, 3))):
        with pytest.raises(ContractCustomError) as err:
            fn.call({"from": a.address})
        assert str(err.value.data).startswith(selector(chain_stack, "RootConflict(bytes32,uint64,uint64)"))


def test_front_run_by_an_outsider_is_refused(chain_stack):
    outsider = Account.create()
    with pytest.raises(ContractCustomError) as err:
        chain_stack.anchor.functions.anchor(b"\x33" * 32, 1).call({"from": outsider.address})
    assert str(err.value.data).startswith(selector(chain_stack, "AccessControlUnauthorizedAccount(address,bytes32)"))


@pytest.mark.parametrize("args,error", [
    ((b"\x01" * 32, 0), "EmptyBatch()"),
    ((bytes(32), 1), "ZeroRoot()"),
    ((b"\x01" * 32, 16385), "BatchTooLarge(uint256,uint256)"),
])
def test_bad_batches_are_refused(chain_stack, args, error):
    with pytest.raises(ContractCustomError) as err:
        chain_stack.anchor.functions.anchor(*args).call({"from": anchorer_account().address})
    assert str(err.value.data).startswith(selector(chain_stack, error))


def test_inner_node_proof_is_refused(chain_stack):
    """The old contract took a leaf: an inner node with the rest of its path verified as a 'leaf'. Now the
    contract hashes the value into its leaf itself, so only real values prove."""
    vals = values(0x44, 4)
    tree = MerkleTree.build(vals)
    chain_stack.chain.transact(anchorer_account(), chain_stack.anchor.functions.anchor(tree.root, 4))
    # nodes[1] is an inner node; its proof is [nodes[2]]
    inner, sibling = tree.nodes[1], tree.nodes[2]
    assert hash_pair(inner, sibling) == tree.root
    verify = chain_stack.anchor.functions.verifyInclusion
    assert not verify(tree.root, inner, [sibling]).call()
    for v in vals:
        proof = tree.proof(v)
        assert verify(tree.root, v, proof).call()
        assert not verify(tree.root, leaf_hash(v), proof).call()  # a leaf hash is not a value either
    assert chain_stack.anchor.functions.leafHash(vals[0]).call() == leaf_hash(vals[0])
    other = MerkleTree.build(values(0x45, 2))  # a proof against a root never anchored
    assert not verify(other.root, values(0x45, 2)[0], other.proof(values(0x45, 2)[0])).call()


@pytest.mark.parametrize("contract,count", [("SaeAnchor", 7), ("SigningKeyRegistry", 6)])
def test_every_external_function_has_natspec_with_requirements_and_emits(contract, count):
    src = (ROOT / f"contracts/src/{contract}.sol").read_text()
    documented = list(re.finditer(r"((?:[ \t]*///[^\n]*\n)+)[ \t]*function (\w+)\([^)]*\)\s*(external|public)([^{;]*)", src))
    assert len(documented) == count  # every external/public function has a NatSpec block right above it
    for m in documented:
        doc, name, mods = m.group(1), m.group(2), m.group(4)
        assert "@notice" in doc, name
        if "view" not in mods and "pure" not in mods:
            assert "Requirements:" in doc and "Emits" in doc, name
    assert len(re.findall(r"function \w+\(", src)) - len(re.findall(r"function _\w+\(", src)) == count


# ---------------------------------------------------------------- the anchorer against the chain

def _anchorer(stack, db, **policy):
    return Anchorer(AnchorStore(db), stack.chain, stack.manifest.anchor, anchorer_account(), interval_seconds=0.05,
                    batch_max_leaves=4, policy=AnchoringPolicy(**policy))


def _enqueue(db, vals):
    q = LeafQueue(AnchorStore(db))
    for i, v in enumerate(vals):
        q.enqueue(v, "sae", f"d{v.hex()[:8]}{i}")
    q.flush()


def test_anchorer_checks_its_role_at_start(chain_stack, tmp_path):
    assert _anchorer(chain_stack, tmp_path / "a.sqlite3").check_role() is True
    stranger = Anchorer(AnchorStore(tmp_path / "b.sqlite3"), chain_stack.chain, chain_stack.manifest.anchor,
                        Account.create())
    assert stranger.check_role() is False


def test_batch_counts_as_anchored_only_after_n_confirmations(chain_stack, tmp_path):
    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db, confirmations=3)
    vals = values(0x51, 2)
    _enqueue(db, vals)
    assert anchorer.anchor_pending() == 1
    assert anchorer.store.proof_for(vals[0]).status == "mined"  # 1 of 3
    rpc(chain_stack, "evm_mine")
    anchorer.settle()
    assert anchorer.store.proof_for(vals[0]).status == "mined"  # 2 of 3
    rpc(chain_stack, "evm_mine")
    anchorer.settle()
    assert anchorer.store.proof_for(vals[0]).status == "anchored"


def test_stuck_transaction_is_replaced_with_an_eip1559_fee_bump(chain_stack, tmp_path):
    """Mining stops (automine off): the anchorer replaces its tx at the same nonce with higher fees; once
    blocks come again exactly one of them is mined and the batch is anchored once."""
    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db, stuck_seconds=0.5)
    vals = values(0x61, 3)
    _enqueue(db, vals)
    w3 = chain_stack.chain.w3
    count = chain_stack.anchor.functions.batchCount().call()
    nonce = w3.eth.get_transaction_count(anchorer_account().address)
    import threading
    rpc(chain_stack, "evm_setAutomine", False)
    try:
        worker = threading.Thread(target=anchorer.anchor_pending)
        worker.start()
        deadline = __import__("time").monotonic() + 30
        while anchorer.replacements < 2 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.1)
        assert anchorer.replacements >= 2
        pool = rpc(chain_stack, "txpool_content")["pending"]
        ours = pool[next(k for k in pool if k.lower() == anchorer_account().address.lower())]
        assert list(ours) == [str(nonce)]  # replaced, never queued behind
        tip = int(ours[str(nonce)]["maxPriorityFeePerGas"], 16)
    finally:
        rpc(chain_stack, "evm_setAutomine", True)
        rpc(chain_stack, "evm_mine")
    worker.join(timeout=30)
    assert not worker.is_alive()
    proof = anchorer.store.proof_for(vals[0])
    tx = w3.eth.get_transaction(proof.tx_hash)
    # the mined one is a replacement (maybe a later one than we saw in the pool: they keep coming every 0.5 s)
    assert tx["nonce"] == nonce and tx["maxPriorityFeePerGas"] >= tip > 1_000_000_000
    assert chain_stack.anchor.functions.batchCount().call() == count + 1
    assert proof.status == "anchored"


def test_reorg_that_drops_a_batch_re_anchors_it(chain_stack, tmp_path):
    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db, confirmations=2)
    vals = values(0x71, 3)
    _enqueue(db, vals)
    snapshot = rpc(chain_stack, "evm_snapshot")
    assert anchorer.anchor_pending() == 1
    root = anchorer.store.proof_for(vals[0]).root
    mined_block = anchorer.store.proof_for(vals[0]).block
    assert chain_stack.anchor.functions.batchOf(root).call()[0] == mined_block
    assert rpc(chain_stack, "evm_revert", snapshot) is True  # the block holding the batch is gone
    rpc(chain_stack, "evm_mine")
    rpc(chain_stack, "evm_mine")
    assert chain_stack.anchor.functions.batchOf(root).call()[0] == 0
    anchorer.settle()
    assert anchorer.reorged == 1 and anchorer.store.proof_for(vals[0]).status == "pending"
    assert anchorer.anchor_pending() == 1
    rpc(chain_stack, "evm_mine")
    anchorer.settle()
    proof = anchorer.store.proof_for(vals[0])
    assert proof.status == "anchored" and chain_stack.anchor.functions.batchOf(root).call()[0] == proof.block
    assert chain_stack.anchor.functions.verifyInclusion(root, vals[0], proof.proof).call()
    assert sum(1 for e in batch_events(chain_stack) if e["args"]["root"] == root) == 1


def test_leaves_mode_record_set_is_reconstructed_from_chain_alone(chain_stack, tmp_path):
    """The operator's database is gone: every value, its batch, its range and a proof the contract accepts
    come back from the events and the anchoring calldata alone."""
    from ext_authz.anchoring.custody import recover_batches

    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db, mode="leaves")
    vals = values(0x81, 10)
    _enqueue(db, vals)
    start_block = chain_stack.chain.w3.eth.block_number + 1
    assert anchorer.anchor_pending() == 3  # 4 + 4 + 2
    db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    recovered = [b for b in recover_batches(chain_stack.chain, chain_stack.manifest.anchor, start_block) if b.values]
    assert sorted(v for b in recovered for v in b.values) == sorted(vals)
    assert [b.last_seq - b.first_seq + 1 for b in recovered] == [4, 4, 2]
    assert all(a.last_seq + 1 == b.first_seq for a, b in zip(recovered, recovered[1:], strict=False))
    for b in recovered:
        tree = b.tree()
        for v in b.values:
            assert chain_stack.anchor.functions.verifyInclusion(b.root, v, tree.proof(v)).call()
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ext_authz.cli", "evidence", "recover", "--manifest",
                          str(chain_stack.workdir / "addresses.json"), "--from-block", str(start_block)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = [v for b in json.loads(out.stdout)["batches"] if b["values"] for v in b["values"]]
    assert sorted(listed) == sorted("0x" + v.hex() for v in vals)


def test_root_only_batches_are_listed_without_values(chain_stack, tmp_path):
    from ext_authz.anchoring.custody import recover_batches

    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db)
    _enqueue(db, values(0x82, 2))
    start_block = chain_stack.chain.w3.eth.block_number + 1
    anchorer.anchor_pending()
    (batch,) = recover_batches(chain_stack.chain, chain_stack.manifest.anchor, start_block)
    assert batch.values is None
    with pytest.raises(Exception, match="root-only"):
        batch.tree()


def test_proofs_endpoint_serves_openzeppelin_format_read_only(chain_stack, tmp_path):
    import json
    import shutil
    import subprocess
    import urllib.error
    import urllib.request

    from ext_authz.anchoring.http import serve_anchor_http
    from ext_authz.local.net import free_port

    db = tmp_path / "a.sqlite3"
    anchorer = _anchorer(chain_stack, db)
    vals = values(0x91, 3)
    _enqueue(db, vals)
    anchorer.anchor_pending()
    port = free_port()
    httpd = serve_anchor_http(("127.0.0.1", port), anchorer.store, anchorer.health, chain_stack.manifest.chain_id,
                              chain_stack.manifest.anchor)
    base = f"http://127.0.0.1:{port}"

    def get(path, method="GET"):
        req = urllib.request.Request(base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        code, doc = get(f"/v1/proofs/{vals[1].hex()}")
        assert code == 200 and doc["status"] == "anchored" and doc["leafEncoding"] == ["bytes32"]
        root = bytes.fromhex(doc["root"][2:])
        proof = [bytes.fromhex(p[2:]) for p in doc["proof"]]
        assert chain_stack.anchor.functions.verifyInclusion(root, vals[1], proof).call()
        assert tuple(chain_stack.anchor.functions.batchOf(root).call()[2:]) == (doc["firstSeq"], doc["lastSeq"])
        script = ("const {StandardMerkleTree}=require('@openzeppelin/merkle-tree');const d=JSON.parse(require('fs')"
                  ".readFileSync(0,'utf8'));process.stdout.write(String(StandardMerkleTree.verify(d.root,d.leafEncoding,[d.value],d.proof)))")
        out = subprocess.run([shutil.which("node"), "-e", script], cwd=ROOT, input=json.dumps(doc), capture_output=True,
                             text=True, timeout=60, check=True)
        assert out.stdout == "true"
        assert other_values_absent(doc, vals[0], vals[2])
        assert get(f"/v1/proofs/{'ab' * 32}")[0] == 404
        assert get("/v1/proofs/not-hex")[0] == 400
        assert get(f"/v1/proofs/{vals[1].hex()}", method="POST")[0] == 405
        assert get("/healthz") == (200, get("/healthz")[1]) and get("/healthz")[1]["backlog"] == 0
    finally:
        httpd.shutdown()


def other_values_absent(doc, *others):
    text = str(doc)
    return all(v.hex() not in text for v in others)


def test_fee_bumps_stop_at_the_configured_cap(chain_stack, tmp_path):
    """A chain that never mines: the anchorer bumps up to anchor.max_fee_gwei and no further."""
    import threading
    import time

    db = tmp_path / "a.sqlite3"
    cap_gwei = 4
    anchorer = _anchorer(chain_stack, db, stuck_seconds=0.2, max_fee_gwei=cap_gwei)
    vals = values(0x65, 2)
    _enqueue(db, vals)
    rpc(chain_stack, "evm_setAutomine", False)
    try:
        worker = threading.Thread(target=anchorer.anchor_pending)
        worker.start()
        time.sleep(4)  # 20 stuck periods: uncapped, +25 % each would pass 4 gwei many times over
        pool = rpc(chain_stack, "txpool_content")["pending"]
        ours = next(v for k, v in pool.items() if k.lower() == anchorer_account().address.lower())
        (tx,) = ours.values()
        assert int(tx["maxFeePerGas"], 16) == cap_gwei * 10**9
        assert int(tx["maxPriorityFeePerGas"], 16) <= cap_gwei * 10**9
    finally:
        rpc(chain_stack, "evm_setAutomine", True)
        rpc(chain_stack, "evm_mine")
    worker.join(timeout=30)
    assert anchorer.store.proof_for(vals[0]).status == "anchored"

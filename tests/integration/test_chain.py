"""Contracts on anvil, evaluated by pyrevm against pinned state; anchoring with real transactions."""

import time

import pytest
from eth_account import Account
from web3.exceptions import ContractCustomError

from ext_authz.anchoring.anchorer import Anchorer
from ext_authz.anchoring.merkle import MerkleTree, leaf_hash
from ext_authz.anchoring.queue import LeafQueue
from ext_authz.anchoring.store import AnchorStore
from ext_authz.chain.dev import DEV_KEYS
from ext_authz.errors import ChainError, StateStale
from ext_authz.policy.abi import PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy

pytestmark = pytest.mark.slow


def act(stack, agent, action_type="payment.transfer", amount=100, data_class=1, target="payments-api", risk=0, key=None):
    key = stack.agent_fingerprints[agent] if key is None else key
    return PolicyAction(text_id(stack.spiffe_id(agent)), key, text_id(action_type), text_id(target), amount, data_class, risk)


def pinned_policy(stack, **kw):
    m = stack.manifest
    return PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models), **kw)


@pytest.fixture
def pinned(chain_stack):
    p = pinned_policy(chain_stack, max_age_seconds=30)
    p.refresh()
    return p


@pytest.mark.parametrize(
    "agent,kw,decision,reason",
    [
        ("procurement-01", {}, "ALLOW", "OK"),
        ("procurement-01", {"amount": 1_000_000}, "ALLOW", "OK"),
        ("procurement-01", {"amount": 1_000_001}, "DENY", "AMOUNT_OVER_LIMIT"),
        ("procurement-01", {"data_class": 2}, "DENY", "DATA_CLASS_NOT_PERMITTED"),
        ("procurement-01", {"action_type": "data.export"}, "DENY", "ACTION_NOT_PERMITTED"),
        ("procurement-01", {"target": "hr-api"}, "DENY", "ACTION_NOT_PERMITTED"),
        ("finance-03", {"amount": 1_000_001}, "REQUIRE_APPROVAL", "HUMAN_APPROVAL_REQUIRED"),
        ("finance-03", {"amount": 1_000_000}, "ALLOW", "OK"),
        ("rogue-07", {}, "DENY", "AGENT_UNKNOWN"),
        ("procurement-01", {"data_class": 0}, "ALLOW", "OK"),
        ("procurement-01", {"data_class": 3}, "DENY", "DATA_CLASS_NOT_PERMITTED"),
        ("procurement-01", {"risk": 50}, "ALLOW", "OK"),
        ("procurement-01", {"risk": 51}, "DENY", "RISK_TOO_HIGH"),
        ("procurement-01", {"key": b"\x01" * 32}, "DENY", "KEY_NOT_BOUND"),
        ("procurement-01", {"key": bytes(32)}, "DENY", "KEY_NOT_BOUND"),
    ],
)
def test_rule_based_policy_verdicts(chain_stack, pinned, agent, kw, decision, reason):
    v = pinned.evaluate(act(chain_stack, agent, **kw))
    assert (v.decision, v.reason) == (decision, reason)
    assert v.block == pinned.block
    assert v.implementation == chain_stack.manifest.policy and v.version == 1
    if reason != "AGENT_UNKNOWN":
        sha = next(m["sha256"] for m in chain_stack.spec["models"] if m["id"] == "demo-model-v1")
        assert v.model_hash.hex() == sha


def test_time_window_rule_is_evaluated_at_the_wall_clock(chain_stack, pinned):
    """The chain here runs hours ahead (governance time-travels it): the hour that counts is the authorizer's."""
    def wall_hour():
        return int(time.time() // 3600) % 24

    now_hour = wall_hour()
    other_hours = 0x00FFFFFF & ~(1 << now_hour)
    chain_stack.set_rule("procurement", "payment.read", "payments-api", max_amount=0, utc_hours=other_hours)
    try:
        pinned.refresh()
        expected = "OUTSIDE_TIME_WINDOW" if wall_hour() == now_hour else "OK"
        assert pinned.evaluate(act(chain_stack, "procurement-01", "payment.read", amount=0)).reason == expected
        hour = wall_hour()
        chain_stack.set_rule("procurement", "payment.read", "payments-api", max_amount=0, utc_hours=1 << hour)
        pinned.refresh()
        assert pinned.evaluate(act(chain_stack, "procurement-01", "payment.read", amount=0)).reason == (
            "OK" if wall_hour() == hour else "OUTSIDE_TIME_WINDOW")
    finally:
        chain_stack.set_rule("procurement", "payment.read", "payments-api", max_amount=0)


def test_model_rules_deprecation_and_required_model(chain_stack, pinned):
    chain_stack.set_rule("finance", "payment.read", "payments-api", max_amount=0, required_model="demo-model-v2")
    pinned.refresh()
    assert pinned.evaluate(act(chain_stack, "finance-03", "payment.read", amount=0)).reason == "MODEL_NOT_APPROVED"
    chain_stack.set_rule("finance", "payment.read", "payments-api", max_amount=0, required_model="demo-model-v1")
    pinned.refresh()
    assert pinned.evaluate(act(chain_stack, "finance-03", "payment.read", amount=0)).reason == "OK"  # runs the required model
    chain_stack.set_rule("finance", "payment.read", "payments-api", max_amount=0)


def test_state_is_pinned_until_refresh_then_revocation_applies(chain_stack, pinned):
    before = pinned.block
    block = chain_stack.revoke("procurement-01")  # guardian: no delay
    try:
        assert pinned.evaluate(act(chain_stack, "procurement-01")).reason == "OK"  # still block `before`
        assert pinned.refresh() == block > before
        assert pinned.evaluate(act(chain_stack, "procurement-01")).reason == "AGENT_REVOKED"
    finally:
        chain_stack.reactivate("procurement-01")  # governed: Safe + timelock
    pinned.refresh()
    assert pinned.evaluate(act(chain_stack, "procurement-01")).reason == "OK"


def test_paused_policy_denies_everything(chain_stack, pinned):
    chain_stack.pause_policy()
    try:
        pinned.refresh()
        assert pinned.evaluate(act(chain_stack, "procurement-01")).reason == "POLICY_PAUSED"
    finally:
        chain_stack.unpause_policy()


def test_blocks_without_watched_events_keep_the_evm_and_advance_the_pin(chain_stack, pinned):
    evm_before, block_before = pinned._pinned.evm, pinned.block
    anchorer = Account.from_key(DEV_KEYS["anchorer"])
    root = MerkleTree.build([b"\xa1" * 32]).root
    block = chain_stack.chain.transact(anchorer, chain_stack.anchor.functions.anchor(root, 1)).blockNumber
    assert pinned.refresh() == block > block_before
    assert pinned._pinned.evm is evm_before  # no re-fork for an unrelated contract's event
    v = pinned.evaluate(act(chain_stack, "procurement-01"))
    assert (v.reason, v.block) == ("OK", block)
    block = chain_stack.set_rule("procurement", "payment.transfer", "payments-api", max_amount=10, max_risk_score=50).blockNumber
    try:
        assert pinned.refresh() == block
        assert pinned._pinned.evm is not evm_before  # the policy logged: state re-read at the new block
        assert pinned.evaluate(act(chain_stack, "procurement-01")).reason == "AMOUNT_OVER_LIMIT"
    finally:
        chain_stack.set_rule("procurement", "payment.transfer", "payments-api", max_amount=1_000_000, max_risk_score=50)


def test_evaluations_do_not_grow_the_evm_journal(chain_stack, pinned):
    """pyrevm keeps every call's journal frame unless reverted: a leak on a long-lived pin."""
    pinned.evaluate(act(chain_stack, "procurement-01"))
    before = pinned._pinned.evm.journal_len
    for amount in range(500):
        assert pinned.evaluate(act(chain_stack, "procurement-01", amount=amount)).reason == "OK"
    assert pinned._pinned.evm.journal_len == before


def test_unconfirmed_state_goes_stale(chain_stack):
    p = pinned_policy(chain_stack, poll_seconds=0.05, max_age_seconds=0.3)
    p.refresh()  # no follower thread: nothing confirms the head again
    p.evaluate(act(chain_stack, "procurement-01"))
    time.sleep(0.4)
    with pytest.raises(StateStale):
        p.evaluate(act(chain_stack, "procurement-01"))


def test_unreachable_node_is_a_chain_error():
    p = PinnedPolicy("http://127.0.0.1:9", "0x" + "00" * 20, bytes(32))
    with pytest.raises(ChainError):
        p.refresh()
    with pytest.raises(StateStale):
        p.evaluate(PolicyAction(bytes(32), bytes(32), bytes(32), bytes(32), 0, 0))


def test_registry_access_control_uses_openzeppelin_custom_error(chain_stack):
    outsider = Account.create()
    fn = chain_stack.registry.functions.register(text_id("spiffe://sealgate.local/agent/x"), bytes(32), bytes(32), bytes(32), bytes(32))
    with pytest.raises(ContractCustomError) as err:
        fn.call({"from": outsider.address})
    selector = chain_stack.chain.w3.keccak(text="AccessControlUnauthorizedAccount(address,bytes32)")[:4]
    assert str(err.value.data).startswith("0x" + selector.hex())


def test_registry_rejects_double_registration_and_bad_transitions(chain_stack):
    timelock, guardian = chain_stack.manifest.timelock, chain_stack.guardian.address
    agent = text_id(chain_stack.spiffe_id("procurement-01"))
    for fn, sender, error in (
        (chain_stack.registry.functions.register(agent, text_id("acme"), text_id("procurement"), text_id("demo-model-v1"),
                                                 bytes(32)), timelock, "AgentAlreadyRegistered(bytes32)"),
        (chain_stack.registry.functions.reactivate(agent), timelock, "InvalidStatusTransition(bytes32,uint8)"),
        (chain_stack.registry.functions.setModel(text_id("nobody"), bytes(32)), timelock, "AgentNotRegistered(bytes32)"),
        (chain_stack.registry.functions.revoke(text_id("nobody")), guardian, "AgentNotRegistered(bytes32)"),
    ):
        with pytest.raises(ContractCustomError) as err:
            fn.call({"from": sender})
        assert str(err.value.data).startswith("0x" + chain_stack.chain.w3.keccak(text=error)[:4].hex())


def _anchorer(chain_stack, tmp_path, key=DEV_KEYS["anchorer"]):
    return Anchorer(AnchorStore(tmp_path / "a.sqlite3"), chain_stack.chain, chain_stack.manifest.anchor,
                    Account.from_key(key), interval_seconds=0.1, batch_max_leaves=4)


def _queue(tmp_path, *hashes):
    queue = LeafQueue(AnchorStore(tmp_path / "a.sqlite3"))
    for i, h in enumerate(hashes):
        queue.enqueue(h, "sae", f"d{i}")
    return queue


def test_anchoring_batches_and_on_chain_inclusion(chain_stack, tmp_path):
    anchorer = _anchorer(chain_stack, tmp_path)
    hashes = [bytes([i]) * 32 for i in range(1, 10)]
    assert _queue(tmp_path, *hashes).flush() == 9
    assert anchorer.anchor_pending() == 3  # 4 + 4 + 1 leaves
    anchor = chain_stack.anchor
    for h in hashes:
        proof = anchorer.store.proof_for(h)
        assert proof.status == "anchored" and proof.block and proof.tx_hash.startswith("0x")
        assert anchor.functions.verifyInclusion(proof.root, h, proof.proof).call()
        assert not anchor.functions.verifyInclusion(proof.root, bytes(32), proof.proof).call()
        assert not anchor.functions.verifyInclusion(proof.root, leaf_hash(h), proof.proof).call()  # a leaf is no value
    assert anchorer.store.counts() == {"leaves": 9, "unbatched": 0, "batches_pending": 0, "batches_mined": 0,
                                       "batches_anchored": 3}


def test_restart_after_send_does_not_anchor_twice(chain_stack, tmp_path):
    anchorer = _anchorer(chain_stack, tmp_path)
    _queue(tmp_path, b"\x42" * 32).flush()
    root, first, last, values = anchorer.store.cut_batch(4)
    # crash after the transaction was mined but before the store recorded it
    receipt = chain_stack.chain.transact(Account.from_key(DEV_KEYS["anchorer"]),
                                         chain_stack.anchor.functions.anchor(root, len(values)))
    count = chain_stack.anchor.functions.batchCount().call()
    restarted = _anchorer(chain_stack, tmp_path)
    assert restarted.anchor_pending() == 1
    assert chain_stack.anchor.functions.batchCount().call() == count
    proof = restarted.store.proof_for(b"\x42" * 32)
    assert proof.status == "anchored" and proof.tx_hash == "0x" + receipt.transactionHash.hex().removeprefix("0x")


def test_anchor_failure_keeps_leaves_pending(chain_stack, tmp_path):
    anchorer = _anchorer(chain_stack, tmp_path, key=Account.create().key.hex())  # no ANCHORER_ROLE, no funds
    _queue(tmp_path, b"\x07" * 32).flush()
    with pytest.raises(ChainError):
        anchorer.anchor_pending()
    assert anchorer.store.proof_for(b"\x07" * 32).status == "pending"
    assert anchorer.store.counts()["batches_pending"] == 1

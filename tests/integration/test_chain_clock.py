"""The clock a decision is evaluated at, through the real path (agent mTLS -> sidecar Envoy -> authorizer with
pyrevm on anvil state): a quiet chain whose head block is hours old, and a chain whose clock runs ahead.

The attack: a rule allows one UTC hour only; the chain mined nothing since that hour. Evaluated at the head
block's timestamp, the policy answered ALLOW hours later. Now the authorizer evaluates at its own clock and
refuses state whose head block's timestamp is outside its bounds (POLICY_STATE_STALE, fail closed)."""

import time

import pytest
from web3.types import RPCEndpoint

from ext_authz.local.stack import LocalStack
from ext_authz.policy.abi import PolicyAction, text_id
from ext_authz.policy.pinned import PinnedPolicy

pytestmark = pytest.mark.slow

BOUND = 900  # seconds each way: far above any quiet spell of this test module under load


@pytest.fixture(scope="module")
def clock_stack(tmp_path_factory):
    overrides = {"max_head_age_seconds": BOUND, "max_clock_ahead_seconds": BOUND}
    with LocalStack(tmp_path_factory.mktemp("clock"), authorizer_overrides=overrides) as s:
        realign(s)
        yield s


def rpc(stack, method, *params):
    return stack.chain.w3.provider.make_request(RPCEndpoint(method), list(params))


def mine_at(stack, timestamp: int) -> int:
    """Sets anvil's clock (backwards too) and mines one block at that time; returns its number."""
    rpc(stack, "evm_setTime", timestamp)
    rpc(stack, "evm_mine")
    block = stack.chain.w3.eth.get_block("latest")
    assert abs(block["timestamp"] - timestamp) <= 2, (block["timestamp"], timestamp)
    return block["number"]


def realign(stack) -> int:
    """The chain's clock back to the wall clock (governance in this module time-travels past the delay)."""
    block = mine_at(stack, int(time.time()))
    stack.wait_pinned(block)
    return block


def hour(unix: float) -> int:
    return int(unix // 3600) % 24


def balance(stack):
    r = stack.agent_call("procurement-01", "GET", "/v1/balance")
    return r.status, r.headers.get("x-sealgate-reason")


def test_quiet_chain_is_stale_by_its_head_timestamp_and_never_answers_from_the_old_hour(clock_stack):
    s = clock_stack
    assert balance(s) == (200, None)
    then = time.time() - 3 * 3600
    s.set_rule("procurement", "payment.read", "payments-api", max_amount=0, utc_hours=1 << hour(then))
    try:
        # the chain went quiet three hours ago: its head block is from the one allowed hour
        block = mine_at(s, int(then))
        s.wait_pinned(block)
        status, reason = balance(s)
        assert (status, reason) == (403, "POLICY_STATE_STALE")  # was ALLOW, evaluated at the head's hour
        assert s.status()["pinned_block"] >= block  # the head is confirmed; its timestamp is what is too old
        # a fresh head: state is trusted again and the rule is evaluated at the authorizer's clock
        realign(s)
        assert balance(s) == (403, "OUTSIDE_TIME_WINDOW")
    finally:
        s.set_rule("procurement", "payment.read", "payments-api", max_amount=0)
        realign(s)
    assert balance(s) == (200, None)


def test_chain_clock_ahead_is_stale(clock_stack):
    s = clock_stack
    assert balance(s) == (200, None)
    rpc(s, "evm_setNextBlockTimestamp", int(time.time()) + 3 * 3600)
    rpc(s, "evm_mine")
    s.wait_pinned(s.chain.w3.eth.block_number)
    try:
        assert balance(s) == (403, "POLICY_STATE_STALE")
    finally:
        realign(s)
    assert balance(s) == (200, None)


def test_without_bounds_a_quiet_chain_is_still_evaluated_at_the_wall_clock(clock_stack):
    """The local stack's setting (no bounds: anvil mines only on transactions): the verdict is still right."""
    s = clock_stack
    m = s.manifest
    then = time.time() - 3 * 3600
    s.set_rule("procurement", "payment.read", "payments-api", max_amount=0, utc_hours=1 << hour(then))
    try:
        mine_at(s, int(then))
        pinned = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models))
        pinned.refresh()
        action = PolicyAction(text_id(s.spiffe_id("procurement-01")), s.agent_fingerprints["procurement-01"],
                              text_id("payment.read"), text_id("payments-api"), 0, 1)
        assert pinned.evaluate(action).reason == "OUTSIDE_TIME_WINDOW"
        # the same state evaluated at the head's own hour would allow: the wall clock is what decides
        bounded = PinnedPolicy(m.rpc_url, m.policy_registry, bytes.fromhex(m.policy_id[2:]), watch=(m.registry, m.models),
                               clock=lambda: then, max_head_age_seconds=BOUND, max_clock_ahead_seconds=BOUND)
        bounded.refresh()
        assert bounded.evaluate(action).reason == "OK"
    finally:
        s.set_rule("procurement", "payment.read", "payments-api", max_amount=0)
        realign(s)

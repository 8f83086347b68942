"""The pinned EVM reads only state we inserted: a read of anything else fails at once (StateNotCached), never a
silent zero and never a fetch by pyrevm itself (which would hold the GIL with no timeout). Real pyrevm, no node."""

import threading
import time

import pytest

from ext_authz.errors import StateNotCached
from ext_authz.policy.pinned import PinnedPolicy, _merge, _Pinned

# runtime code: return(sload(0) + sload(1)) -- reads two slots of its own storage
CODE = "0x" + "600054" + "600154" + "01" + "600052" + "60206000f3"
CONTRACT = "0x" + "ab" * 20
CALLER = "0x" + "00" * 20


def pinned_with(policy, state):
    return _Pinned(policy._evm(10, state), 10, threading.Lock(), time.monotonic(), 1_800_000_000, state)


def test_a_read_of_state_not_inserted_is_a_miss_at_once_and_inserted_state_is_read():
    policy = PinnedPolicy("http://127.0.0.1:9", "0x" + "00" * 20, bytes(32))
    state = {}
    _merge(state, {CONTRACT: {"balance": "0x0", "nonce": 1, "code": CODE, "storage": {"0x0": "0x28"}},
                   CALLER: {"balance": "0x0"}})  # the caller (and coinbase) is read too; the prestate tracer lists it
    pinned = pinned_with(policy, state)
    started = time.monotonic()
    with pytest.raises(StateNotCached) as miss:  # slot 1 was never inserted
        policy._run(pinned, CONTRACT, b"")
    assert time.monotonic() - started < 5  # refused locally, not a network timeout
    assert (miss.value.to, miss.value.block) == (CONTRACT, 10)
    _merge(state, {CONTRACT: {"storage": {"0x1": "0x2"}}})
    pinned = pinned_with(policy, state)  # both slots of one account: each insert stays in the database
    assert int.from_bytes(policy._run(pinned, CONTRACT, b""), "big") == 42


def test_merging_prestates_keeps_every_slot_and_the_latest_account_fields():
    state = {}
    _merge(state, {"0xAA": {"balance": "0x1", "storage": {"0x0": "0x5"}}})
    _merge(state, {"0xaa": {"nonce": 3, "storage": {"0x1": "0x6"}}})
    assert state == {"0xaa": {"balance": "0x1", "nonce": 3, "storage": {"0x0": "0x5", "0x1": "0x6"}}}

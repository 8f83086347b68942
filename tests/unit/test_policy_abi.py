"""The hand-written ABI encoding on the decision path equals eth_abi's, and decoding rejects junk."""

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from ext_authz.errors import ChainError
from ext_authz.policy.abi import EVALUATE_SIGNATURE, PolicyAction, decode_verdict, encode_evaluate


@pytest.mark.parametrize("amount,dc,risk", [(0, 0, 0), (500, 1, 20), (2**256 - 1, 3, 100)])
def test_encode_evaluate_matches_eth_abi(amount, dc, risk):
    a = PolicyAction(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, amount, dc, risk)
    policy_id = b"\x09" * 32
    expected = function_signature_to_4byte_selector(EVALUATE_SIGNATURE) + encode(
        ["bytes32", "(bytes32,bytes32,bytes32,bytes32,uint256,uint8,uint8)"],
        [policy_id, (a.agent_id, a.key_fingerprint, a.action_type, a.target, amount, dc, risk)])
    assert encode_evaluate(policy_id, a) == expected


@pytest.mark.parametrize("bad", [
    PolicyAction(b"\x01" * 31, bytes(32), bytes(32), bytes(32), 0, 0),
    PolicyAction(bytes(32), bytes(32), bytes(32), bytes(32), -1, 0),
    PolicyAction(bytes(32), bytes(32), bytes(32), bytes(32), 2**256, 0),
    PolicyAction(bytes(32), bytes(32), bytes(32), bytes(32), 0, 256),
])
def test_encode_rejects_out_of_range(bad):
    with pytest.raises(ChainError):
        encode_evaluate(bytes(32), bad)


def verdict_bytes(decision=1, reason=b"OK", impl=b"\xaa" * 20, version=2):
    return encode(["(uint8,bytes32,bytes32)", "address", "uint256"],
                  [(decision, reason.ljust(32, b"\0"), b"\x05" * 32), "0x" + impl.hex(), version])


def test_decode_verdict():
    v = decode_verdict(verdict_bytes(), 7)
    assert (v.decision, v.reason, v.block, v.version) == ("ALLOW", "OK", 7, 2)
    assert v.implementation.lower() == "0x" + "aa" * 20 and v.model_hash == b"\x05" * 32


@pytest.mark.parametrize("output", [b"", verdict_bytes()[:-1], verdict_bytes(decision=3), verdict_bytes(reason=b"ok"),
                                    verdict_bytes(reason=b"")])
def test_decode_rejects_malformed_output(output):
    with pytest.raises(ChainError):
        decode_verdict(output, 1)

"""The policy contracts' ABI on the decision path: PolicyRegistry.evaluate encoded and its verdict decoded
with named offsets, without web3 (eth_abi costs ~85 us per call here)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from ext_authz.errors import ChainError

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DECISIONS = ("DENY", "ALLOW", "REQUIRE_APPROVAL")


@functools.lru_cache(maxsize=8192)
def text_id(text: str) -> bytes:
    """bytes32 id of a name (agent SPIFFE ID, action type, target, role): keccak256(utf8).

    Cached: the decision path hashes the same few names over and over (~60 us each uncached).
    """
    return keccak(text.encode("utf-8"))


@dataclass(frozen=True)
class PolicyAction:
    agent_id: bytes
    key_fingerprint: bytes
    action_type: bytes
    target: bytes
    amount: int
    data_class: int
    risk_score: int = 0


@dataclass(frozen=True)
class Verdict:
    decision: str  # DENY | ALLOW | REQUIRE_APPROVAL
    reason: str
    model_hash: bytes
    block: int
    implementation: str = ZERO_ADDRESS  # the policy contract that answered
    version: int = 0  # its version in the PolicyRegistry


EVALUATE_SIGNATURE = "evaluate(bytes32,(bytes32,bytes32,bytes32,bytes32,uint256,uint8,uint8))"
_EVALUATE_SELECTOR = function_signature_to_4byte_selector(EVALUATE_SIGNATURE)
CURRENT_SELECTOR = function_signature_to_4byte_selector("current(bytes32)")
APPROVER_KEY_SELECTOR = function_signature_to_4byte_selector("approverKey(bytes32)")


@functools.lru_cache(maxsize=4096)
def _evaluate_head(policy_id: bytes, agent_id: bytes, key_fingerprint: bytes, action_type: bytes, target: bytes) -> bytes:
    """Selector and the five bytes32 words: the same per agent, key, action and target (cached)."""
    for word in (policy_id, agent_id, key_fingerprint, action_type, target):
        if len(word) != 32:
            raise ChainError(f"bytes32 field has {len(word)} bytes")
    return b"".join((_EVALUATE_SELECTOR, policy_id, agent_id, key_fingerprint, action_type, target))


def encode_evaluate(policy_id: bytes, action: PolicyAction) -> bytes:
    """ABI encoding of PolicyRegistry.evaluate(policyId, Action): static, so eight 32-byte words.

    Written out because eth_abi costs ~85 us per call on the decision path; the unit
    tests check it byte for byte against eth_abi.
    """
    if not 0 <= action.amount < 2**256 or not 0 <= action.data_class < 256 or not 0 <= action.risk_score < 256:
        raise ChainError("amount, data class or risk score out of ABI range")
    head = _evaluate_head(policy_id, action.agent_id, action.key_fingerprint, action.action_type, action.target)
    return b"".join((head, action.amount.to_bytes(32, "big"), action.data_class.to_bytes(32, "big"),
                     action.risk_score.to_bytes(32, "big")))


@functools.lru_cache(maxsize=64)
def _checksummed(address: bytes) -> str:
    """EIP-55 form of a 20-byte address; cached: the same few implementations answer every call (~100 us uncached)."""
    return to_checksum_address(address)


@functools.lru_cache(maxsize=1024)
def decode_verdict(output: bytes, block: int) -> Verdict:
    """Decodes ((uint8 decision, bytes32 reason, bytes32 modelHash), address, uint256); rejects anything else.

    Cached: the output does not depend on the amount, so most calls return bytes seen before
    (a rejection raises and is not cached)."""
    if len(output) != 160:
        raise ChainError(f"evaluate returned {len(output)} bytes, expected 160")
    decision = int.from_bytes(output[:32], "big")
    if decision >= len(DECISIONS):
        raise ChainError(f"evaluate returned decision {decision}, expected 0..2")
    reason_raw = output[32:64].rstrip(b"\x00")
    if not reason_raw or not all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_" for c in reason_raw):
        raise ChainError(f"evaluate returned a reason that is not an upper-case code: {output[32:64].hex()}")
    implementation = _checksummed(output[108:128])
    return Verdict(DECISIONS[decision], reason_raw.decode("ascii"), output[64:96], block, implementation,
                   int.from_bytes(output[128:160], "big"))


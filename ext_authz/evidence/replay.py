"""Decision replay: re-run the policy a verified SAE or denial names, at its `pol.block`, and compare verdicts.

Every input of `IActionPolicy.evaluate` is in the envelope (format version 3): the agent (`sub`), the action
(`act.type`, `act.amt`, `act.dc`), the target (`aud` of an SAE, `tgt` of a denial), and `inp` (the key
fingerprint and the risk score); the policy is `pol.registry` / `pol.id`, the state and the clock are those of
block `pol.block` (an archive node keeps them). `PolicyRegistry.evaluate` runs there as an `eth_call`, and the
verdict must be the one the envelope records: ALLOW for an SAE, REQUIRE_APPROVAL for an SAE carrying an
approval (`apr`) or a denial naming one (`apr_req`), DENY with the denial's reason otherwise; the answering
implementation and version must be `pol.addr` / `pol.ver`. Claims passed here must come from a verified token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ext_authz import reasons
from ext_authz.envelope.jws import SAE_TYP
from ext_authz.errors import ChainError, SaeInvalid
from ext_authz.policy.abi import PolicyAction, decode_verdict, encode_evaluate, text_id
from ext_authz.server.config import DATA_CLASSES

APPROVAL_VERDICT = ("REQUIRE_APPROVAL", reasons.HUMAN_APPROVAL_REQUIRED)


@dataclass(frozen=True)
class Replayed:
    expected: tuple[str, str]  # (decision, reason) the envelope records
    replayed: tuple[str, str]  # what the policy answers at pol.block now
    block: int
    implementation: str  # the contract that answered now
    version: int
    recorded_implementation: str  # pol.addr
    recorded_version: int  # pol.ver

    @property
    def matches(self) -> bool:
        return (self.expected == self.replayed and self.implementation.lower() == self.recorded_implementation.lower()
                and self.version == self.recorded_version)


def recorded_verdict(claims: dict[str, Any], typ: str) -> tuple[str, str] | None:
    """The policy's verdict the envelope records; None when there is none to replay (denied before the policy was
    read, or by the authorizer itself after it, e.g. POLICY_EVALUATION_FAILED)."""
    if typ == SAE_TYP:
        return APPROVAL_VERDICT if "apr" in claims else ("ALLOW", reasons.OK)
    if "inp" not in claims:
        return None
    if "apr_req" in claims:  # held for a person: the policy said REQUIRE_APPROVAL, whatever the approval did
        return APPROVAL_VERDICT
    if claims["reason"] in reasons.POLICY_CONTRACT_CODES and claims["reason"] != reasons.OK:
        return ("DENY", claims["reason"])
    return None


def policy_action(claims: dict[str, Any], typ: str) -> PolicyAction:
    """The `IActionPolicy.Action` the decision evaluated, rebuilt from the envelope's claims."""
    act, inp = claims["act"], claims["inp"]
    target = claims["aud"] if typ == SAE_TYP else claims["tgt"]
    if act["dc"] not in DATA_CLASSES:
        raise SaeInvalid(reasons.SAE_INVALID, f"act.dc {act['dc']!r} is not a data class")
    return PolicyAction(text_id(claims["sub"]), bytes.fromhex(inp["kf"]), text_id(act["type"]), text_id(target),
                        int(act["amt"]), DATA_CLASSES.index(act["dc"]), inp["risk"])


def replay(claims: dict[str, Any], typ: str, client: Any) -> Replayed | None:
    """Re-runs the decision on `client` (an `ext_authz.chain.client.ChainClient` on an archive node); None when the
    envelope records no policy verdict. Raises ChainError when the node cannot run it."""
    expected = recorded_verdict(claims, typ)
    if expected is None:
        return None
    pol = claims["pol"]
    calldata = encode_evaluate(bytes.fromhex(pol["id"].removeprefix("0x")), policy_action(claims, typ))
    try:
        output = bytes(client.w3.eth.call({"to": pol["registry"], "data": "0x" + calldata.hex()},
                                          block_identifier=pol["block"]))
    except Exception as e:  # web3 raises many kinds; all mean the node could not run it
        raise ChainError(f"eth_call of PolicyRegistry.evaluate at block {pol['block']} failed: {e}") from e
    verdict = decode_verdict(output, pol["block"])
    return Replayed(expected, (verdict.decision, verdict.reason), pol["block"], verdict.implementation,
                    verdict.version, pol["addr"], pol["ver"])

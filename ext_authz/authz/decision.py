"""The decision: action -> policy verdict -> signed SAE or signed denial.

Pure apart from the two injected edges (policy evaluator, clock); the gRPC
server and the anchoring queue sit outside.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ext_authz import reasons
from ext_authz.authz.actions import ActionRequest
from ext_authz.envelope.encoding import b64url, sae_hash
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, EnvelopeEncoder
from ext_authz.envelope.models import (
    MAX_MESSAGE_CHARS,
    Action,
    ApprovalRef,
    ChainRef,
    Context,
    Denial,
    PolicyInputs,
    PolicyRef,
    Sae,
    verify_sae,
)
from ext_authz.errors import InputRejected
from ext_authz.evidence.store import EvidenceRecord
from ext_authz.policy.abi import PolicyAction, Verdict, text_id
from ext_authz.server.config import AuthorizerConfig

PARENT_MAX_AGE_SECONDS = 3600


class ApprovalChecker(Protocol):
    def verify(self, token: str, action: ActionRequest, digest: str | None = None) -> dict[str, Any]: ...


class PolicyEvaluator(Protocol):
    policy_id: bytes

    @property
    def policy_registry(self) -> str: ...

    def evaluate(self, action: PolicyAction) -> Verdict: ...


@dataclass(frozen=True)
class Decision:
    allowed: bool
    decision_id: str
    reason: str
    message: str
    token: str  # SAE on allow, signed denial record on deny
    token_hash: bytes
    approval_request: str | None = None  # the action digest an approver signs (HUMAN_APPROVAL_REQUIRED)
    record: EvidenceRecord | None = None  # what the evidence store keeps; durable before the answer leaves


class DecisionIds:
    """128-bit random ids, URL-safe base64 (22 characters), from os.urandom read 4 KiB at a time.

    A getrandom syscall costs ~5-8 us on these VMs, more than the rest of making an id.
    The buffer is dropped in a forked child, so parent and child never hand out the same id.
    """

    ID_BYTES = 16
    BATCH = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def __call__(self) -> str:
        with self._lock:
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = os.urandom(self.ID_BYTES * self.BATCH), 0
            raw = self._buffer[self._offset:self._offset + self.ID_BYTES]
            self._offset += self.ID_BYTES
        return b64url(raw)


new_decision_id = DecisionIds()


class DecisionMaker:
    def __init__(self, config: AuthorizerConfig, encoder: EnvelopeEncoder, policy: PolicyEvaluator,
                 chain_id: int, anchor_address: str, jwks: dict[str, Any], clock: Callable[[], float] = time.time,
                 approvals: ApprovalChecker | None = None):
        self._config = config
        self._issuer = config.issuer  # iss of every SAE and denial: this authorizer
        self._approvals = approvals
        self._encoder = encoder
        self._policy = policy
        self._chain = ChainRef(chain_id, anchor_address)
        self._policy_registry, self._policy_id = policy.policy_registry, "0x" + policy.policy_id.hex()
        self._pol_unevaluated = PolicyRef(self._policy_registry, self._policy_id, None, None, None)  # denied before the policy was read
        self._pol_last: tuple[tuple[str | None, int | None, int | None], PolicyRef] = ((None, None, None), self._pol_unevaluated)
        self._jwks = jwks
        self._clock = clock

    def _parent_hash(self, action: ActionRequest) -> str | None:
        """The parent SAE (x-sae-parent): issued by this authorizer (signature, iss, every claim's format),
        expired at most PARENT_MAX_AGE_SECONDS ago, and either issued to this same agent (its `sub`) or
        part of this same session (`ctx.sid` present in both and equal). Else PARENT_SAE_INVALID: an agent
        cannot claim another agent's action as its parent from outside that agent's session."""
        parent = action.parent_sae
        if parent is None:
            return None
        try:
            sae = verify_sae(parent, self._jwks, now=self._clock(), leeway=PARENT_MAX_AGE_SECONDS, issuer=self._issuer)
        except InputRejected as e:
            raise InputRejected(reasons.PARENT_SAE_INVALID, f"x-sae-parent: {e.message}") from e
        same_session = sae.context.session_id is not None and sae.context.session_id == action.session_id
        if sae.subject != action.agent_spiffe_id and not same_session:
            raise InputRejected(reasons.PARENT_SAE_INVALID,
                                "x-sae-parent: issued to another agent, outside this request's session")
        return sae_hash(parent).hex()

    def allow(self, action: ActionRequest, verdict: Verdict, parent_hash: str | None,
              approval: dict[str, Any] | None = None, act: Action | None = None) -> Decision:
        """`approval`: the verified approval's claims; the SAE then carries the approval itself.
        `act`: the action's claims when the caller already built them (decide() does, once)."""
        now = int(self._clock())
        jti = new_decision_id()
        apr = None
        if approval is not None:  # who approved, and the signed approval itself: an auditor re-checks it
            if action.approval is None:
                raise ValueError("approval claims given for a request that carries no approval")
            apr = ApprovalRef(approval["iss"], approval["jti"], approval["req"], action.approval)
        sae = Sae(
            issuer=self._issuer,
            subject=action.agent_spiffe_id,
            audience=action.target,
            action=act or Action.of(action),
            policy=self._pol(verdict),
            inputs=self._inputs(action),
            model="sha256:" + verdict.model_hash.hex(),
            issued_at=now,
            not_before=now,
            expires=now + self._config.sae_ttl_seconds,
            jti=jti,
            context=Context(action.session_id, parent_hash, action.data_class),
            chain=self._chain,
            approval=apr,
        )
        token = self._encoder.encode(sae.to_claims(), SAE_TYP)
        digest = sae_hash(token)
        record = EvidenceRecord(jti, "sae", token, digest, now, reasons.OK, sae.subject, sae.audience,
                                sae.context.session_id, parent_hash)
        return Decision(True, jti, reasons.OK, "allowed", token, digest, record=record)

    def _pol(self, verdict: Verdict | None) -> PolicyRef:
        """Which policy answered: registry + id, and the implementation, version and block evaluated.
        The last one is kept (decisions between two blocks share it; building a frozen model costs ~1 us)."""
        if verdict is None:
            return self._pol_unevaluated
        key = (verdict.implementation, verdict.version, verdict.block)
        last = self._pol_last  # one read: another worker thread may replace it, never half-way
        if last[0] != key:
            last = (key, PolicyRef(self._policy_registry, self._policy_id, *key))
            self._pol_last = last
        return last[1]

    def deny(self, reason: str, message: str, action: ActionRequest | None = None, verdict: Verdict | None = None,
             principal: str = "", approval_request: str | None = None, act: Action | None = None) -> Decision:
        now = int(self._clock())
        decision_id = new_decision_id()
        denial = Denial(
            issuer=self._issuer,
            subject=action.agent_spiffe_id if action else (principal or None),  # omitted when no identity was read
            target=action.target if action else None,
            action=(act or Action.of(action)) if action else None,
            policy=self._pol(verdict),
            issued_at=now,
            jti=decision_id,
            reason=reason,
            message=message[:MAX_MESSAGE_CHARS],
            chain=self._chain,
            approval_request=approval_request,
            inputs=self._inputs(action) if action is not None and verdict is not None else None,
        )
        token = self._encoder.encode(denial.to_claims(), DENIAL_TYP)
        digest = sae_hash(token)
        record = EvidenceRecord(decision_id, "denial", token, digest, now, reason, denial.subject, denial.target,
                                None)  # only what the token itself says: a denial has no ctx
        return Decision(False, decision_id, reason, message, token, digest, approval_request, record)

    def _risk(self, action: ActionRequest) -> int:
        return self._config.risk_scores.get(action.agent_spiffe_id, 0)

    def _inputs(self, action: ActionRequest) -> PolicyInputs:
        """`inp`: what the policy read that the other claims do not carry (replay re-runs it from the envelope)."""
        return PolicyInputs(action.key_fingerprint.hex(), self._risk(action))

    def decide(self, action: ActionRequest) -> Decision:
        """Evaluates the policy; chain errors propagate to the caller, which fails closed."""
        parent_hash = self._parent_hash(action)  # a bad parent is rejected before any chain read
        verdict = self._policy.evaluate(
            PolicyAction(
                agent_id=text_id(action.agent_spiffe_id),
                key_fingerprint=action.key_fingerprint,
                action_type=text_id(action.action_type),
                target=text_id(action.target),
                amount=action.amount,
                data_class=action.data_class_level,
                risk_score=self._risk(action),
            )
        )
        act = Action.of(action)  # the action's claims, built once for whichever envelope is signed
        if verdict.reason not in reasons.POLICY_CONTRACT_CODES:
            return self.deny(reasons.POLICY_EVALUATION_FAILED, f"policy returned unknown reason {verdict.reason}",
                             action, verdict, act=act)
        if verdict.decision == "ALLOW":
            return self.allow(action, verdict, parent_hash, act=act)
        if verdict.decision == "REQUIRE_APPROVAL":
            return self._approved(action, act, verdict, parent_hash)
        return self.deny(verdict.reason, reasons.MESSAGES.get(verdict.reason, verdict.reason), action, verdict, act=act)

    def _approved(self, action: ActionRequest, act: Action, verdict: Verdict, parent_hash: str | None) -> Decision:
        """REQUIRE_APPROVAL: allowed only with a person's approval of exactly this action, used once."""
        digest = act.approval_digest(action.agent_spiffe_id, action.target)
        if action.approval is None or self._approvals is None:
            return self.deny(verdict.reason, reasons.MESSAGES[reasons.HUMAN_APPROVAL_REQUIRED], action, verdict,
                             approval_request=digest, act=act)
        try:
            approval = self._approvals.verify(action.approval, action, digest)
        except InputRejected as e:
            return self.deny(e.reason, e.message, action, verdict, approval_request=digest, act=act)
        return self.allow(action, verdict, parent_hash, approval, act=act)


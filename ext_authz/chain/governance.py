"""Governance flows over the deployed contracts: Safe multisig -> TimelockController -> target.

A proposal is a timelock `schedule(target, 0, data, 0, salt, delay)` call made by the
Safe. Owners approve the Safe transaction on-chain (`approveHash`); once the threshold
is reached the Safe transaction is submitted and the operation is scheduled, visible
as a `CallScheduled` event for the whole delay; after the delay anyone may
`execute`. The guardian's emergency actions (revoke an agent, pause the policy,
deprecate a model) bypass the timelock by design.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.logs import DISCARD

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.client import ChainClient
from ext_authz.chain.manifest import Manifest
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS, text_id

RULE_FIELDS = ("enabled", "allowed_data_classes", "max_risk_score", "utc_hours", "max_amount", "approval_threshold",
               "required_model")
ALL_HOURS = 0x00FFFFFF
OPERATION_STATES = ("Unset", "Waiting", "Ready", "Done")


def rule_tuple(max_amount: int, approval_threshold: int = 0, data_classes: tuple[int, ...] = (0, 1),
               max_risk_score: int = 100, utc_hours: int = ALL_HOURS, required_model: str | None = None,
               enabled: bool = True) -> tuple:
    mask = 0
    for c in data_classes:
        mask |= 1 << c
    return (enabled, mask, max_risk_score, utc_hours, max_amount, approval_threshold,
            text_id(required_model) if required_model else bytes(32))


@dataclass
class Proposal:
    """A timelock operation proposed through the Safe (stored as JSON so other owners can approve)."""

    description: str
    target: str
    data: str  # 0x-hex calldata executed by the timelock
    salt: str
    delay: int
    safe_nonce: int
    safe_tx_hash: str
    operation_id: str

    @property
    def id(self) -> str:
        return self.safe_tx_hash

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.id}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path, proposal_id: str) -> Proposal:
        matches = sorted(directory.glob(f"{proposal_id}*.json")) if len(proposal_id) >= 6 else []
        if len(matches) != 1:
            raise ConfigError(f"proposal {proposal_id!r}: expected one match in {directory}, found {len(matches)}")
        return cls(**json.loads(matches[0].read_text()))


class Governance:
    def __init__(self, client: ChainClient, manifest: Manifest):
        self.client = client
        self.manifest = manifest
        self.safe = client.contract("Safe", manifest.safe)
        self.timelock = client.contract("SealgateTimelock", manifest.timelock)
        self.registry = client.contract("AgentRegistry", manifest.registry)
        self.models = client.contract("ModelRegistry", manifest.models)
        self.approvers = client.contract("ApproverRegistry", manifest.approvers)
        self.policy_registry = client.contract("PolicyRegistry", manifest.policy_registry)
        self.policy_id = bytes.fromhex(manifest.policy_id.removeprefix("0x"))

    def current_policy(self):
        address, _version = self.policy_registry.functions.current(self.policy_id).call()
        return self.client.contract("RuleBasedPolicy", address)

    # ------------------------------------------------------------ calls a proposal can carry

    def call_upgrade_policy(self, implementation: str) -> tuple[str, Any, str]:
        fn = self.policy_registry.functions.upgrade(self.policy_id, to_checksum_address(implementation))
        return self.policy_registry.address, fn, f"upgrade policy to {implementation}"

    def call_set_rule(self, role: str, action_type: str, target: str, rule: tuple) -> tuple[str, Any, str]:
        policy = self.current_policy()
        fn = policy.functions.setRule(text_id(role), text_id(action_type), text_id(target), rule)
        return policy.address, fn, f"set rule {role}/{action_type}/{target}"

    def call_reactivate(self, spiffe_id: str) -> tuple[str, Any, str]:
        return self.registry.address, self.registry.functions.reactivate(text_id(spiffe_id)), f"reactivate {spiffe_id}"

    def call_register_approver(self, name: str, ed25519_x: str) -> tuple[str, Any, str]:
        """`ed25519_x`: the approver's public key, base64url as in the JWK `sealgate approver keygen` prints."""
        import base64

        from ext_authz.authz.approvals import APPROVER_NAME

        if not APPROVER_NAME.fullmatch(name):
            raise ConfigError(f"approver name {name!r} must be 1-64 of [a-z0-9.-_], starting with a letter or digit")
        try:
            key = base64.urlsafe_b64decode(ed25519_x + "=" * (-len(ed25519_x) % 4))
        except ValueError as e:
            raise ConfigError(f"approver key must be base64url: {e}") from e
        if len(key) != 32:
            raise ConfigError(f"an Ed25519 public key is 32 bytes, found {len(key)}")
        fn = self.approvers.functions.register(text_id(name), key)
        return self.approvers.address, fn, f"register approver {name}"

    def call_anchorer(self, address: str, grant: bool = True) -> tuple[str, Any, str]:
        anchor = self.client.contract("SaeAnchor", self.manifest.anchor)
        role, who = role_id("ANCHORER_ROLE"), to_checksum_address(address)
        fn = anchor.functions.grantRole(role, who) if grant else anchor.functions.revokeRole(role, who)
        return anchor.address, fn, f"{'grant' if grant else 'revoke'} ANCHORER_ROLE {'to' if grant else 'from'} {who}"

    def call_unpause(self) -> tuple[str, Any, str]:
        policy = self.current_policy()
        return policy.address, policy.functions.unpause(), "unpause policy"

    def call_register_model(self, model_id: str, sha256_hex: str, sbom_ref: str) -> tuple[str, Any, str]:
        digest = bytes.fromhex(sha256_hex.removeprefix("0x"))
        if len(digest) != 32:
            raise ConfigError(f"model sha256 must be 32 bytes of hex, found {len(digest)} bytes")
        fn = self.models.functions.register(text_id(model_id), digest, sbom_ref)
        return self.models.address, fn, f"register model {model_id}"

    def call_register_agent(self, spiffe_id: str, org: str, role: str, model_id: str,
                            key_fingerprint: bytes = bytes(32)) -> tuple[str, Any, str]:
        fn = self.registry.functions.register(text_id(spiffe_id), text_id(org), text_id(role), text_id(model_id),
                                              key_fingerprint)
        return self.registry.address, fn, f"register agent {spiffe_id}"

    # ------------------------------------------------------------ the flow

    def propose(self, call: tuple[str, Any, str], salt: bytes | None = None) -> Proposal:
        target, fn, description = call
        data = bytes.fromhex(fn._encode_transaction_data().removeprefix("0x"))
        salt = salt or os.urandom(32)
        delay = self.timelock.functions.getMinDelay().call()
        schedule = self.timelock.encode_abi("schedule", [target, 0, data, bytes(32), salt, delay])
        nonce = self.safe.functions.nonce().call()
        safe_tx_hash = self.safe.functions.getTransactionHash(
            self.timelock.address, 0, schedule, 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, nonce).call()
        op_id = self.timelock.functions.hashOperation(target, 0, data, bytes(32), salt).call()
        return Proposal(description, target, "0x" + data.hex(), "0x" + salt.hex(), delay, nonce,
                        "0x" + safe_tx_hash.hex(), "0x" + op_id.hex())

    def approvals(self, proposal: Proposal) -> list[str]:
        h = bytes.fromhex(proposal.safe_tx_hash[2:])
        return [o for o in self.safe.functions.getOwners().call() if self.safe.functions.approvedHashes(o, h).call()]

    def approve(self, proposal: Proposal, owner: LocalAccount) -> Any:
        """Records the owner's approval on-chain (Safe approveHash)."""
        return self.client.transact(owner, self.safe.functions.approveHash(bytes.fromhex(proposal.safe_tx_hash[2:])))

    def submit(self, proposal: Proposal, sender: LocalAccount) -> Any:
        """Executes the Safe transaction: schedules the operation on the timelock.

        The Safe checks the threshold itself: with too few approvals it reverts (GS025/GS026)."""
        if self.safe.functions.nonce().call() != proposal.safe_nonce:
            raise ChainError(f"proposal {proposal.id[:10]} was made for Safe nonce {proposal.safe_nonce}; "
                             "another Safe transaction went first: propose again")
        approvers = sorted(self.approvals(proposal), key=lambda a: int(a, 16))
        # Safe "approved hash" signatures: r = owner, s = 0, v = 1, sorted by owner address
        signatures = b"".join(bytes(12) + bytes.fromhex(a[2:]) + bytes(32) + b"\x01" for a in approvers)
        schedule = self.timelock.encode_abi("schedule", [proposal.target, 0, bytes.fromhex(proposal.data[2:]), bytes(32),
                                                         bytes.fromhex(proposal.salt[2:]), proposal.delay])
        fn = self.safe.functions.execTransaction(self.timelock.address, 0, schedule, 0, 0, 0, 0, ZERO_ADDRESS,
                                                 ZERO_ADDRESS, signatures)
        receipt = self.client.transact(sender, fn)
        if self.safe.events.ExecutionFailure().process_receipt(receipt, errors=DISCARD):
            raise ChainError(f"the Safe executed {proposal.id[:10]} but the timelock call failed")
        return receipt

    def state(self, proposal: Proposal) -> str:
        return OPERATION_STATES[self.timelock.functions.getOperationState(bytes.fromhex(proposal.operation_id[2:])).call()]

    def execute(self, proposal: Proposal, sender: LocalAccount) -> Any:
        """Runs the operation after its delay (anyone may; the timelock enforces the delay)."""
        fn = self.timelock.functions.execute(proposal.target, 0, bytes.fromhex(proposal.data[2:]), bytes(32),
                                             bytes.fromhex(proposal.salt[2:]))
        return self.client.transact(sender, fn)

    def pending(self) -> list[dict[str, Any]]:
        """Scheduled operations not yet executed or cancelled, with the time they become ready."""
        scheduled = self.timelock.events.CallScheduled().get_logs(from_block=self.manifest.deploy_block)
        done = {e["args"]["id"] for e in self.timelock.events.CallExecuted().get_logs(from_block=self.manifest.deploy_block)}
        cancelled = {e["args"]["id"] for e in self.timelock.events.Cancelled().get_logs(from_block=self.manifest.deploy_block)}
        out = []
        for e in scheduled:
            op = e["args"]["id"]
            if op in done or op in cancelled:
                continue
            ready_at = self.timelock.functions.getTimestamp(op).call()
            out.append({"operation_id": "0x" + op.hex(), "target": e["args"]["target"], "data": "0x" + e["args"]["data"].hex(),
                        "ready_at": ready_at, "scheduled_block": e["blockNumber"],
                        "state": OPERATION_STATES[self.timelock.functions.getOperationState(op).call()]})
        return out


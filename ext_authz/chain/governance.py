"""Governance flows over the deployed contracts: Safe multisig -> TimelockController -> target.

A proposal is a Safe transaction calling the timelock: `schedule` for one change,
`scheduleBatch` for several changes proposed together (one operation, one Safe nonce), or
`cancel` to stop a scheduled operation (the Safe is proposer and canceller). Owners approve
the Safe transaction on-chain (`approveHash`); the approval reaching the threshold submits
it. A scheduled operation is visible as `CallScheduled` events for the whole delay; after the
delay anyone may `execute` it. The guardian's emergency actions (revoke an agent, pause the
policy, deprecate a model) bypass the timelock by design. The proposal file format and the
calldata decoding live in `ext_authz.chain.proposals`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3.logs import DISCARD

from ext_authz.chain.artifacts import describe_revert, role_id
from ext_authz.chain.client import ChainClient
from ext_authz.chain.manifest import Manifest
from ext_authz.chain.proposals import Call, Proposal, contract_names, decode_call
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS, text_id

__all__ = ["ALL_HOURS", "OPERATION_STATES", "RULE_FIELDS", "Call", "Governance", "Proposal", "StaleProposal", "rule_tuple"]

RULE_FIELDS = ("enabled", "allowed_data_classes", "max_risk_score", "utc_hours", "max_amount", "approval_threshold",
               "required_model")
ALL_HOURS = 0x00FFFFFF
PREFLIGHT_EXECUTOR = "0x000000000000000000000000000000000000dEaD"  # any EOA: the timelock's executor role is open
OPERATION_STATES = ("Unset", "Waiting", "Ready", "Done")  # TimelockController.OperationState; we add "Cancelled"


def rule_tuple(max_amount: int, approval_threshold: int = 0, data_classes: tuple[int, ...] = (0, 1),
               max_risk_score: int = 100, utc_hours: int = ALL_HOURS, required_model: str | None = None,
               enabled: bool = True) -> tuple:
    mask = 0
    for c in data_classes:
        mask |= 1 << c
    return (enabled, mask, max_risk_score, utc_hours, max_amount, approval_threshold,
            text_id(required_model) if required_model else bytes(32))



class StaleProposal(ChainError):
    """The Safe nonce moved past the proposal's: its Safe transaction can never run; re-propose it."""

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
        """The bare PolicyRegistry.upgrade call; a proposal carries `upgrade_policy_changes` (roles + pause first)."""
        fn = self.policy_registry.functions.upgrade(self.policy_id, to_checksum_address(implementation))
        return self.policy_registry.address, fn, f"upgrade policy to {implementation}"

    def upgrade_policy_changes(self, implementation: str, keep_paused: bool | None = None) -> list[tuple[str, Any, str]]:
        """A policy upgrade that keeps the brakes, as one batch: the timelock takes POLICY_ADMIN_ROLE and every
        current guardian GUARDIAN_ROLE on the new implementation, the new implementation is paused when the
        current one is (or `keep_paused` says so), then PolicyRegistry.upgrade. Refused (ConfigError) when the
        new implementation is not administered by the timelock or reads other registries than the authorizer
        watches (the manifest's)."""
        impl = to_checksum_address(implementation)
        v2 = self.client.contract("RuleBasedPolicy", impl)
        try:
            admin = v2.functions.hasRole(bytes(32), self.timelock.address).call()
            agents, models = v2.functions.registries().call()
            paused_now = v2.functions.paused().call()
        except Exception as e:  # web3 raises many types for a revert or missing code
            raise ConfigError(f"{impl} is not a RuleBasedPolicy (AccessControl, Pausable, registries()): "
                              f"{describe_revert(e)}") from e
        if not admin:
            raise ConfigError(f"the timelock {self.timelock.address} is not DEFAULT_ADMIN on {impl}: deploy the new "
                              "implementation with the timelock as its admin, or governance cannot set its rules")
        if (agents.lower(), models.lower()) != (self.manifest.registry.lower(), self.manifest.models.lower()):
            raise ConfigError(f"{impl} reads registries {agents}, {models}; the authorizer watches "
                              f"{self.manifest.registry}, {self.manifest.models} (the manifest's): refusing an upgrade "
                              "whose state changes the authorizer would not see")
        if keep_paused is None:
            keep_paused = self.current_policy().functions.paused().call()
        changes: list[tuple[str, Any, str]] = [
            (impl, v2.functions.grantRole(role_id("POLICY_ADMIN_ROLE"), self.timelock.address),
             "the timelock may set rules on (and unpause) the new policy")]
        for g in self.guardians():
            changes.append((impl, v2.functions.grantRole(role_id("GUARDIAN_ROLE"), g), f"guardian {g} may pause the new policy"))
        if keep_paused and not paused_now:
            changes.append((impl, v2.functions.pause(), "pause the new policy: the current one is paused"))
        changes.append(self.call_upgrade_policy(impl))
        return changes

    def upgrade_warnings(self, calls: Sequence[Call]) -> list[str]:
        """What a (possibly hand-made) operation's PolicyRegistry.upgrade would lose: the timelock's or a guardian's
        role on the new implementation, the registries the authorizer watches. For owners before approving and
        for the guardian deciding whether to cancel."""
        upgrade = self.policy_registry.functions.upgrade(self.policy_id, ZERO_ADDRESS)._encode_transaction_data()[:10]
        grants = {(c.target.lower(), c.data_bytes[4:36], c.data_bytes[48:68].hex()) for c in calls
                  if len(c.data_bytes) == 68 and c.data_bytes[:4] == keccak(text="grantRole(bytes32,address)")[:4]}
        out = []
        for c in calls:
            if c.target.lower() != self.policy_registry.address.lower() or not c.data.lower().startswith(upgrade.lower()):
                continue
            impl = to_checksum_address(c.data_bytes[4 + 32 + 12:4 + 64])
            v2 = self.client.contract("RuleBasedPolicy", impl)
            need = [("POLICY_ADMIN_ROLE", self.timelock.address, "the timelock")] + [
                ("GUARDIAN_ROLE", g, f"guardian {g}") for g in self.guardians()]
            for role, who, what in need:
                try:
                    held = v2.functions.hasRole(role_id(role), who).call()
                except Exception:  # web3 raises many types for a revert or missing code
                    held = False
                if not held and (impl.lower(), role_id(role), who.lower()[2:]) not in grants:
                    out.append(f"the upgrade to {impl} leaves {what} without {role} on it")
            try:
                agents, models = v2.functions.registries().call()
                if (agents.lower(), models.lower()) != (self.manifest.registry.lower(), self.manifest.models.lower()):
                    out.append(f"the upgrade to {impl} reads registries {agents}, {models}, not the manifest's")
            except Exception:  # web3 raises many types for a revert or missing code
                out.append(f"the upgrade to {impl}: not a RuleBasedPolicy (no registries())")
        return out

    GUARDED = (("registry", "AgentRegistry"), ("models", "ModelRegistry"), ("approvers", "ApproverRegistry"))

    def guardians(self) -> list[str]:
        """Who holds GUARDIAN_ROLE on the AgentRegistry now: the deployment's guardian and every account granted
        it since (RoleGranted events), each confirmed with hasRole."""
        role = role_id("GUARDIAN_ROLE")
        events = [*self.registry.events.RoleGranted().get_logs(from_block=self.manifest.deploy_block,
                                                                argument_filters={"role": role}),
                  *self.registry.events.RoleRevoked().get_logs(from_block=self.manifest.deploy_block,
                                                                argument_filters={"role": role})]
        held: dict[str, None] = {to_checksum_address(self.manifest.guardian): None}
        for e in sorted(events, key=lambda e: (e["blockNumber"], e["logIndex"])):
            account = to_checksum_address(e["args"]["account"])
            if e["event"] == "RoleGranted":
                held[account] = None
            else:
                held.pop(account, None)
        return [g for g in held if self.registry.functions.hasRole(role, g).call()]

    def rotate_guardian_changes(self, old: str, new: str) -> list[tuple[str, Any, str]]:
        """Guardian rotation, one batch: GUARDIAN_ROLE from `old` to `new` on every guarded contract and the
        current policy, CANCELLER_ROLE on the timelock. Every call is a guardian-power grant or revoke, so the
        timelock marks it a rotation and the (possibly stolen) old guardian key cannot cancel it."""
        old, new = to_checksum_address(old), to_checksum_address(new)
        if old == new:
            raise ConfigError("rotate-guardian: the new guardian is the old one")
        if old not in self.guardians():
            raise ConfigError(f"rotate-guardian: {old} is not a guardian now (guardians: {', '.join(self.guardians())})")
        contracts = [getattr(self, f) for f, _ in self.GUARDED] + [self.current_policy()]
        changes: list[tuple[str, Any, str]] = []
        guardian, canceller = role_id("GUARDIAN_ROLE"), role_id("CANCELLER_ROLE")
        for c in contracts:
            changes.append((c.address, c.functions.revokeRole(guardian, old), f"GUARDIAN_ROLE from {old}"))
            changes.append((c.address, c.functions.grantRole(guardian, new), f"GUARDIAN_ROLE to {new}"))
        changes.append((self.timelock.address, self.timelock.functions.revokeRole(canceller, old), f"CANCELLER_ROLE from {old}"))
        changes.append((self.timelock.address, self.timelock.functions.grantRole(canceller, new), f"CANCELLER_ROLE to {new}"))
        return changes

    def call_restore_model(self, model_id: str) -> tuple[str, Any, str]:
        """ModelRegistry.restore: undo a guardian's deprecation (governed)."""
        return self.models.address, self.models.functions.restore(text_id(model_id)), f"restore model {model_id}"

    SAFE_OWNER_CALLS = ("addOwnerWithThreshold", "removeOwner", "swapOwner", "changeThreshold")

    def call_safe_owners(self, kind: str, *, address: str = ZERO_ADDRESS, old: str = ZERO_ADDRESS,
                         new: str = ZERO_ADDRESS, threshold: int = 0) -> tuple[str, Any, str]:
        """An owner or threshold change of the Safe, made by the timelock as the Safe's module
        (`execTransactionFromModule(safe, 0, <owner call>, CALL)`): the Safe's guard refuses it as a Safe transaction."""
        owners = [to_checksum_address(o) for o in self.safe.functions.getOwners().call()]
        sentinel = "0x0000000000000000000000000000000000000001"

        def prev_of(owner: str) -> str:
            owner = to_checksum_address(owner)
            if owner not in owners:
                raise ConfigError(f"{owner} is not an owner of the Safe (owners: {', '.join(owners)})")
            i = owners.index(owner)
            return sentinel if i == 0 else owners[i - 1]

        if kind == "add-owner":
            inner = self.safe.encode_abi("addOwnerWithThreshold", [to_checksum_address(address), threshold])
            what = f"add Safe owner {address}, threshold {threshold}"
        elif kind == "remove-owner":
            inner = self.safe.encode_abi("removeOwner", [prev_of(address), to_checksum_address(address), threshold])
            what = f"remove Safe owner {address}, threshold {threshold}"
        elif kind == "swap-owner":
            inner = self.safe.encode_abi("swapOwner", [prev_of(old), to_checksum_address(old), to_checksum_address(new)])
            what = f"replace Safe owner {old} by {new}"
        elif kind == "change-threshold":
            inner = self.safe.encode_abi("changeThreshold", [threshold])
            what = f"Safe threshold to {threshold}"
        else:
            raise ConfigError(f"unknown Safe owner change {kind!r}")
        fn = self.safe.functions.execTransactionFromModule(self.safe.address, 0, inner, 0)
        return self.safe.address, fn, what

    def guardian_cancel(self, operation_id: str, guardian: LocalAccount) -> Any:
        """The guardian cancels a Waiting or Ready operation at once (CANCELLER_ROLE on the timelock);
        the timelock refuses for a guardian rotation."""
        state = self.operation_state(operation_id)
        if state not in ("Waiting", "Ready"):
            raise ConfigError(f"operation {operation_id[:10]} is {state}: only a Waiting or Ready operation can be cancelled")
        return self.client.transact(guardian, self.timelock.functions.cancel(bytes.fromhex(operation_id.removeprefix("0x"))))

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

    def call_set_key(self, spiffe_id: str, key_fingerprint: bytes) -> tuple[str, Any, str]:
        """AgentRegistry.setKey: bind the agent to another certificate key (32 zero bytes: SPIFFE ID only)."""
        if len(key_fingerprint) != 32:
            raise ConfigError(f"a key fingerprint is 32 bytes (SHA-256 of the SPKI), found {len(key_fingerprint)}")
        fn = self.registry.functions.setKey(text_id(spiffe_id), key_fingerprint)
        what = "SPIFFE ID only" if key_fingerprint == bytes(32) else "0x" + key_fingerprint.hex()[:16] + ".."
        return self.registry.address, fn, f"set key of {spiffe_id} to {what}"

    def call_set_model(self, spiffe_id: str, model_id: str) -> tuple[str, Any, str]:
        """AgentRegistry.setModel: move the agent to another model (its ModelRegistry entry decides if it is approved)."""
        fn = self.registry.functions.setModel(text_id(spiffe_id), text_id(model_id))
        return self.registry.address, fn, f"set model of {spiffe_id} to {model_id}"

    # ------------------------------------------------------------ building proposals

    def _safe_tx_hash(self, data: str | bytes, nonce: int) -> bytes:
        return self.safe.functions.getTransactionHash(
            self.timelock.address, 0, data, 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, nonce).call()

    def safe_data(self, proposal: Proposal) -> str:
        """The calldata the Safe sends to the timelock for this proposal."""
        salt = bytes.fromhex(proposal.salt[2:])
        if proposal.action == "cancel":
            return self.timelock.encode_abi("cancel", [bytes.fromhex(proposal.operation_id[2:])])
        if proposal.batch:
            return self.timelock.encode_abi("scheduleBatch", [proposal.targets, proposal.values, proposal.datas,
                                                              bytes(32), salt, proposal.delay])
        c = proposal.calls[0]
        return self.timelock.encode_abi("schedule", [to_checksum_address(c.target), c.value, c.data_bytes, bytes(32),
                                                     salt, proposal.delay])

    def _operation_id(self, calls: Sequence[Call], batch: bool, salt: bytes) -> bytes:
        if batch:
            return self.timelock.functions.hashOperationBatch(
                [to_checksum_address(c.target) for c in calls], [c.value for c in calls], [c.data_bytes for c in calls],
                bytes(32), salt).call()
        c = calls[0]
        return self.timelock.functions.hashOperation(to_checksum_address(c.target), c.value, c.data_bytes, bytes(32),
                                                     salt).call()

    def _finish(self, proposal: Proposal) -> Proposal:
        proposal.safe_tx_hash = "0x" + self._safe_tx_hash(self.safe_data(proposal), proposal.safe_nonce).hex()
        return proposal

    def propose(self, change: tuple[str, Any, str] | Sequence[tuple[str, Any, str]], salt: bytes | None = None,
                batch: bool | None = None, description: str | None = None) -> Proposal:
        """One change (`schedule`) or a list of changes (`scheduleBatch`: one operation, one Safe nonce).

        A change is `(target, web3 function call, description)` as the `call_*` methods return."""
        changes = [change] if isinstance(change, tuple) else list(change)
        if not changes:
            raise ConfigError("a proposal needs at least one change")
        batch = len(changes) > 1 if batch is None else batch
        if not batch and len(changes) != 1:
            raise ConfigError(f"{len(changes)} changes go in one batch proposal, not a single one")
        calls = [Call(to_checksum_address(target), 0, fn._encode_transaction_data(), text)
                 for target, fn, text in changes]
        salt = salt or os.urandom(32)
        proposal = Proposal(
            description=description or "; ".join(c.description for c in calls), calls=calls, batch=batch,
            salt="0x" + salt.hex(), delay=self.timelock.functions.getMinDelay().call(),
            safe_nonce=self.safe.functions.nonce().call(), safe_tx_hash="",
            operation_id="0x" + self._operation_id(calls, batch, salt).hex())
        return self._finish(proposal)

    def propose_cancel(self, target: Proposal | str) -> Proposal:
        """A Safe transaction calling `timelock.cancel(id)`, for a proposal or a bare operation id (from `pending`)."""
        if isinstance(target, Proposal):
            if target.action != "schedule":
                raise ConfigError(f"proposal {target.id[:10]} is itself a cancellation; cancel the operation it targets")
            op_id, calls, batch, salt, delay = target.operation_id, target.calls, target.batch, target.salt, target.delay
            what = target.description
        else:
            op_id = target.lower()
            scheduled = self.scheduled_calls(op_id)
            if not scheduled:
                raise ConfigError(f"no timelock operation {op_id} was ever scheduled")
            calls, batch, salt, delay = scheduled, len(scheduled) > 1, "0x" + bytes(32).hex(), 0
            what = f"operation {op_id[:10]}"
        state = self.operation_state(op_id)
        if state not in ("Waiting", "Ready"):
            raise ConfigError(f"operation {op_id[:10]} is {state}: only a Waiting or Ready operation can be cancelled")
        proposal = Proposal(description=f"cancel: {what}", calls=list(calls), batch=batch, salt=salt, delay=delay,
                            safe_nonce=self.safe.functions.nonce().call(), safe_tx_hash="", operation_id=op_id,
                            action="cancel")
        return self._finish(proposal)

    def repropose(self, stale: Proposal) -> Proposal:
        """The same calls (same salt, so the same operation id) for the Safe's current nonce.

        Approvals of the stale Safe transaction do not carry over: owners approve the new id."""
        self.verify(stale)
        if not self.is_stale(stale):
            raise ConfigError(f"proposal {stale.id[:10]} is not stale (Safe nonce {stale.safe_nonce} is still next or it "
                              "already ran): approve it as it is")
        fresh = Proposal(description=stale.description, calls=list(stale.calls), batch=stale.batch, salt=stale.salt,
                         delay=self.timelock.functions.getMinDelay().call(),
                         safe_nonce=self.safe.functions.nonce().call(), safe_tx_hash="",
                         operation_id=stale.operation_id, action=stale.action)
        if fresh.action == "cancel":
            state = self.operation_state(fresh.operation_id)
            if state not in ("Waiting", "Ready"):
                raise ConfigError(f"operation {fresh.operation_id[:10]} is {state}: nothing left to cancel")
        return self._finish(fresh)

    def verify(self, proposal: Proposal) -> Proposal:
        """The proposal as its calls define it: the timelock operation id and the Safe transaction hash are
        recomputed from the calls, salt, delay and nonce (on-chain, with the deployed timelock and Safe), and a
        file whose recorded hashes differ is refused. For a cancel, the calls it lists must be the ones the chain
        scheduled under that operation id. Returns a copy carrying only the recomputed hashes: nothing the file
        says about hashes is trusted."""
        salt = bytes.fromhex(proposal.salt.removeprefix("0x"))
        if len(salt) != 32:
            raise ConfigError(f"proposal {proposal.id[:10]}: salt must be 32 bytes, found {len(salt)}")
        if proposal.action == "schedule":
            min_delay = self.timelock.functions.getMinDelay().call()
            if proposal.delay < min_delay:
                raise ConfigError(f"proposal {proposal.id[:10]}: delay {proposal.delay}s is below the timelock's minimum "
                                  f"{min_delay}s: the timelock would refuse it; do not approve it")
            op = "0x" + self._operation_id(proposal.calls, proposal.batch, salt).hex()
            if op != proposal.operation_id.lower():
                raise ConfigError(f"proposal {proposal.id[:10]}: its calls hash to operation {op}, "
                                  f"the file says {proposal.operation_id}: do not approve it")
        else:
            op = proposal.operation_id.lower()
            if len(bytes.fromhex(op.removeprefix("0x"))) != 32:
                raise ConfigError(f"proposal {proposal.id[:10]}: operation id must be 32 bytes")
            scheduled = [(c.target.lower(), c.value, c.data.lower()) for c in self.scheduled_calls(op)]
            listed = [(c.target.lower(), c.value, c.data.lower()) for c in proposal.calls]
            if scheduled != listed:
                raise ConfigError(f"cancel proposal {proposal.id[:10]}: the calls it lists are not the ones the chain "
                                  f"scheduled as operation {op[:10]} ({len(scheduled)} call(s)): do not approve it")
        expected = "0x" + self._safe_tx_hash(self.safe_data(proposal), proposal.safe_nonce).hex()
        if expected != proposal.safe_tx_hash.lower():
            raise ConfigError(f"proposal file {proposal.id[:10]}: its contents hash to Safe transaction {expected}, "
                              f"not to its id {proposal.safe_tx_hash}; do not approve it")
        return dataclasses.replace(proposal, safe_tx_hash=expected, operation_id=op)

    def safe_typed_data(self, proposal: Proposal) -> dict[str, Any]:
        """The Safe transaction as EIP-712 typed data (eth_signTypedData_v4), for a hardware wallet or an offline
        signer: its hash is the proposal's Safe transaction hash (recomputed, never the file's)."""
        return {
            "types": {
                "EIP712Domain": [{"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
                "SafeTx": [{"name": n, "type": t} for n, t in (
                    ("to", "address"), ("value", "uint256"), ("data", "bytes"), ("operation", "uint8"),
                    ("safeTxGas", "uint256"), ("baseGas", "uint256"), ("gasPrice", "uint256"), ("gasToken", "address"),
                    ("refundReceiver", "address"), ("nonce", "uint256"))],
            },
            "primaryType": "SafeTx",
            "domain": {"chainId": self.client.w3.eth.chain_id, "verifyingContract": self.safe.address},
            "message": {"to": self.timelock.address, "value": 0, "data": self.safe_data(proposal), "operation": 0,
                        "safeTxGas": 0, "baseGas": 0, "gasPrice": 0, "gasToken": ZERO_ADDRESS,
                        "refundReceiver": ZERO_ADDRESS, "nonce": proposal.safe_nonce},
        }

    def offline_signer(self, proposal: Proposal, signature: str | bytes) -> str:
        """The owner whose EIP-712 signature of the proposal's Safe transaction this is (ConfigError otherwise)."""
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        raw = signature if isinstance(signature, bytes) else bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65 or raw[64] not in (27, 28):
            raise ConfigError("a Safe owner signature is 65 bytes r || s || v with v 27 or 28 (EIP-712, not eth_sign)")
        try:
            signer = Account.recover_message(encode_typed_data(full_message=self.safe_typed_data(proposal)), signature=raw)
        except Exception as e:  # eth_keys raises several types for a malformed signature
            raise ConfigError(f"signature does not recover: {e}") from e
        owners = {o.lower() for o in self.safe.functions.getOwners().call()}
        if signer.lower() not in owners:
            raise ConfigError(f"the signature is by {signer}, not an owner of the Safe: it signs another transaction "
                              "(wrong proposal, nonce or chain) or comes from another key")
        return to_checksum_address(signer)

    def preflight(self, changes: Sequence[tuple[str, Any, str]]) -> list[str]:
        """The changes run in order, as the timelock will run them after the delay, in a local EVM (pyrevm) forked
        from the chain head: each revert, in words. Earlier changes of a batch take effect for the later ones, so
        `register-model` then `set-model` passes; a revert means the operation would fail when executed."""
        import re

        import pyrevm

        head = self.client.w3.eth.get_block("latest")
        evm = pyrevm.EVM(fork_url=self.client.rpc_url, fork_block=str(head["number"]), spec_id="Cancun")
        delay = self.timelock.functions.getMinDelay().call()
        evm.set_block_env(pyrevm.BlockEnv(number=head["number"] + 1, timestamp=head["timestamp"] + delay + 1))
        problems = []
        for i, (target, fn, text) in enumerate(changes, 1):
            # each change as its own ready operation of the real timelock (its `_timestamps[id]`, slot 1 of
            # TimelockController, set to 2: ready), executed by anyone: the call comes from the timelock itself
            target, data = to_checksum_address(target), bytes.fromhex(fn._encode_transaction_data().removeprefix("0x"))
            salt = i.to_bytes(32, "big")
            op = self.timelock.functions.hashOperation(target, 0, data, bytes(32), salt).call()
            evm.insert_account_storage(self.timelock.address, int.from_bytes(keccak(op + (1).to_bytes(32, "big")), "big"), 2)
            execute = self.timelock.encode_abi("execute", [target, 0, data, bytes(32), salt])
            try:
                evm.message_call(PREFLIGHT_EXECUTOR, self.timelock.address, bytes.fromhex(execute.removeprefix("0x")))
            except BaseException as e:  # pyrevm raises reverts (and pyo3 panics) as BaseException subclasses
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                found = re.search(r"0x[0-9a-fA-F]{8,}", str(e))
                why = describe_revert(type("Revert", (Exception,), {"data": found.group(0) if found else ""})()) \
                    if found else str(e)[:200]
                problems.append(f"change {i} ({text}) would revert when executed: {why}")
                break  # the operation fails as a whole; later changes never run
        return problems

    # ------------------------------------------------------------ approving and submitting

    def approvals(self, proposal: Proposal) -> list[str]:
        h = bytes.fromhex(proposal.safe_tx_hash[2:])
        return [o for o in self.safe.functions.getOwners().call() if self.safe.functions.approvedHashes(o, h).call()]

    def safe_executed(self, proposal: Proposal) -> bool:
        logs = self.safe.events.ExecutionSuccess().get_logs(
            from_block=self.manifest.deploy_block, argument_filters={"txHash": bytes.fromhex(proposal.safe_tx_hash[2:])})
        return bool(logs)

    def is_stale(self, proposal: Proposal) -> bool:
        """Another Safe transaction took the proposal's nonce: its Safe transaction can never run."""
        return self.safe.functions.nonce().call() > proposal.safe_nonce and not self.safe_executed(proposal)

    def stale_message(self, proposal: Proposal) -> str:
        return (f"proposal {proposal.id[:12]} was made for Safe nonce {proposal.safe_nonce}, but the Safe is at nonce "
                f"{self.safe.functions.nonce().call()}: another Safe transaction went first, so this one can never run "
                f"and its approvals are void. Re-propose the same calls for the current nonce with "
                f"`sealgate gov repropose {proposal.id[:12]}` and approve the new id (several changes at once: "
                "`sealgate gov propose --batch FILE`, one operation and one nonce)")

    def _check_not_stale(self, proposal: Proposal) -> None:
        if self.is_stale(proposal):
            raise StaleProposal(self.stale_message(proposal))

    def approve(self, proposal: Proposal, owner: LocalAccount) -> Any:
        """Records the owner's approval on-chain (Safe approveHash) of the hash recomputed from the proposal's
        calls; refuses a file whose hashes do not match (`verify`) or a stale proposal first."""
        proposal = self.verify(proposal)
        self._check_not_stale(proposal)
        return self.client.transact(owner, self.safe.functions.approveHash(bytes.fromhex(proposal.safe_tx_hash[2:])))

    def submit(self, proposal: Proposal, sender: LocalAccount, offline: Sequence[str | bytes] = ()) -> Any:
        """Executes the Safe transaction: schedules (or cancels) the operation on the timelock.

        `offline`: EIP-712 signatures of owners who signed `safe_typed_data` without sending a transaction (a
        hardware wallet); they join the on-chain approvals. The Safe checks the threshold itself: with too few it
        reverts (GS020/GS025/GS026)."""
        proposal = self.verify(proposal)
        if self.safe.functions.nonce().call() != proposal.safe_nonce:
            if self.safe_executed(proposal):
                raise ChainError(f"proposal {proposal.id[:12]} was already submitted")
            raise StaleProposal(self.stale_message(proposal))
        if proposal.action == "cancel":
            state = self.operation_state(proposal.operation_id)
            if state not in ("Waiting", "Ready"):
                raise ChainError(f"operation {proposal.operation_id[:10]} is {state}: nothing left to cancel")
        # Safe "approved hash" signatures: r = owner, s = 0, v = 1; ECDSA ones as signed; sorted by owner address
        by_owner: dict[str, bytes] = {a.lower(): bytes(12) + bytes.fromhex(a[2:]) + bytes(32) + b"\x01"
                                      for a in self.approvals(proposal)}
        for sig in offline:
            owner = self.offline_signer(proposal, sig)
            by_owner.setdefault(owner.lower(), sig if isinstance(sig, bytes) else bytes.fromhex(sig.removeprefix("0x")))
        signatures = b"".join(by_owner[o] for o in sorted(by_owner, key=lambda a: int(a, 16)))
        fn = self.safe.functions.execTransaction(self.timelock.address, 0, self.safe_data(proposal), 0, 0, 0, 0,
                                                 ZERO_ADDRESS, ZERO_ADDRESS, signatures)
        receipt = self.client.transact(sender, fn)
        if self.safe.events.ExecutionFailure().process_receipt(receipt, errors=DISCARD):
            raise ChainError(f"the Safe executed {proposal.id[:10]} but the timelock call failed")
        return receipt

    # ------------------------------------------------------------ the operation

    def operation_state(self, operation_id: str | bytes) -> str:
        """Unset, Waiting, Ready, Done, or Cancelled (Unset again, with a `Cancelled` event)."""
        op = operation_id if isinstance(operation_id, bytes) else bytes.fromhex(operation_id.removeprefix("0x"))
        state = OPERATION_STATES[self.timelock.functions.getOperationState(op).call()]
        if state == "Unset" and self.timelock.events.Cancelled().get_logs(
                from_block=self.manifest.deploy_block, argument_filters={"id": op}):
            return "Cancelled"
        return state

    def state(self, proposal: Proposal) -> str:
        return self.operation_state(proposal.operation_id)

    def ready_at(self, proposal_or_op: Proposal | str) -> int:
        """Unix time (chain clock) the operation becomes executable; 0 when not scheduled, 1 when done."""
        op = proposal_or_op.operation_id if isinstance(proposal_or_op, Proposal) else proposal_or_op
        return self.timelock.functions.getTimestamp(bytes.fromhex(op[2:])).call()

    def chain_time(self) -> int:
        return self.client.w3.eth.get_block("latest")["timestamp"]

    def execute(self, proposal: Proposal, sender: LocalAccount) -> Any:
        """Runs the operation after its delay (anyone may; the timelock enforces the delay)."""
        proposal = self.verify(proposal)
        if proposal.action != "schedule":
            raise ConfigError(f"proposal {proposal.id[:10]} is a cancellation: it takes effect when the threshold approves it")
        salt = bytes.fromhex(proposal.salt[2:])
        if proposal.batch:
            fn = self.timelock.functions.executeBatch(proposal.targets, proposal.values, proposal.datas, bytes(32), salt)
        else:
            c = proposal.calls[0]
            fn = self.timelock.functions.execute(to_checksum_address(c.target), c.value, c.data_bytes, bytes(32), salt)
        return self.client.transact(sender, fn)

    # ------------------------------------------------------------ what is scheduled

    def names(self, calls: Sequence[Call] = ()) -> dict[str, str]:
        """Address -> contract name for decoding: the manifest's contracts, every policy implementation the
        registry has had, and the new implementation a PolicyRegistry.upgrade among `calls` points at."""
        extra = {}
        count = self.policy_registry.functions.versionCount(self.policy_id).call()
        for v in range(1, count + 1):
            extra[self.policy_registry.functions.versionAt(self.policy_id, v).call()[0]] = "RuleBasedPolicy"
        upgrade = self.policy_registry.functions.upgrade(self.policy_id, ZERO_ADDRESS)._encode_transaction_data()[:10]
        for c in calls:
            if c.target.lower() == self.policy_registry.address.lower() and c.data.lower().startswith(upgrade.lower()):
                extra[to_checksum_address(c.data_bytes[4 + 32 + 12:4 + 64])] = "RuleBasedPolicy"
        return contract_names(self.manifest, extra)

    def labels(self, names: dict[str, str] | None = None) -> dict[str, str]:
        """Address -> what it is, for the arguments of decoded calls: contracts, guardians, owners, anchorer."""
        out = dict(self.names() if names is None else names)
        out[to_checksum_address(self.manifest.anchorer)] = "anchorer"
        for i, o in enumerate(self.safe.functions.getOwners().call()):
            out[to_checksum_address(o)] = f"Safe owner {i + 1}"
        for g in self.guardians():
            out[g] = "guardian"
        if to_checksum_address(self.manifest.guardian) not in out:
            out[to_checksum_address(self.manifest.guardian)] = "guardian at deployment"
        out[ZERO_ADDRESS] = "zero address"
        return out

    def describe(self, call: Call, names: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> str:
        """The call in words: contract.function(argument=value, ...), known addresses and roles named."""
        names = self.names() if names is None else names
        labels = self.labels(names) if labels is None else labels
        return decode_call(names.get(to_checksum_address(call.target)), call.data_bytes, labels, names)

    def scheduled_calls(self, operation_id: str) -> list[Call]:
        logs = self.timelock.events.CallScheduled().get_logs(
            from_block=self.manifest.deploy_block, argument_filters={"id": bytes.fromhex(operation_id[2:])})
        latest = {}
        for e in logs:  # a cancelled operation may be scheduled again: the last scheduling wins
            latest[e["args"]["index"]] = Call(e["args"]["target"], e["args"]["value"], "0x" + e["args"]["data"].hex())
        return [latest[i] for i in sorted(latest)]

    def pending(self) -> list[dict[str, Any]]:
        """Scheduled operations not yet executed or cancelled: state, ready time (unix) and every call, decoded."""
        scheduled = self.timelock.events.CallScheduled().get_logs(from_block=self.manifest.deploy_block)
        ops: dict[bytes, dict[str, Any]] = {}
        for e in scheduled:
            op = ops.setdefault(e["args"]["id"], {"scheduled_block": e["blockNumber"], "calls": {}})
            op["calls"][e["args"]["index"]] = Call(e["args"]["target"], e["args"]["value"], "0x" + e["args"]["data"].hex())
        out = []
        for op_id, op in ops.items():
            state = OPERATION_STATES[self.timelock.functions.getOperationState(op_id).call()]
            if state not in ("Waiting", "Ready"):  # Done, or Unset after a cancel
                continue
            calls = [op["calls"][i] for i in sorted(op["calls"])]
            names = self.names(calls)
            labels = self.labels(names)
            out.append({"operation_id": "0x" + op_id.hex(), "state": state,
                        "ready_at": self.timelock.functions.getTimestamp(op_id).call(),
                        "scheduled_block": op["scheduled_block"], "batch": len(calls) > 1,
                        "target": calls[0].target, "data": calls[0].data, "calls": calls,
                        "decoded": [self.describe(c, names, labels) for c in calls],
                        "guardian_rotation": self.timelock.functions.isGuardianRotation(op_id).call()})
        return out

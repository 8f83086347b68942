"""Deployment: registries, policy, anchor, a Safe and the timelock that ends up owning everything.

Two entry points over one deployment:

- `deploy_plan`: production. The deployer key comes from the plan's source (environment,
  encrypted keystore or PKCS#11 token), the roles are the plan's addresses, and the plan's
  models, agents, rules and approvers are seeded in the bootstrap window.
- `deploy_all`: the local stack. anvil's public development keys, refused on any chain but 31337.

Both check everything before the first transaction: the chain id, that no development
account is given a role on a real chain, and the existing manifest -- unreadable, invalid, for
another chain or pointing at contracts without code is an error; valid and live, it is reused
and nothing is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3.logs import DISCARD

from ext_authz.chain.artifacts import artifact, role_id
from ext_authz.chain.client import ChainClient, TxSigner
from ext_authz.chain.deployer_key import open_deployer
from ext_authz.chain.dev import DEV_KEYS, DEV_OWNER_ACCOUNTS, dev_account
from ext_authz.chain.governance import Governance, rule_tuple
from ext_authz.chain.manifest import Manifest
from ext_authz.chain.plan import DEV_CHAIN_ID, DEV_KEYS_REFUSED, DeployPlan, refuse_dev_accounts
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS

SAFE_THRESHOLD = 3
DEFAULT_TIMELOCK_DELAY = 24 * 3600
POLICY_NAME = "sealgate.default"


@dataclass
class Bootstrap:
    """What a bootstrap hook may use before the deployer hands everything to the timelock.

    `gov` builds the same calls governance proposals carry (`call_register_model`, ...); in the
    bootstrap window the deployer sends them directly."""

    client: ChainClient
    deployer: TxSigner
    registry: Any
    models: Any
    policy: Any
    approvers: Any
    gov: Governance
    signing_keys: Any = None  # SigningKeyRegistry (the deployer holds KEY_ADMIN_ROLE in the window)

    def send(self, change: tuple[str, Any, str]) -> Any:
        """Sends one `Governance.call_*` change as the deployer."""
        _target, fn, _text = change
        return self.client.transact(self.deployer, fn)


@dataclass(frozen=True)
class Roles:
    """Who holds what once the deployer is gone."""

    owners: tuple[str, ...]
    threshold: int
    guardian: str
    anchorer: str
    delay_seconds: int


def deploy_all(rpc_url: str, manifest_path: str | Path, *, delay_seconds: int = DEFAULT_TIMELOCK_DELAY,
               owners: tuple[str, ...] | None = None, threshold: int = SAFE_THRESHOLD,
               keys: dict[str, str] | None = None, bootstrap: Callable[[Bootstrap], None] | None = None) -> Manifest:
    """The local stack's deployment: anvil's development keys (or `keys`) for the deployer, anchorer and
    guardian, dev accounts 3-7 as Safe owners. Refused (ConfigError, nothing sent) on any chain but
    31337 when a development account would hold a role: those keys are public."""
    client = ChainClient(rpc_url)
    chain_id = _chain_id(client)
    keys = keys or DEV_KEYS
    deployer, anchorer, guardian = (Account.from_key(keys[r]) for r in ("deployer", "anchorer", "guardian"))
    owners = owners or tuple(dev_account(i).address for i in DEV_OWNER_ACCOUNTS)
    if chain_id != DEV_CHAIN_ID and keys is DEV_KEYS:
        raise ConfigError(f"refusing to deploy with anvil's development keys to chain {chain_id}: {DEV_KEYS_REFUSED}. "
                          f"They are for the local anvil chain ({DEV_CHAIN_ID}) only. Write a deploy plan with your own "
                          "owners, guardian, anchorer and deployer key (see deploy/plan.example.yaml) and run "
                          "`sealgate deploy --plan plan.yaml`")
    named = {"deployer": deployer.address, "guardian": guardian.address, "anchorer": anchorer.address,
             **{f"owners[{i}]": o for i, o in enumerate(owners)}}
    refuse_dev_accounts(chain_id, named)
    if not 1 <= threshold <= len(owners):
        raise ConfigError(f"Safe threshold must be in 1..{len(owners)}, found {threshold}")
    roles = Roles(tuple(owners), threshold, guardian.address, anchorer.address, delay_seconds)
    existing = existing_deployment(client, chain_id, manifest_path)
    if existing is not None:
        return existing
    return _deploy(client, chain_id, rpc_url, Path(manifest_path), deployer, roles, bootstrap)


def deploy_plan(plan: DeployPlan, rpc_url: str, manifest_path: str | Path) -> Manifest:
    """Production deployment from a validated plan (`ext_authz.chain.plan.load_plan`).

    Refuses a chain whose id is not the plan's; reuses a live manifest only when it records the
    plan's Safe, delay, guardian and anchorer (changes after deployment go through governance)."""
    client = ChainClient(rpc_url)
    chain_id = _chain_id(client)
    if chain_id != plan.chain_id:
        raise ConfigError(f"{plan.source} is for chain {plan.chain_id}, but {rpc_url} is chain {chain_id}: "
                          "refusing to deploy (wrong RPC endpoint, or the wrong plan)")
    refuse_dev_accounts(chain_id, plan.role_addresses())
    roles = Roles(plan.safe.owners, plan.safe.threshold, plan.guardian, plan.anchorer, plan.timelock_delay_seconds)
    existing = existing_deployment(client, chain_id, manifest_path)
    if existing is not None:
        _check_matches(existing, roles, plan.source, manifest_path)
        return existing
    with open_deployer(plan.deployer_key) as deployer:
        refuse_dev_accounts(chain_id, {f"the deployer key ({plan.deployer_key.describe()})": deployer.address})
        for what, address in plan.role_addresses().items():
            if address.lower() == deployer.address.lower():
                raise ConfigError(f"{plan.source}: the deployer {deployer.address} is also {what}: the deployer key "
                                  "is for the bootstrap only and keeps no role; give the role another address")
        try:
            balance = client.w3.eth.get_balance(to_checksum_address(deployer.address))
        except Exception as e:  # web3 raises many unrelated types; one boundary here
            raise ChainError(f"{rpc_url}: cannot read the deployer's balance: {e}") from e
        if balance == 0:
            raise ConfigError(f"the deployer {deployer.address} ({plan.deployer_key.describe()}) has no funds on chain "
                              f"{chain_id}: fund it for the deployment's gas first")
        return _deploy(client, chain_id, rpc_url, Path(manifest_path), deployer, roles, lambda b: seed_plan(plan, b))


def seed_plan(plan: DeployPlan, b: Bootstrap) -> None:
    """The plan's initial state, with the same calls (and encodings) governance proposals use."""
    for m in plan.models:
        b.send(b.gov.call_register_model(m.id, m.sha256, m.sbom))
    for a in plan.agents:
        b.send(b.gov.call_register_agent(a.spiffe_id, a.org, a.role, a.model, a.key_fingerprint))
    for r in plan.rules:
        rule = rule_tuple(r.max_amount, r.approval_threshold, r.data_class_indexes, r.max_risk, r.utc_hours_mask,
                          r.required_model, r.enabled)
        b.send(b.gov.call_set_rule(r.role, r.action_type, r.target, rule))
    for p in plan.approvers:
        b.send(b.gov.call_register_approver(p.name, p.x))
    if plan.signing_keys:
        from ext_authz.chain.keys import call_add_key

        for k in plan.signing_keys:
            b.send(call_add_key(b.client, b.signing_keys.address, k.jwk, k.valid_from, k.valid_until))


def existing_deployment(client: ChainClient, chain_id: int, manifest_path: str | Path) -> Manifest | None:
    """None when there is no manifest (deploy afresh); the manifest when it is valid, for this chain and live.

    Anything else is a ConfigError, never a silent redeploy over it."""
    path = Path(manifest_path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        existing = Manifest.load(path)
    except ConfigError as e:
        raise ConfigError(f"{e}. Refusing to deploy over it: fix it, or move it away to deploy afresh") from e
    if existing.chain_id != chain_id:
        raise ConfigError(f"address manifest {path} is for chain {existing.chain_id}, but {client.rpc_url} is chain "
                          f"{chain_id}: refusing to deploy over it (wrong RPC endpoint, or use another --manifest)")
    try:
        missing = [f"{name} {address}" for name, address in existing.contracts.items()
                   if not client.w3.eth.get_code(to_checksum_address(address))]
    except Exception as e:  # web3 raises many unrelated types; one boundary here
        raise ChainError(f"{client.rpc_url}: cannot read contract code: {e}") from e
    if missing:
        raise ConfigError(f"address manifest {path} is for chain {chain_id}, but {len(missing)} of its "
                          f"{len(existing.contracts)} contracts have no code there ({', '.join(missing)}): a reset "
                          "chain or another network. Refusing to deploy over it: move the manifest away to deploy afresh")
    return existing


def _check_matches(existing: Manifest, roles: Roles, source: str, path: str | Path) -> None:
    recorded = Roles(existing.owners, existing.threshold, existing.guardian, existing.anchorer, existing.delay_seconds)
    def norm(v: Any) -> Any:  # addresses compare case-insensitively
        return tuple(x.lower() for x in v) if isinstance(v, tuple) else v.lower() if isinstance(v, str) else v

    differ = []
    for f in dataclasses.fields(Roles):
        have, want = getattr(recorded, f.name), getattr(roles, f.name)
        if norm(have) != norm(want):
            differ.append(f"{f.name}: manifest {have!r}, plan {want!r}")
    if differ:
        raise ConfigError(f"address manifest {path} is a live deployment that differs from {source} ({'; '.join(differ)}). "
                          "A deployed stack changes through governance (`sealgate gov propose`), not by redeploying")


def _chain_id(client: ChainClient) -> int:
    try:
        return client.w3.eth.chain_id
    except Exception as e:  # web3 raises many unrelated types; one boundary here
        raise ChainError(f"{client.rpc_url}: cannot read the chain id: {e}") from e


def _deploy(client: ChainClient, chain_id: int, rpc_url: str, path: Path, deployer: TxSigner, roles: Roles,
            bootstrap: Callable[[Bootstrap], None] | None) -> Manifest:
    """Deploys registries, policy, anchor, a Safe (threshold-of-owners) and a TimelockController
    proposed by that Safe; runs the bootstrap hook; then hands every admin role to the timelock
    and renounces the deployer's. Writes the manifest last."""
    models = client.contract("ModelRegistry", client.deploy(deployer, "ModelRegistry", deployer.address))
    registry = client.contract("AgentRegistry", client.deploy(deployer, "AgentRegistry", deployer.address, models.address))
    policy = client.contract("RuleBasedPolicy", client.deploy(deployer, "RuleBasedPolicy", deployer.address,
                                                               registry.address, models.address))
    policy_registry = client.contract("PolicyRegistry", client.deploy(deployer, "PolicyRegistry", deployer.address))
    anchor = client.contract("SaeAnchor", client.deploy(deployer, "SaeAnchor", deployer.address))
    approvers = client.contract("ApproverRegistry", client.deploy(deployer, "ApproverRegistry", deployer.address))
    signing_keys = client.contract("SigningKeyRegistry", client.deploy(deployer, "SigningKeyRegistry", deployer.address))
    # the timelock first (the deployer its bootstrap admin), so the Safe is created with it as its module
    timelock = client.contract("SealgateTimelock", client.deploy(
        deployer, "SealgateTimelock", roles.delay_seconds, [], [ZERO_ADDRESS], [to_checksum_address(roles.guardian)],
        deployer.address))
    safe = deploy_safe(client, deployer, roles.owners, roles.threshold, module=timelock.address)
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        client.transact(deployer, timelock.functions.grantRole(role_id(role), safe.address))

    grant = lambda contract, role, who: client.transact(deployer, contract.functions.grantRole(role_id(role), who))  # noqa: E731
    # bootstrap window: the deployer seeds, then hands over
    for contract, role in ((registry, "REGISTRAR_ROLE"), (models, "MODEL_ADMIN_ROLE"), (policy, "POLICY_ADMIN_ROLE"),
                           (policy_registry, "POLICY_ADMIN_ROLE"), (approvers, "APPROVER_ADMIN_ROLE"),
                           (signing_keys, "KEY_ADMIN_ROLE")):
        grant(contract, role, deployer.address)
    policy_id = keccak(text=POLICY_NAME)
    receipt = client.transact(deployer, policy_registry.functions.deploy(policy_id, policy.address))
    manifest = Manifest(
        chain_id=chain_id, rpc_url=rpc_url, deploy_block=receipt.blockNumber,
        registry=registry.address, models=models.address, policy=policy.address,
        policy_registry=policy_registry.address, policy_id="0x" + policy_id.hex(), anchor=anchor.address,
        timelock=timelock.address, safe=safe.address, owners=tuple(roles.owners), threshold=roles.threshold,
        delay_seconds=roles.delay_seconds, guardian=to_checksum_address(roles.guardian),
        anchorer=to_checksum_address(roles.anchorer), approvers=approvers.address, signing_keys=signing_keys.address,
    )
    if bootstrap is not None:
        bootstrap(Bootstrap(client, deployer, registry, models, policy, approvers, Governance(client, manifest),
                            signing_keys))

    handover = (
        (registry, ("REGISTRAR_ROLE",), True),
        (models, ("MODEL_ADMIN_ROLE",), True),
        (policy, ("POLICY_ADMIN_ROLE",), True),
        (policy_registry, ("POLICY_ADMIN_ROLE",), False),
        (anchor, (), False),
        (approvers, ("APPROVER_ADMIN_ROLE",), True),
        (signing_keys, ("KEY_ADMIN_ROLE",), True),
        (timelock, (), False),  # the timelock administers itself; the deployer's bootstrap admin role goes
    )
    for contract, roles_held, has_guardian in handover:
        for role in roles_held:
            grant(contract, role, timelock.address)
        if has_guardian:
            grant(contract, "GUARDIAN_ROLE", manifest.guardian)
        if contract is not timelock:
            grant(contract, "DEFAULT_ADMIN_ROLE", timelock.address)
    grant(anchor, "ANCHORER_ROLE", manifest.anchorer)
    for contract, roles_held, _ in handover:
        for role in (*roles_held, "DEFAULT_ADMIN_ROLE"):
            if contract.functions.hasRole(role_id(role), deployer.address).call():
                receipt = client.transact(deployer, contract.functions.renounceRole(role_id(role), deployer.address))
    for contract, roles_held, _ in handover:  # fail closed: the deployer must hold nothing afterwards
        for role in (*roles_held, "DEFAULT_ADMIN_ROLE"):
            if contract.functions.hasRole(role_id(role), deployer.address).call():
                raise ChainError(f"the deployer still holds {role} on {contract.address} after renouncing it")
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):  # it was the timelock's bootstrap admin: it granted itself nothing
        if timelock.functions.hasRole(role_id(role), deployer.address).call():
            raise ChainError(f"the deployer holds {role} on the timelock {timelock.address}")
    check_safe_governance(client, safe, timelock.address)

    manifest = dataclasses.replace(manifest, deploy_block=receipt.blockNumber)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(path)
    return manifest


def deploy_safe(client: ChainClient, deployer: TxSigner, owners: tuple[str, ...], threshold: int,
                module: str | None = None) -> Any:
    """A Safe 1.4.1 proxy (singleton and factory from the audited npm build) with the given owners.

    With `module` (the timelock): created with it as its only module and SafeTimelockGuard as its guard
    (SafeGovernanceSetup, delegatecalled by `setup`), so owners and threshold change only through the timelock."""
    singleton = client.deploy(deployer, "Safe")
    factory = client.contract("SafeProxyFactory", client.deploy(deployer, "SafeProxyFactory"))
    to, data = ZERO_ADDRESS, b""
    if module is not None:
        guard = client.deploy(deployer, "SafeTimelockGuard")
        helper = client.contract("SafeGovernanceSetup", client.deploy(deployer, "SafeGovernanceSetup"))
        to, data = helper.address, helper.encode_abi("enableModuleAndGuard", [to_checksum_address(module), guard])
    setup = client.contract("Safe", singleton).encode_abi(
        "setup", [list(owners), threshold, to, data, ZERO_ADDRESS, ZERO_ADDRESS, 0, ZERO_ADDRESS])
    receipt = client.transact(deployer, factory.functions.createProxyWithNonce(singleton, setup, 0))
    created = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)
    if not created:
        raise ChainError("SafeProxyFactory emitted no ProxyCreation")
    return client.contract("Safe", created[0]["args"]["proxy"])


SAFE_GUARD_SLOT = keccak(text="guard_manager.guard.address")  # Safe 1.4.1 GuardManager's storage slot


def safe_guard(client: ChainClient, safe: str) -> str:
    """The guard the Safe runs on every Safe transaction (read from its storage; the zero address: none)."""
    raw = client.w3.eth.get_storage_at(to_checksum_address(safe), int.from_bytes(SAFE_GUARD_SLOT, "big"))
    return to_checksum_address(bytes(raw)[-20:])


def check_safe_governance(client: ChainClient, safe: Any, timelock: str) -> None:
    """Fail closed: the timelock is the Safe's only module and a SafeTimelockGuard guards it."""
    modules, _next = safe.functions.getModulesPaginated("0x0000000000000000000000000000000000000001", 10).call()
    if [m.lower() for m in modules] != [timelock.lower()]:
        raise ChainError(f"the Safe {safe.address} has modules {modules}, expected only the timelock {timelock}")
    guard = to_checksum_address(safe_guard(client, safe.address))
    code = client.w3.eth.get_code(guard) if guard != ZERO_ADDRESS else b""
    if bytes(code).hex() != artifact("SafeTimelockGuard")["deployedBytecode"].removeprefix("0x"):
        raise ChainError(f"the Safe {safe.address} is not guarded by a SafeTimelockGuard (guard {guard})")

"""Deployment: registries, policy, anchor, a Safe and the timelock that ends up owning everything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3.logs import DISCARD

from ext_authz.chain.artifacts import role_id
from ext_authz.chain.client import ChainClient
from ext_authz.chain.dev import DEV_KEYS, DEV_OWNER_ACCOUNTS, dev_account
from ext_authz.chain.manifest import Manifest
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import ZERO_ADDRESS

SAFE_THRESHOLD = 3
DEFAULT_TIMELOCK_DELAY = 24 * 3600
POLICY_NAME = "sealgate.default"


@dataclass
class Bootstrap:
    """What a bootstrap hook may use before the deployer hands everything to the timelock."""

    client: ChainClient
    deployer: LocalAccount
    registry: Any
    models: Any
    policy: Any
    approvers: Any


def deploy_all(rpc_url: str, manifest_path: str | Path, *, delay_seconds: int = DEFAULT_TIMELOCK_DELAY,
               owners: tuple[str, ...] | None = None, threshold: int = SAFE_THRESHOLD,
               keys: dict[str, str] | None = None, bootstrap: Callable[[Bootstrap], None] | None = None) -> Manifest:
    """Deploys registries, policy, anchor, a Safe (threshold-of-owners) and a TimelockController
    proposed by that Safe; then hands every admin role to the timelock and renounces the
    deployer's. Reuses a manifest whose contracts are live on the same chain."""
    client = ChainClient(rpc_url)
    path = Path(manifest_path)
    if path.exists():
        try:
            existing = Manifest.load(path)
            addresses = (existing.registry, existing.models, existing.policy_registry, existing.anchor, existing.timelock,
                         existing.safe, existing.approvers)
            if existing.chain_id == client.w3.eth.chain_id and all(client.w3.eth.get_code(to_checksum_address(a)) for a in addresses):
                return existing
        except ConfigError:
            pass  # an older or foreign manifest: deploy afresh
    keys = keys or DEV_KEYS
    deployer, anchorer, guardian = (Account.from_key(keys[r]) for r in ("deployer", "anchorer", "guardian"))
    owners = owners or tuple(dev_account(i).address for i in DEV_OWNER_ACCOUNTS)
    if not 1 <= threshold <= len(owners):
        raise ConfigError(f"Safe threshold must be in 1..{len(owners)}, found {threshold}")

    registry = client.contract("AgentRegistry", client.deploy(deployer, "AgentRegistry", deployer.address))
    models = client.contract("ModelRegistry", client.deploy(deployer, "ModelRegistry", deployer.address))
    policy = client.contract("RuleBasedPolicy", client.deploy(deployer, "RuleBasedPolicy", deployer.address,
                                                               registry.address, models.address))
    policy_registry = client.contract("PolicyRegistry", client.deploy(deployer, "PolicyRegistry", deployer.address))
    anchor = client.contract("SaeAnchor", client.deploy(deployer, "SaeAnchor", deployer.address))
    approvers = client.contract("ApproverRegistry", client.deploy(deployer, "ApproverRegistry", deployer.address))
    safe = deploy_safe(client, deployer, owners, threshold)
    timelock = client.contract("SealgateTimelock", client.deploy(deployer, "SealgateTimelock", delay_seconds,
                                                                  [safe.address], [ZERO_ADDRESS]))

    grant = lambda contract, role, who: client.transact(deployer, contract.functions.grantRole(role_id(role), who))  # noqa: E731
    # bootstrap window: the deployer seeds, then hands over
    for contract, role in ((registry, "REGISTRAR_ROLE"), (models, "MODEL_ADMIN_ROLE"), (policy, "POLICY_ADMIN_ROLE"),
                           (policy_registry, "POLICY_ADMIN_ROLE"), (approvers, "APPROVER_ADMIN_ROLE")):
        grant(contract, role, deployer.address)
    policy_id = keccak(text=POLICY_NAME)
    client.transact(deployer, policy_registry.functions.deploy(policy_id, policy.address))
    if bootstrap is not None:
        bootstrap(Bootstrap(client, deployer, registry, models, policy, approvers))

    handover = (
        (registry, ("REGISTRAR_ROLE",), True),
        (models, ("MODEL_ADMIN_ROLE",), True),
        (policy, ("POLICY_ADMIN_ROLE",), True),
        (policy_registry, ("POLICY_ADMIN_ROLE",), False),
        (anchor, (), False),
        (approvers, ("APPROVER_ADMIN_ROLE",), True),
    )
    for contract, roles, has_guardian in handover:
        for role in roles:
            grant(contract, role, timelock.address)
        if has_guardian:
            grant(contract, "GUARDIAN_ROLE", guardian.address)
        grant(contract, "DEFAULT_ADMIN_ROLE", timelock.address)
    grant(anchor, "ANCHORER_ROLE", anchorer.address)
    for contract, roles, _ in handover:
        for role in (*roles, "DEFAULT_ADMIN_ROLE"):
            if contract.functions.hasRole(role_id(role), deployer.address).call():
                receipt = client.transact(deployer, contract.functions.renounceRole(role_id(role), deployer.address))

    manifest = Manifest(
        chain_id=client.w3.eth.chain_id, rpc_url=rpc_url, deploy_block=receipt.blockNumber,
        registry=registry.address, models=models.address, policy=policy.address,
        policy_registry=policy_registry.address, policy_id="0x" + policy_id.hex(), anchor=anchor.address,
        timelock=timelock.address, safe=safe.address, owners=tuple(owners), threshold=threshold,
        delay_seconds=delay_seconds, guardian=guardian.address, anchorer=anchorer.address, approvers=approvers.address,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())
    return manifest


def deploy_safe(client: ChainClient, deployer: LocalAccount, owners: tuple[str, ...], threshold: int) -> Any:
    """A Safe 1.4.1 proxy (singleton and factory from the audited npm build) with the given owners."""
    singleton = client.deploy(deployer, "Safe")
    factory = client.contract("SafeProxyFactory", client.deploy(deployer, "SafeProxyFactory"))
    setup = client.contract("Safe", singleton).encode_abi(
        "setup", [list(owners), threshold, ZERO_ADDRESS, b"", ZERO_ADDRESS, ZERO_ADDRESS, 0, ZERO_ADDRESS])
    receipt = client.transact(deployer, factory.functions.createProxyWithNonce(singleton, setup, 0))
    created = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)
    if not created:
        raise ChainError("SafeProxyFactory emitted no ProxyCreation")
    return client.contract("Safe", created[0]["args"]["proxy"])


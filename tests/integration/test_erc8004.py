"""ERC-8004: a Sealgate agent published to an Identity Registry deployed on anvil (our compiled contract), resolved
back by another organisation, and the forgeries a relying party must refuse."""

import json
import os
import subprocess
import sys

import pytest
from eth_account import Account

from ext_authz.chain.dev import dev_account
from ext_authz.chain.erc8004 import caip10, data_uri, registration_file, resolve
from ext_authz.errors import ChainError
from ext_authz.policy.abi import text_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def erc8004(chain_stack):
    publisher = dev_account(8)  # an account of the publishing organisation, no Sealgate role
    address = chain_stack.chain.deploy(publisher, "IdentityRegistry8004")
    return chain_stack, address, publisher


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ext_authz.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_publish_then_another_organisation_resolves_the_agent_from_the_chain(erc8004):
    stack, identity, publisher = erc8004
    spiffe = stack.spiffe_id("procurement-01")
    out = cli("agent", "publish", "--manifest", str(stack.workdir / "addresses.json"), "--identity-registry", identity,
              "--spiffe-id", spiffe, "--org", "acme", "--role", "procurement",
              env={"SEALGATE_PUBLISHER_KEY": publisher.key.hex()})
    assert out.returncode == 0, out.stderr
    agent_id = json.loads(out.stdout)["agentId"]
    resolved = cli("agent", "resolve", "--rpc", stack.rpc_url, "--identity-registry", identity, "--agent-id", str(agent_id),
                   "--sealgate-registry", stack.manifest.registry)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    doc = json.loads(resolved.stdout)
    assert (doc["spiffe_id"], doc["status"], doc["role"]) == (spiffe, "active", "procurement")
    assert doc["sealgate_registry"] == caip10(31337, stack.manifest.registry) and doc["owner"] == publisher.address
    reg = doc["registration"]
    assert reg["registrations"] == [{"agentId": agent_id, "agentRegistry": caip10(31337, identity)}]
    assert {"name": "spiffe", "endpoint": spiffe} in reg["services"]


def test_an_agent_not_in_the_sealgate_registry_is_not_published(erc8004):
    stack, identity, publisher = erc8004
    out = cli("agent", "publish", "--manifest", str(stack.workdir / "addresses.json"), "--identity-registry", identity,
              "--spiffe-id", stack.spiffe_id("rogue-07"), "--org", "acme", "--role", "procurement",
              env={"SEALGATE_PUBLISHER_KEY": publisher.key.hex()})
    assert out.returncode == 2 and "unknown in the Sealgate AgentRegistry" in out.stderr


def _mint(stack, identity, who, doc, metadata):
    registry = stack.chain.contract("IdentityRegistry8004", identity)
    receipt = stack.chain.transact(who, registry.functions.register(data_uri(doc), metadata))
    agent_id = registry.events.Registered().process_receipt(receipt)[0]["args"]["agentId"]
    doc = {**doc, "registrations": [{"agentId": agent_id, "agentRegistry": caip10(31337, identity)}]}
    stack.chain.transact(who, registry.functions.setAgentURI(agent_id, data_uri(doc)))
    return agent_id


def test_a_forged_registration_naming_the_attackers_own_registry_is_refused_when_the_registry_is_pinned(erc8004):
    """ERC-8004 is open: the attacker deploys an AgentRegistry of his own that says procurement-01 is active, and
    publishes a registration naming it. Without a pin it resolves; pinned to the real registry it is refused."""
    stack, identity, _ = erc8004
    attacker = dev_account(9)
    fake = stack.chain.deploy(attacker, "AgentRegistry", attacker.address, stack.manifest.models)
    fake_registry = stack.chain.contract("AgentRegistry", fake)
    stack.chain.transact(attacker, fake_registry.functions.grantRole(fake_registry.functions.REGISTRAR_ROLE().call(),
                                                                     attacker.address))
    spiffe = stack.spiffe_id("procurement-01")
    stack.chain.transact(attacker, fake_registry.functions.register(text_id(spiffe), text_id("acme"), text_id("procurement"),
                                                                    text_id("demo-model-v1"), bytes(32)))
    doc = registration_file(spiffe, 31337, fake, org="acme", role="procurement")
    agent_id = _mint(stack, identity, attacker, doc, [("spiffeId", spiffe.encode()), ("sealgateRegistry", caip10(31337, fake).encode())])
    assert resolve(stack.chain, identity, agent_id).status == "active"  # what an unpinned resolver would believe
    with pytest.raises(ChainError, match="not the trusted"):
        resolve(stack.chain, identity, agent_id, trusted_registry=stack.manifest.registry)


def test_a_registration_whose_metadata_and_file_disagree_is_refused(erc8004):
    stack, identity, _ = erc8004
    attacker = dev_account(9)
    real = stack.spiffe_id("procurement-01")
    doc = registration_file(stack.spiffe_id("finance-03"), 31337, stack.manifest.registry, org="acme", role="finance")
    agent_id = _mint(stack, identity, attacker, doc,
                     [("spiffeId", real.encode()), ("sealgateRegistry", caip10(31337, stack.manifest.registry).encode())])
    with pytest.raises(ChainError, match="disagree"):
        resolve(stack.chain, identity, agent_id, trusted_registry=stack.manifest.registry)


def test_a_revoked_agent_resolves_as_revoked(erc8004):
    stack, identity, publisher = erc8004
    out = cli("agent", "publish", "--manifest", str(stack.workdir / "addresses.json"), "--identity-registry", identity,
              "--spiffe-id", stack.spiffe_id("finance-03"), "--org", "acme", "--role", "finance",
              env={"SEALGATE_PUBLISHER_KEY": publisher.key.hex()})
    assert out.returncode == 0, out.stderr
    agent_id = json.loads(out.stdout)["agentId"]
    stack.revoke("finance-03")  # the guardian, in the Sealgate registry: the ERC-8004 token stays
    assert resolve(stack.chain, identity, agent_id, trusted_registry=stack.manifest.registry).status == "revoked"
    resolved = cli("agent", "resolve", "--rpc", stack.rpc_url, "--identity-registry", identity, "--agent-id", str(agent_id))
    assert resolved.returncode == 1 and json.loads(resolved.stdout)["status"] == "revoked"


def test_only_the_owner_changes_an_agents_uri(erc8004):
    stack, identity, publisher = erc8004
    registry = stack.chain.contract("IdentityRegistry8004", identity)
    with pytest.raises(Exception, match="NotAgentOwner"):
        stack.chain.transact(Account.from_key(dev_account(9).key), registry.functions.setAgentURI(1, "data:,hijacked"))

"""Publishing Sealgate agents to an ERC-8004 Identity Registry, and resolving them back (the seed's
cross-boundary case: another organisation finds a Sealgate agent from the chain).

`publish()` mints the agent's ERC-8004 identity (an ERC-721 token) whose URI is its registration
file, a `data:application/json;base64,` URI so the file lives on-chain with the token, and sets two
metadata entries: `spiffeId` and `sealgateRegistry` (CAIP-10 `eip155:<chain>:<AgentRegistry>`). The
file carries the same plus the ERC-8004 `registrations` back-reference, written after the mint
(`setAgentURI`) since the agentId is known only then. The agent must be registered and active in the
Sealgate AgentRegistry it names.

`resolve()` reads the token back and checks what a relying party must: the file and the on-chain
metadata agree, the file names this ERC-8004 registry and agentId, and the Sealgate AgentRegistry it
names holds the SPIFFE ID, active. ERC-8004 registration is open (anyone can mint anything): trust
comes from the Sealgate registry the file names, never from the token.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from ext_authz.chain.client import ChainClient, TxSigner
from ext_authz.errors import ChainError, ConfigError
from ext_authz.policy.abi import text_id

REGISTRATION_TYPE = "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
DATA_URI_PREFIX = "data:application/json;base64,"
MAX_URI_BYTES = 16 * 1024
STATUS = ("unknown", "active", "revoked")


def caip10(chain_id: int, address: str) -> str:
    return f"eip155:{chain_id}:{to_checksum_address(address)}"


def registration_file(spiffe_id: str, chain_id: int, sealgate_registry: str, *, org: str, role: str,
                      identity_registry: str | None = None, agent_id: int | None = None,
                      endpoint: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": REGISTRATION_TYPE,
        "name": spiffe_id.rsplit("/", 1)[-1],
        "description": f"Sealgate-governed agent {spiffe_id}: its actions are authorized by the Sealgate policy "
                       f"contracts and carry Signed Action Envelopes",
        "services": [{"name": "spiffe", "endpoint": spiffe_id}] + ([{"name": "web", "endpoint": endpoint}] if endpoint else []),
        "supportedTrust": ["sealgate-sae"],
        "sealgate": {"spiffeId": spiffe_id, "agentRegistry": caip10(chain_id, sealgate_registry), "org": org, "role": role},
    }
    if identity_registry is not None and agent_id is not None:
        doc["registrations"] = [{"agentId": agent_id, "agentRegistry": caip10(chain_id, identity_registry)}]
    return doc


def data_uri(doc: dict[str, Any]) -> str:
    return DATA_URI_PREFIX + base64.b64encode(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).decode()


def _read_data_uri(uri: str) -> dict[str, Any]:
    if len(uri) > MAX_URI_BYTES or not uri.startswith(DATA_URI_PREFIX):
        raise ChainError("the agent URI is not a Sealgate registration file (data:application/json;base64,...)")
    try:
        doc = json.loads(base64.b64decode(uri[len(DATA_URI_PREFIX):], validate=True))
    except ValueError as e:
        raise ChainError(f"the registration file is not base64 JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("type") != REGISTRATION_TYPE or not isinstance(doc.get("sealgate"), dict):
        raise ChainError("the registration file is not an ERC-8004 registration of a Sealgate agent")
    return doc


def _agent_status(chain: ChainClient, registry: str, spiffe_id: str) -> tuple[str, tuple]:
    record = chain.contract("AgentRegistry", registry).functions.agent(text_id(spiffe_id)).call()
    status = record[4]
    return (STATUS[status] if 0 <= status < len(STATUS) else "unknown"), record


def publish(chain: ChainClient, publisher: TxSigner, identity_registry: str, sealgate_registry: str, spiffe_id: str, *,
            org: str, role: str, endpoint: str | None = None) -> int:
    """Mints the agent's ERC-8004 identity; returns its agentId."""
    status, _ = _agent_status(chain, sealgate_registry, spiffe_id)
    if status != "active":
        raise ConfigError(f"{spiffe_id} is {status} in the Sealgate AgentRegistry {sealgate_registry}: not published")
    chain_id = chain.w3.eth.chain_id
    registry = chain.contract("IdentityRegistry8004", identity_registry)
    metadata = [("spiffeId", spiffe_id.encode()), ("sealgateRegistry", caip10(chain_id, sealgate_registry).encode())]
    first = registration_file(spiffe_id, chain_id, sealgate_registry, org=org, role=role, endpoint=endpoint)
    receipt = chain.transact(publisher, registry.functions.register(data_uri(first), metadata))
    events = registry.events.Registered().process_receipt(receipt)
    if len(events) != 1:
        raise ChainError("the registry did not report one registration")
    agent_id = int(events[0]["args"]["agentId"])
    final = registration_file(spiffe_id, chain_id, sealgate_registry, org=org, role=role, endpoint=endpoint,
                              identity_registry=identity_registry, agent_id=agent_id)
    chain.transact(publisher, registry.functions.setAgentURI(agent_id, data_uri(final)))
    return agent_id


@dataclass(frozen=True)
class ResolvedAgent:
    agent_id: int
    owner: str
    spiffe_id: str
    sealgate_registry: str  # CAIP-10
    status: str  # in the Sealgate AgentRegistry
    org: str
    role: str
    registration: dict[str, Any]


def resolve(chain: ChainClient, identity_registry: str, agent_id: int, *, trusted_registry: str | None = None) -> ResolvedAgent:
    """The agent behind an ERC-8004 agentId, checked against the Sealgate AgentRegistry its file names, which must be
    `trusted_registry` when given (anyone can deploy a registry that says "active": pin the one you trust)."""
    registry = chain.contract("IdentityRegistry8004", identity_registry)
    chain_id = chain.w3.eth.chain_id
    try:
        owner = registry.functions.ownerOf(agent_id).call()
        doc = _read_data_uri(registry.functions.tokenURI(agent_id).call())
        spiffe_meta = registry.functions.getMetadata(agent_id, "spiffeId").call().decode()
        registry_meta = registry.functions.getMetadata(agent_id, "sealgateRegistry").call().decode()
    except ChainError:
        raise
    except Exception as e:  # a revert (no such token), a decoding error
        raise ChainError(f"ERC-8004 agent {agent_id} in {identity_registry}: {e}") from e
    sealgate = doc["sealgate"]
    if (sealgate.get("spiffeId"), sealgate.get("agentRegistry")) != (spiffe_meta, registry_meta):
        raise ChainError("the registration file and the on-chain metadata disagree")
    if doc.get("registrations") != [{"agentId": agent_id, "agentRegistry": caip10(chain_id, identity_registry)}]:
        raise ChainError("the registration file names another ERC-8004 registration")
    prefix = f"eip155:{chain_id}:"
    if not registry_meta.startswith(prefix):
        raise ChainError(f"the Sealgate registry {registry_meta} is on another chain")
    named = registry_meta[len(prefix):]
    if trusted_registry is not None and to_checksum_address(named) != to_checksum_address(trusted_registry):
        raise ChainError(f"the registration names the Sealgate registry {named}, not the trusted {trusted_registry}")
    status, record = _agent_status(chain, named, spiffe_meta)
    if status == "unknown":
        raise ChainError(f"{spiffe_meta} is not in the Sealgate AgentRegistry the registration names")
    if (record[0], record[1]) != (text_id(str(sealgate.get("org"))), text_id(str(sealgate.get("role")))):
        raise ChainError("the registration's org or role is not the Sealgate registry's")
    return ResolvedAgent(agent_id, owner, spiffe_meta, registry_meta, status, str(sealgate["org"]), str(sealgate["role"]), doc)

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAgentRegistry
/// @notice On-chain registry of AI agent identities. An agent is keyed by keccak256 of
///         its SPIFFE ID (the URI SAN of its mTLS certificate) and may be bound to the
///         SHA-256 of its certificate's public key (SubjectPublicKeyInfo).
interface IAgentRegistry {
    enum Status {
        Unknown,
        Active,
        Revoked
    }

    struct Agent {
        bytes32 org;
        bytes32 role;
        bytes32 modelId; // the model the agent is approved to run (see IModelRegistry)
        bytes32 keyFingerprint; // SHA-256 of the certificate's SPKI; 0 = bound by SPIFFE ID only
        Status status;
    }

    /// @notice The agent id is already registered.
    error AgentAlreadyRegistered(bytes32 agentId);
    /// @notice The agent id was never registered.
    error AgentNotRegistered(bytes32 agentId);
    /// @notice The requested status change does not apply to the agent's current status.
    error InvalidStatusTransition(bytes32 agentId, Status current);
    /// @notice A registration field that must be set is zero (`field`: agentId, org, role or modelId).
    error AgentFieldMissing(bytes32 agentId, string field);
    /// @notice The model id is not registered in the ModelRegistry.
    error ModelUnknown(bytes32 modelId);

    event AgentRegistered(
        bytes32 indexed agentId, bytes32 indexed org, bytes32 role, bytes32 modelId, bytes32 keyFingerprint
    );
    event AgentRevoked(bytes32 indexed agentId, address indexed by);
    event AgentReactivated(bytes32 indexed agentId, address indexed by);
    event AgentModelChanged(bytes32 indexed agentId, bytes32 previousModelId, bytes32 modelId);
    event AgentKeyChanged(bytes32 indexed agentId, bytes32 previousFingerprint, bytes32 keyFingerprint);

    /// @notice Returns the agent record; status is Unknown for an unregistered id.
    function agent(bytes32 agentId) external view returns (Agent memory);
}

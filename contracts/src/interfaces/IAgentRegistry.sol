// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IAgentRegistry
/// @notice On-chain registry of AI agent identities. An agent is keyed by
///         keccak256 of its SPIFFE ID (the URI SAN of its mTLS certificate).
interface IAgentRegistry {
    enum Status {
        Unknown,
        Active,
        Revoked
    }

    struct Agent {
        bytes32 org;
        bytes32 role;
        bytes32 modelHash;
        Status status;
    }

    /// @notice The agent id is already registered.
    error AgentAlreadyRegistered(bytes32 agentId);
    /// @notice The agent id was never registered.
    error AgentNotRegistered(bytes32 agentId);
    /// @notice The requested status change does not apply to the agent's current status.
    error InvalidStatusTransition(bytes32 agentId, Status current);

    event AgentRegistered(bytes32 indexed agentId, bytes32 indexed org, bytes32 role, bytes32 modelHash);
    event AgentRevoked(bytes32 indexed agentId, address indexed by);
    event AgentReactivated(bytes32 indexed agentId, address indexed by);

    /// @notice Returns the agent record; status is Unknown for an unregistered id.
    function agent(bytes32 agentId) external view returns (Agent memory);
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";

/// @title AgentRegistry
/// @notice Maps agent identities to organisation, role, approved model, key binding and
///         status. Registrars (the governance timelock) register, reactivate and change
///         models and keys; guardians revoke without delay (the SOAR emergency path).
contract AgentRegistry is IAgentRegistry, AccessControl {
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    mapping(bytes32 agentId => Agent) private _agents;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers a new, active agent.
    function register(bytes32 agentId, bytes32 org, bytes32 role, bytes32 modelId, bytes32 keyFingerprint)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (_agents[agentId].status != Status.Unknown) revert AgentAlreadyRegistered(agentId);
        _agents[agentId] =
            Agent({org: org, role: role, modelId: modelId, keyFingerprint: keyFingerprint, status: Status.Active});
        emit AgentRegistered(agentId, org, role, modelId, keyFingerprint);
    }

    /// @notice Revokes an active agent at once; effective from the next block the authorizer pins.
    function revoke(bytes32 agentId) external onlyRole(GUARDIAN_ROLE) {
        Status current = _requireRegistered(agentId);
        if (current != Status.Active) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Revoked;
        emit AgentRevoked(agentId, msg.sender);
    }

    /// @notice Reactivates a revoked agent. Governed: restoring power waits for the timelock.
    function reactivate(bytes32 agentId) external onlyRole(REGISTRAR_ROLE) {
        Status current = _requireRegistered(agentId);
        if (current != Status.Revoked) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Active;
        emit AgentReactivated(agentId, msg.sender);
    }

    /// @notice Moves an agent to another approved model.
    function setModel(bytes32 agentId, bytes32 modelId) external onlyRole(REGISTRAR_ROLE) {
        _requireRegistered(agentId);
        bytes32 previous = _agents[agentId].modelId;
        _agents[agentId].modelId = modelId;
        emit AgentModelChanged(agentId, previous, modelId);
    }

    /// @notice Binds the agent to another certificate key (0 = SPIFFE ID only).
    function setKey(bytes32 agentId, bytes32 keyFingerprint) external onlyRole(REGISTRAR_ROLE) {
        _requireRegistered(agentId);
        bytes32 previous = _agents[agentId].keyFingerprint;
        _agents[agentId].keyFingerprint = keyFingerprint;
        emit AgentKeyChanged(agentId, previous, keyFingerprint);
    }

    /// @inheritdoc IAgentRegistry
    function agent(bytes32 agentId) external view returns (Agent memory) {
        return _agents[agentId];
    }

    function _requireRegistered(bytes32 agentId) private view returns (Status current) {
        current = _agents[agentId].status;
        if (current == Status.Unknown) revert AgentNotRegistered(agentId);
    }
}

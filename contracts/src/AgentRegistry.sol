// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";

/// @title AgentRegistry
/// @notice Maps agent identities to organisation, role, approved model and status.
///         Registrars register; guardians revoke and reactivate without delay.
contract AgentRegistry is IAgentRegistry, AccessControl {
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    mapping(bytes32 agentId => Agent) private _agents;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers a new, active agent.
    function register(bytes32 agentId, bytes32 org, bytes32 role, bytes32 modelHash)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (_agents[agentId].status != Status.Unknown) revert AgentAlreadyRegistered(agentId);
        _agents[agentId] = Agent({org: org, role: role, modelHash: modelHash, status: Status.Active});
        emit AgentRegistered(agentId, org, role, modelHash);
    }

    /// @notice Revokes an active agent; effective from the next block the authorizer pins.
    function revoke(bytes32 agentId) external onlyRole(GUARDIAN_ROLE) {
        Status current = _agents[agentId].status;
        if (current == Status.Unknown) revert AgentNotRegistered(agentId);
        if (current != Status.Active) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Revoked;
        emit AgentRevoked(agentId, msg.sender);
    }

    /// @notice Reactivates a revoked agent.
    function reactivate(bytes32 agentId) external onlyRole(GUARDIAN_ROLE) {
        Status current = _agents[agentId].status;
        if (current == Status.Unknown) revert AgentNotRegistered(agentId);
        if (current != Status.Revoked) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Active;
        emit AgentReactivated(agentId, msg.sender);
    }

    /// @inheritdoc IAgentRegistry
    function agent(bytes32 agentId) external view returns (Agent memory) {
        return _agents[agentId];
    }
}

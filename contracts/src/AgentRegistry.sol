// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {GuardianControl} from "./GuardianControl.sol";
import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title AgentRegistry
/// @notice Maps agent identities to organisation, role, approved model, key binding and
///         status. Registrars (the governance timelock) register, reactivate and change
///         models and keys; guardians revoke without delay (the SOAR emergency path).
///         An agent's model must be registered in the ModelRegistry it was deployed with.
contract AgentRegistry is IAgentRegistry, GuardianControl {
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    IModelRegistry private immutable _models;
    mapping(bytes32 agentId => Agent) private _agents;

    /// @param admin receives `DEFAULT_ADMIN_ROLE` (the deployer during the bootstrap, then the timelock)
    /// @param models_ the ModelRegistry whose registered model ids agents may run
    constructor(address admin, IModelRegistry models_) {
        _models = models_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice The ModelRegistry agent model ids are checked against.
    function models() external view returns (IModelRegistry) {
        return _models;
    }

    /// @notice Registers a new, active agent.
    /// @dev Requirements:
    /// - the caller has `REGISTRAR_ROLE`;
    /// - `agentId`, `org`, `role` and `modelId` are not zero (reverts {AgentFieldMissing});
    /// - `modelId` is registered in the ModelRegistry (reverts {ModelUnknown}; a deprecated model is
    ///   accepted and the agent is denied MODEL_NOT_APPROVED until it is restored);
    /// - the agent id is not registered yet (reverts {AgentAlreadyRegistered}).
    /// `keyFingerprint` 0 binds the agent by SPIFFE ID only.
    ///
    /// Emits an {AgentRegistered} event.
    function register(bytes32 agentId, bytes32 org, bytes32 role, bytes32 modelId, bytes32 keyFingerprint)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (agentId == bytes32(0)) revert AgentFieldMissing(agentId, "agentId");
        if (org == bytes32(0)) revert AgentFieldMissing(agentId, "org");
        if (role == bytes32(0)) revert AgentFieldMissing(agentId, "role");
        _requireKnownModel(agentId, modelId);
        if (_agents[agentId].status != Status.Unknown) revert AgentAlreadyRegistered(agentId);
        _agents[agentId] =
            Agent({org: org, role: role, modelId: modelId, keyFingerprint: keyFingerprint, status: Status.Active});
        emit AgentRegistered(agentId, org, role, modelId, keyFingerprint);
    }

    /// @notice Revokes an active agent at once; effective from the next block the authorizer pins.
    /// @dev Requirements:
    /// - the caller has `GUARDIAN_ROLE`;
    /// - the agent is registered (reverts {AgentNotRegistered}) and active (reverts {InvalidStatusTransition}).
    ///
    /// Emits an {AgentRevoked} event.
    function revoke(bytes32 agentId) external onlyRole(GUARDIAN_ROLE) {
        Status current = _requireRegistered(agentId);
        if (current != Status.Active) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Revoked;
        emit AgentRevoked(agentId, msg.sender);
    }

    /// @notice Reactivates a revoked agent. Governed: restoring power waits for the timelock.
    /// @dev Requirements:
    /// - the caller has `REGISTRAR_ROLE`;
    /// - the agent is registered (reverts {AgentNotRegistered}) and revoked (reverts {InvalidStatusTransition}).
    ///
    /// Emits an {AgentReactivated} event.
    function reactivate(bytes32 agentId) external onlyRole(REGISTRAR_ROLE) {
        Status current = _requireRegistered(agentId);
        if (current != Status.Revoked) revert InvalidStatusTransition(agentId, current);
        _agents[agentId].status = Status.Active;
        emit AgentReactivated(agentId, msg.sender);
    }

    /// @notice Moves an agent to another model.
    /// @dev Requirements:
    /// - the caller has `REGISTRAR_ROLE`;
    /// - the agent is registered (reverts {AgentNotRegistered});
    /// - `modelId` is not zero and registered in the ModelRegistry (reverts {AgentFieldMissing} / {ModelUnknown}).
    ///
    /// Emits an {AgentModelChanged} event.
    function setModel(bytes32 agentId, bytes32 modelId) external onlyRole(REGISTRAR_ROLE) {
        _requireRegistered(agentId);
        _requireKnownModel(agentId, modelId);
        bytes32 previous = _agents[agentId].modelId;
        _agents[agentId].modelId = modelId;
        emit AgentModelChanged(agentId, previous, modelId);
    }

    /// @notice Binds the agent to another certificate key (0 = SPIFFE ID only).
    /// @dev Requirements:
    /// - the caller has `REGISTRAR_ROLE`;
    /// - the agent is registered (reverts {AgentNotRegistered}).
    ///
    /// Emits an {AgentKeyChanged} event.
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

    function _requireKnownModel(bytes32 agentId, bytes32 modelId) private view {
        if (modelId == bytes32(0)) revert AgentFieldMissing(agentId, "modelId");
        if (!_models.isRegistered(modelId)) revert ModelUnknown(modelId);
    }
}

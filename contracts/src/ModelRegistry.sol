// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {GuardianControl} from "./GuardianControl.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
/// @notice Registered model artifacts (SHA-256 + SBOM reference). Registration is governed
///         (timelock); a guardian may deprecate a model at once (supply-chain incident), and
///         governance restores it (the guardian's damage is undone one delay later).
contract ModelRegistry is IModelRegistry, GuardianControl {
    bytes32 public constant MODEL_ADMIN_ROLE = keccak256("MODEL_ADMIN_ROLE");

    mapping(bytes32 modelId => Model) private _models;

    /// @param admin receives `DEFAULT_ADMIN_ROLE` (the deployer during the bootstrap, then the timelock)
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers a model artifact.
    /// @dev Requirements:
    /// - the caller has `MODEL_ADMIN_ROLE`;
    /// - `modelId` is not zero (reverts {ModelIdMissing}) and not registered yet (reverts {ModelAlreadyRegistered});
    /// - `artifactSha256` is not zero (reverts {ArtifactHashMissing}).
    ///
    /// Emits a {ModelRegistered} event.
    function register(bytes32 modelId, bytes32 artifactSha256, string calldata sbomRef)
        external
        onlyRole(MODEL_ADMIN_ROLE)
    {
        if (modelId == bytes32(0)) revert ModelIdMissing();
        if (_models[modelId].registered) revert ModelAlreadyRegistered(modelId);
        if (artifactSha256 == bytes32(0)) revert ArtifactHashMissing(modelId);
        _models[modelId] = Model({artifactSha256: artifactSha256, sbomRef: sbomRef, registered: true, deprecated: false});
        emit ModelRegistered(modelId, artifactSha256, sbomRef);
    }

    /// @notice Deprecates a model: agents running it are denied from the next pinned block.
    /// @dev Requirements:
    /// - the caller has `GUARDIAN_ROLE`;
    /// - the model is registered (reverts {ModelNotRegistered}) and not deprecated (reverts {ModelAlreadyDeprecated}).
    ///
    /// Emits a {ModelDeprecated} event.
    function deprecate(bytes32 modelId) external onlyRole(GUARDIAN_ROLE) {
        Model storage m = _models[modelId];
        if (!m.registered) revert ModelNotRegistered(modelId);
        if (m.deprecated) revert ModelAlreadyDeprecated(modelId);
        m.deprecated = true;
        emit ModelDeprecated(modelId, msg.sender);
    }

    /// @notice Undoes a deprecation. Governed: restoring power waits for the timelock.
    /// @dev Requirements:
    /// - the caller has `MODEL_ADMIN_ROLE`;
    /// - the model is registered (reverts {ModelNotRegistered}) and deprecated (reverts {ModelNotDeprecated}).
    ///
    /// Emits a {ModelRestored} event.
    function restore(bytes32 modelId) external onlyRole(MODEL_ADMIN_ROLE) {
        Model storage m = _models[modelId];
        if (!m.registered) revert ModelNotRegistered(modelId);
        if (!m.deprecated) revert ModelNotDeprecated(modelId);
        m.deprecated = false;
        emit ModelRestored(modelId, msg.sender);
    }

    /// @inheritdoc IModelRegistry
    function model(bytes32 modelId) external view returns (Model memory) {
        return _models[modelId];
    }

    /// @inheritdoc IModelRegistry
    function provenance(bytes32 modelId) external view returns (bytes32 artifactSha256, bool approved) {
        Model storage m = _models[modelId];
        return (m.artifactSha256, m.registered && !m.deprecated);
    }

    /// @inheritdoc IModelRegistry
    function isApproved(bytes32 modelId) external view returns (bool) {
        Model storage m = _models[modelId];
        return m.registered && !m.deprecated;
    }

    /// @inheritdoc IModelRegistry
    function isRegistered(bytes32 modelId) external view returns (bool) {
        return _models[modelId].registered;
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
/// @notice Registered model artifacts (SHA-256 + SBOM reference). Registration is governed
///         (timelock); a guardian may deprecate a model at once (supply-chain incident).
contract ModelRegistry is IModelRegistry, AccessControl {
    bytes32 public constant MODEL_ADMIN_ROLE = keccak256("MODEL_ADMIN_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    mapping(bytes32 modelId => Model) private _models;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers a model artifact.
    function register(bytes32 modelId, bytes32 artifactSha256, string calldata sbomRef)
        external
        onlyRole(MODEL_ADMIN_ROLE)
    {
        if (_models[modelId].registered) revert ModelAlreadyRegistered(modelId);
        if (artifactSha256 == bytes32(0)) revert ArtifactHashMissing(modelId);
        _models[modelId] = Model({artifactSha256: artifactSha256, sbomRef: sbomRef, registered: true, deprecated: false});
        emit ModelRegistered(modelId, artifactSha256, sbomRef);
    }

    /// @notice Deprecates a model: agents running it are denied from the next pinned block.
    function deprecate(bytes32 modelId) external onlyRole(GUARDIAN_ROLE) {
        Model storage m = _models[modelId];
        if (!m.registered) revert ModelNotRegistered(modelId);
        if (m.deprecated) revert ModelAlreadyDeprecated(modelId);
        m.deprecated = true;
        emit ModelDeprecated(modelId, msg.sender);
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
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IModelRegistry
/// @notice Model provenance: model id -> SHA-256 of the artifact and an SBOM reference.
interface IModelRegistry {
    struct Model {
        bytes32 artifactSha256;
        string sbomRef;
        bool registered;
        bool deprecated;
    }

    error ModelAlreadyRegistered(bytes32 modelId);
    error ModelNotRegistered(bytes32 modelId);
    error ModelAlreadyDeprecated(bytes32 modelId);
    error ArtifactHashMissing(bytes32 modelId);
    /// @notice The model id is zero.
    error ModelIdMissing();
    /// @notice `restore` on a model that is not deprecated.
    error ModelNotDeprecated(bytes32 modelId);

    event ModelRegistered(bytes32 indexed modelId, bytes32 artifactSha256, string sbomRef);
    event ModelDeprecated(bytes32 indexed modelId, address indexed by);
    event ModelRestored(bytes32 indexed modelId, address indexed by);

    /// @notice The full record (zero values and `registered` false for an unknown id).
    function model(bytes32 modelId) external view returns (Model memory);

    /// @notice True when the model was ever registered (deprecated or not).
    function isRegistered(bytes32 modelId) external view returns (bool);

    /// @notice True when the model is registered and not deprecated.
    function isApproved(bytes32 modelId) external view returns (bool);

    /// @notice What a policy needs on the decision path, without copying the SBOM string.
    function provenance(bytes32 modelId) external view returns (bytes32 artifactSha256, bool approved);
}

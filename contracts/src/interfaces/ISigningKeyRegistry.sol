// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISigningKeyRegistry
/// @notice The keys that may sign SAEs and denial records, by key id (the 32-byte SHA-256 behind the JWK's
///         RFC 7638 thumbprint `kid`), each with a validity window in seconds and an immediate revocation.
interface ISigningKeyRegistry {
    /// @notice A signing key: `alg` 1 = EdDSA (Ed25519, 32-byte key), 2 = ES256 (P-256, 64-byte x||y).
    struct SigningKey {
        uint8 alg;
        uint64 validFrom;
        uint64 validUntil;
        uint64 revokedAt; // block timestamp of the revocation, 0 while not revoked
        bytes publicKey;
    }

    error KeyAlreadyRegistered(bytes32 kid);
    error KeyNotRegistered(bytes32 kid);
    error KeyAlreadyRevoked(bytes32 kid);
    error InvalidKey(bytes32 kid, uint8 alg, uint256 publicKeyLength);
    error InvalidWindow(bytes32 kid, uint64 validFrom, uint64 validUntil);

    event SigningKeyAdded(bytes32 indexed kid, uint8 alg, uint64 validFrom, uint64 validUntil, bytes publicKey);
    event SigningKeyWindowChanged(bytes32 indexed kid, uint64 validUntil);
    event SigningKeyRevoked(bytes32 indexed kid, address indexed by, uint64 revokedAt);

    function addKey(bytes32 kid, uint8 alg, bytes calldata publicKey, uint64 validFrom, uint64 validUntil) external;

    function rotateKey(
        bytes32 oldKid,
        uint64 oldValidUntil,
        bytes32 newKid,
        uint8 alg,
        bytes calldata publicKey,
        uint64 validFrom,
        uint64 validUntil
    ) external;

    function revokeKey(bytes32 kid) external;

    function keyOf(bytes32 kid) external view returns (SigningKey memory);

    function keyIds() external view returns (bytes32[] memory);

    function isValidAt(bytes32 kid, uint64 timestamp) external view returns (bool);
}

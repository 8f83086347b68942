// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ISigningKeyRegistry} from "./interfaces/ISigningKeyRegistry.sol";

/// @title SigningKeyRegistry
/// @notice Which keys may sign SAEs and denial records, so a signature proves something to a verifier who
///         trusts the chain and not the operator's JWKS endpoint. Adding and rotating keys is governed (the
///         timelock holds KEY_ADMIN_ROLE); the guardian revokes a key at once. A verifier reads the registry at
///         the SAE's block (`pol.block`) and requires the key to exist there, its window to cover the SAE's
///         `iat`, and no revocation by the block that anchored it.
contract SigningKeyRegistry is ISigningKeyRegistry, AccessControl {
    bytes32 public constant KEY_ADMIN_ROLE = keccak256("KEY_ADMIN_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    uint8 public constant ALG_EDDSA = 1;
    uint8 public constant ALG_ES256 = 2;

    mapping(bytes32 kid => SigningKey) private _keys;
    bytes32[] private _kids;

    /// @param admin receives DEFAULT_ADMIN_ROLE (the timelock after deployment)
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers a signing key valid from `validFrom` until (excluding) `validUntil`, in seconds.
    /// @dev Requirements:
    /// - the caller holds `KEY_ADMIN_ROLE` (the timelock: a Safe proposal and its delay);
    /// - `kid` is new (a key id is never reused, not even after revocation);
    /// - `alg` is EdDSA with a 32-byte key or ES256 with a 64-byte x||y key;
    /// - `validFrom < validUntil`.
    ///
    /// Emits a {SigningKeyAdded} event.
    function addKey(bytes32 kid, uint8 alg, bytes calldata publicKey, uint64 validFrom, uint64 validUntil)
        external
        onlyRole(KEY_ADMIN_ROLE)
    {
        _add(kid, alg, publicKey, validFrom, validUntil);
    }

    /// @notice Rotation in one governed operation: the new key is added and the old key's window ends at
    ///         `oldValidUntil` (an overlap lets SAEs signed just before the switch still verify).
    /// @dev Requirements:
    /// - the caller holds `KEY_ADMIN_ROLE`;
    /// - `oldKid` is registered and not revoked; `oldValidUntil` does not extend its window and stays after
    ///   its `validFrom`;
    /// - the new key satisfies every requirement of {addKey}.
    ///
    /// Emits a {SigningKeyWindowChanged} event for the old key and a {SigningKeyAdded} event for the new one.
    function rotateKey(
        bytes32 oldKid,
        uint64 oldValidUntil,
        bytes32 newKid,
        uint8 alg,
        bytes calldata publicKey,
        uint64 validFrom,
        uint64 validUntil
    ) external onlyRole(KEY_ADMIN_ROLE) {
        SigningKey storage old = _keys[oldKid];
        if (old.alg == 0) revert KeyNotRegistered(oldKid);
        if (old.revokedAt != 0) revert KeyAlreadyRevoked(oldKid);
        if (oldValidUntil > old.validUntil || oldValidUntil <= old.validFrom) {
            revert InvalidWindow(oldKid, old.validFrom, oldValidUntil);
        }
        old.validUntil = oldValidUntil;
        emit SigningKeyWindowChanged(oldKid, oldValidUntil);
        _add(newKid, alg, publicKey, validFrom, validUntil);
    }

    /// @notice Revokes a key at once (lost or misused): from this block on, nothing it signed verifies unless
    ///         it was anchored before.
    /// @dev Requirements:
    /// - the caller holds `GUARDIAN_ROLE`;
    /// - `kid` is registered and not revoked yet.
    ///
    /// Emits a {SigningKeyRevoked} event.
    function revokeKey(bytes32 kid) external onlyRole(GUARDIAN_ROLE) {
        SigningKey storage key = _keys[kid];
        if (key.alg == 0) revert KeyNotRegistered(kid);
        if (key.revokedAt != 0) revert KeyAlreadyRevoked(kid);
        key.revokedAt = uint64(block.timestamp);
        emit SigningKeyRevoked(kid, msg.sender, key.revokedAt);
    }

    /// @notice The key registered as `kid` (alg 0 when none is).
    function keyOf(bytes32 kid) external view returns (SigningKey memory) {
        return _keys[kid];
    }

    /// @notice Every key id ever registered, in registration order.
    function keyIds() external view returns (bytes32[] memory) {
        return _kids;
    }

    /// @notice True when `kid` is registered, not revoked, and its window covers `timestamp`.
    function isValidAt(bytes32 kid, uint64 timestamp) external view returns (bool) {
        SigningKey storage key = _keys[kid];
        return key.alg != 0 && key.revokedAt == 0 && key.validFrom <= timestamp && timestamp < key.validUntil;
    }

    function _add(bytes32 kid, uint8 alg, bytes calldata publicKey, uint64 validFrom, uint64 validUntil) private {
        if (_keys[kid].alg != 0) revert KeyAlreadyRegistered(kid);
        bool shaped = (alg == ALG_EDDSA && publicKey.length == 32) || (alg == ALG_ES256 && publicKey.length == 64);
        if (kid == bytes32(0) || !shaped) revert InvalidKey(kid, alg, publicKey.length);
        if (validFrom >= validUntil) revert InvalidWindow(kid, validFrom, validUntil);
        _keys[kid] = SigningKey(alg, validFrom, validUntil, 0, publicKey);
        _kids.push(kid);
        emit SigningKeyAdded(kid, alg, validFrom, validUntil, publicKey);
    }
}

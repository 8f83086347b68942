// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {GuardianControl} from "./GuardianControl.sol";
import {IApproverRegistry} from "./interfaces/IApproverRegistry.sol";

/// @title ApproverRegistry
/// @notice Who may approve held actions, governed like every other registry: registering
///         (or re-registering with a new key) goes through the timelock; a guardian revokes
///         at once (a lost or misused approval key).
contract ApproverRegistry is IApproverRegistry, GuardianControl {
    bytes32 public constant APPROVER_ADMIN_ROLE = keccak256("APPROVER_ADMIN_ROLE");

    struct Approver {
        bytes32 ed25519Key;
        bool active;
    }

    mapping(bytes32 nameId => Approver) private _approvers;

    /// @param admin receives `DEFAULT_ADMIN_ROLE` (the deployer during the bootstrap, then the timelock)
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers an approver, or gives a revoked one a new key.
    /// @dev Requirements:
    /// - the caller has `APPROVER_ADMIN_ROLE`;
    /// - `nameId` is not zero (reverts {ApproverNameMissing}) and not active (reverts {ApproverAlreadyActive});
    /// - `ed25519Key` is not zero (reverts {ApproverKeyMissing}).
    ///
    /// Emits an {ApproverRegistered} event.
    function register(bytes32 nameId, bytes32 ed25519Key) external onlyRole(APPROVER_ADMIN_ROLE) {
        if (nameId == bytes32(0)) revert ApproverNameMissing();
        if (_approvers[nameId].active) revert ApproverAlreadyActive(nameId);
        if (ed25519Key == bytes32(0)) revert ApproverKeyMissing(nameId);
        _approvers[nameId] = Approver({ed25519Key: ed25519Key, active: true});
        emit ApproverRegistered(nameId, ed25519Key);
    }

    /// @notice Revokes an approver: their approvals are refused from the next pinned block.
    /// @dev Requirements:
    /// - the caller has `GUARDIAN_ROLE`;
    /// - the approver is active (reverts {ApproverNotActive}).
    ///
    /// Emits an {ApproverRevoked} event.
    function revoke(bytes32 nameId) external onlyRole(GUARDIAN_ROLE) {
        if (!_approvers[nameId].active) revert ApproverNotActive(nameId);
        _approvers[nameId].active = false;
        emit ApproverRevoked(nameId, msg.sender);
    }

    /// @inheritdoc IApproverRegistry
    function approverKey(bytes32 nameId) external view returns (bytes32 ed25519Key, bool active) {
        Approver storage a = _approvers[nameId];
        return (a.ed25519Key, a.active);
    }
}

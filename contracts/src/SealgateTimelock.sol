// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {ISealgateTimelock} from "./interfaces/ISealgateTimelock.sol";

/// @title SealgateTimelock
/// @notice OpenZeppelin TimelockController that owns every Sealgate contract, with three changes:
///         - extra cancellers (the guardian) may cancel a scheduled operation during its delay,
///           except a guardian rotation: an operation whose every call grants or revokes
///           `GUARDIAN_ROLE` or `CANCELLER_ROLE`, so a stolen guardian key cannot block its own
///           replacement (the owners' Safe, a proposer, can still cancel it);
///         - `PROPOSER_ROLE` and `CANCELLER_ROLE` cannot be renounced (the Safe cannot drop
///           governance, the guardian cannot drop its brake): only a governed `revokeRole` removes them;
///         - the deployer may hold `DEFAULT_ADMIN_ROLE` for the bootstrap (it renounces it before the
///           deployment ends, tested), so the Safe can be created with the timelock as its module.
///         Proposer: the owners' Safe. Executor: anyone, once the delay has passed.
contract SealgateTimelock is TimelockController, ISealgateTimelock {
    bytes32 private constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    mapping(bytes32 id => bool) private _guardianRotation;

    /// @param minDelay seconds every operation waits
    /// @param proposers receive `PROPOSER_ROLE` and `CANCELLER_ROLE` (the owners' Safe)
    /// @param executors receive `EXECUTOR_ROLE` (address(0): anyone)
    /// @param cancellers receive `CANCELLER_ROLE` only (the guardian)
    /// @param admin optional bootstrap admin (address(0): none); the timelock always administers itself
    constructor(
        uint256 minDelay,
        address[] memory proposers,
        address[] memory executors,
        address[] memory cancellers,
        address admin
    ) TimelockController(minDelay, proposers, executors, admin) {
        for (uint256 i = 0; i < cancellers.length; ++i) {
            _grantRole(CANCELLER_ROLE, cancellers[i]);
        }
    }

    /// @inheritdoc ISealgateTimelock
    function isGuardianRotation(bytes32 id) external view returns (bool) {
        return _guardianRotation[id];
    }

    /// @notice Schedules one call, as TimelockController does, and marks a guardian rotation.
    /// @dev Requirements: as {TimelockController-schedule} (caller has `PROPOSER_ROLE`, delay at least the
    /// minimum, operation not yet scheduled).
    ///
    /// Emits {CallScheduled}, {CallSalt} when `salt` is not zero, and {GuardianRotationScheduled} for a rotation.
    function schedule(
        address target,
        uint256 value,
        bytes calldata data,
        bytes32 predecessor,
        bytes32 salt,
        uint256 delay
    ) public virtual override {
        super.schedule(target, value, data, predecessor, salt, delay);
        if (_isGuardianPowerCall(data)) _markRotation(hashOperation(target, value, data, predecessor, salt));
    }

    /// @notice Schedules several calls as one operation, as TimelockController does, and marks a
    ///         guardian rotation (every call grants or revokes a guardian power).
    /// @dev Requirements: as {TimelockController-scheduleBatch}.
    ///
    /// Emits one {CallScheduled} per call, {CallSalt} when `salt` is not zero, and
    /// {GuardianRotationScheduled} for a rotation.
    function scheduleBatch(
        address[] calldata targets,
        uint256[] calldata values,
        bytes[] calldata payloads,
        bytes32 predecessor,
        bytes32 salt,
        uint256 delay
    ) public virtual override {
        super.scheduleBatch(targets, values, payloads, predecessor, salt, delay);
        for (uint256 i = 0; i < payloads.length; ++i) {
            if (!_isGuardianPowerCall(payloads[i])) return;
        }
        _markRotation(hashOperationBatch(targets, values, payloads, predecessor, salt));
    }

    /// @notice Cancels a pending operation, as TimelockController does.
    /// @dev Requirements:
    /// - the caller has `CANCELLER_ROLE`;
    /// - a caller without `PROPOSER_ROLE` (the guardian) does not cancel a guardian rotation
    ///   (reverts {GuardianRotationNotCancellable});
    /// - the operation is Waiting or Ready (reverts {TimelockUnexpectedOperationState}).
    ///
    /// Emits a {Cancelled} event.
    function cancel(bytes32 id) public virtual override {
        if (_guardianRotation[id] && !hasRole(PROPOSER_ROLE, msg.sender)) revert GuardianRotationNotCancellable(id);
        super.cancel(id);
        delete _guardianRotation[id];
    }

    /// @notice Renounces a role, as AccessControl does, except `PROPOSER_ROLE` and `CANCELLER_ROLE`.
    /// @dev Requirements:
    /// - `role` is neither `PROPOSER_ROLE` nor `CANCELLER_ROLE` (reverts {TimelockRoleNotRenounceable});
    /// - `callerConfirmation` is the caller (reverts {AccessControlBadConfirmation}).
    ///
    /// Emits a {RoleRevoked} event when the caller held the role.
    function renounceRole(bytes32 role, address callerConfirmation) public virtual override {
        if (role == PROPOSER_ROLE || role == CANCELLER_ROLE) revert TimelockRoleNotRenounceable(role);
        super.renounceRole(role, callerConfirmation);
    }

    function _markRotation(bytes32 id) private {
        _guardianRotation[id] = true;
        emit GuardianRotationScheduled(id);
    }

    /// @dev `grantRole` / `revokeRole` of `GUARDIAN_ROLE` or `CANCELLER_ROLE`, whatever the target.
    function _isGuardianPowerCall(bytes calldata data) private pure returns (bool) {
        if (data.length != 68) return false;
        bytes4 selector = bytes4(data[:4]);
        if (selector != IAccessControl.grantRole.selector && selector != IAccessControl.revokeRole.selector) {
            return false;
        }
        bytes32 role = bytes32(data[4:36]);
        return role == GUARDIAN_ROLE || role == CANCELLER_ROLE;
    }
}

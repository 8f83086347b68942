// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISealgateTimelock
/// @notice What SealgateTimelock adds to OpenZeppelin's TimelockController.
interface ISealgateTimelock {
    /// @notice A canceller that is not a proposer (the guardian) tried to cancel a guardian rotation.
    error GuardianRotationNotCancellable(bytes32 id);
    /// @notice `renounceRole` of `PROPOSER_ROLE` or `CANCELLER_ROLE`: those leave only by a governed `revokeRole`.
    error TimelockRoleNotRenounceable(bytes32 role);

    /// @notice Operation `id` only grants or revokes guardian powers: the guardian cannot cancel it.
    event GuardianRotationScheduled(bytes32 indexed id);

    /// @notice True when operation `id` was scheduled as a guardian rotation.
    function isGuardianRotation(bytes32 id) external view returns (bool);
}

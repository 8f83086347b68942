// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IGuardianControl
/// @notice The guardian's brake cannot be thrown away: `GUARDIAN_ROLE` is never renounced, only
///         revoked by the contract's admin (the timelock), i.e. replaced through governance.
interface IGuardianControl {
    /// @notice `renounceRole(GUARDIAN_ROLE, ...)` was called: the role only leaves through a governed `revokeRole`.
    error GuardianRoleNotRenounceable();
}

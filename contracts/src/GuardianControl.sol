// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IGuardianControl} from "./interfaces/IGuardianControl.sol";

/// @title GuardianControl
/// @notice OpenZeppelin AccessControl with a `GUARDIAN_ROLE` that cannot be renounced: a guardian
///         (honest and leaving, or a stolen key) cannot remove the emergency brake; the admin (the
///         timelock) revokes it and grants the replacement in one governed operation
///         (`sealgate gov propose rotate-guardian`).
abstract contract GuardianControl is AccessControl, IGuardianControl {
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice Renounces `role` for the caller, as AccessControl does, except `GUARDIAN_ROLE`.
    /// @dev Requirements:
    /// - `role` is not `GUARDIAN_ROLE` (reverts {GuardianRoleNotRenounceable});
    /// - `callerConfirmation` is the caller (reverts {AccessControlBadConfirmation}).
    ///
    /// Emits a {RoleRevoked} event when the caller held the role.
    function renounceRole(bytes32 role, address callerConfirmation) public virtual override {
        if (role == GUARDIAN_ROLE) revert GuardianRoleNotRenounceable();
        super.renounceRole(role, callerConfirmation);
    }
}

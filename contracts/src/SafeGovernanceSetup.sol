// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

interface ISafeSelfManagement {
    /// @notice Safe 1.4.1 ModuleManager.enableModule (callable by the Safe itself only).
    function enableModule(address module) external;
    /// @notice Safe 1.4.1 GuardManager.setGuard (callable by the Safe itself only).
    function setGuard(address guard) external;
}

/// @title SafeGovernanceSetup
/// @notice Delegatecalled by `Safe.setup` (its `to`/`data`) while the proxy is created: enables the
///         timelock as the Safe's only module and sets the SafeTimelockGuard, before any owner can sign.
contract SafeGovernanceSetup {
    /// @notice Enables `module` and sets `guard` on the Safe running this code by delegatecall.
    /// @dev Requirements: runs as a delegatecall from the Safe's setup (called directly, the Safe
    /// functions it calls revert `GS031`: only the Safe may call them).
    ///
    /// Emits the Safe's {EnabledModule} and {ChangedGuard} events.
    function enableModuleAndGuard(address module, address guard) external {
        ISafeSelfManagement(address(this)).enableModule(module);
        ISafeSelfManagement(address(this)).setGuard(guard);
    }
}

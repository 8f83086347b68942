// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IActionPolicy} from "./IActionPolicy.sol";

/// @title IPolicyRegistry
/// @notice Maps a policy id to its current implementation, with the full version history.
interface IPolicyRegistry {
    struct Version {
        address implementation;
        uint64 activatedAtBlock;
    }

    error PolicyUnknown(bytes32 policyId);
    error PolicyAlreadyDeployed(bytes32 policyId);
    error ImplementationInvalid(address implementation);
    /// @notice The upgrading caller holds no `POLICY_ADMIN_ROLE` on the new implementation.
    error ImplementationNotGoverned(address implementation, address caller);
    /// @notice The current implementation is paused and the new one is not.
    error UpgradeWouldLiftPause(bytes32 policyId, address implementation);

    event PolicyDeployed(bytes32 indexed policyId, address indexed implementation, uint256 version);
    event PolicyUpgraded(
        bytes32 indexed policyId, address indexed previous, address indexed implementation, uint256 version
    );

    /// @notice The current implementation and its 1-based version. Reverts {PolicyUnknown} when not deployed.
    function current(bytes32 policyId) external view returns (address implementation, uint256 version);

    /// @notice Evaluates with the current implementation and says which one answered.
    function evaluate(bytes32 policyId, IActionPolicy.Action calldata action)
        external
        view
        returns (IActionPolicy.Verdict memory verdict, address implementation, uint256 version);
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IActionPolicy} from "./interfaces/IActionPolicy.sol";
import {IPolicyRegistry} from "./interfaces/IPolicyRegistry.sol";

interface IPausedView {
    /// @notice OpenZeppelin Pausable's view: true while paused.
    function paused() external view returns (bool);
}

/// @title PolicyRegistry
/// @notice Policy id -> current implementation, every version kept. Deploying and
///         upgrading are governed (timelock), so an upgrade is visible on-chain as a
///         scheduled operation before it takes effect. An upgrade keeps the brakes: it never
///         lifts a pause, and the new implementation must already be administered by the caller.
contract PolicyRegistry is IPolicyRegistry, AccessControl {
    bytes32 public constant POLICY_ADMIN_ROLE = keccak256("POLICY_ADMIN_ROLE");

    mapping(bytes32 policyId => Version[]) private _history;

    /// @param admin receives `DEFAULT_ADMIN_ROLE` (the deployer during the bootstrap, then the timelock)
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers the first implementation of a policy id.
    /// @dev Requirements:
    /// - the caller has `POLICY_ADMIN_ROLE`;
    /// - the policy id has no implementation yet (reverts {PolicyAlreadyDeployed});
    /// - `implementation` has code (reverts {ImplementationInvalid}).
    ///
    /// Emits a {PolicyDeployed} event.
    function deploy(bytes32 policyId, address implementation) external onlyRole(POLICY_ADMIN_ROLE) {
        if (_history[policyId].length != 0) revert PolicyAlreadyDeployed(policyId);
        _requireContract(implementation);
        _history[policyId].push(Version(implementation, uint64(block.number)));
        emit PolicyDeployed(policyId, implementation, 1);
    }

    /// @notice Points a policy id at a new implementation.
    /// @dev Requirements:
    /// - the caller has `POLICY_ADMIN_ROLE`;
    /// - the policy id is deployed (reverts {PolicyUnknown});
    /// - `implementation` has code (reverts {ImplementationInvalid});
    /// - the caller (the timelock) holds `POLICY_ADMIN_ROLE` on `implementation`, so governance can still set
    ///   its rules and unpause it (reverts {ImplementationNotGoverned});
    /// - when the current implementation is paused, `implementation` is paused too (reverts
    ///   {UpgradeWouldLiftPause}): a governed upgrade that means to keep the brake pauses the new
    ///   implementation earlier in the same operation.
    ///
    /// Emits a {PolicyUpgraded} event.
    function upgrade(bytes32 policyId, address implementation) external onlyRole(POLICY_ADMIN_ROLE) {
        Version[] storage history = _history[policyId];
        if (history.length == 0) revert PolicyUnknown(policyId);
        _requireContract(implementation);
        if (!_administers(implementation, msg.sender)) revert ImplementationNotGoverned(implementation, msg.sender);
        address previous = history[history.length - 1].implementation;
        if (_isPaused(previous) && !_isPaused(implementation)) revert UpgradeWouldLiftPause(policyId, implementation);
        history.push(Version(implementation, uint64(block.number)));
        emit PolicyUpgraded(policyId, previous, implementation, history.length);
    }

    /// @inheritdoc IPolicyRegistry
    function current(bytes32 policyId) public view returns (address implementation, uint256 version) {
        Version[] storage history = _history[policyId];
        if (history.length == 0) revert PolicyUnknown(policyId);
        return (history[history.length - 1].implementation, history.length);
    }

    /// @notice How many implementations the policy id has had (0: not deployed).
    function versionCount(bytes32 policyId) external view returns (uint256) {
        return _history[policyId].length;
    }

    /// @notice Version `version` (1-based) of a policy id.
    /// @dev Requirements: `version` is in 1..versionCount (reverts {PolicyUnknown}).
    function versionAt(bytes32 policyId, uint256 version) external view returns (Version memory) {
        if (version == 0 || version > _history[policyId].length) revert PolicyUnknown(policyId);
        return _history[policyId][version - 1];
    }

    /// @inheritdoc IPolicyRegistry
    function evaluate(bytes32 policyId, IActionPolicy.Action calldata action)
        external
        view
        returns (IActionPolicy.Verdict memory verdict, address implementation, uint256 version)
    {
        (implementation, version) = current(policyId);
        verdict = IActionPolicy(implementation).evaluate(action);
    }

    function _requireContract(address implementation) private view {
        if (implementation.code.length == 0) revert ImplementationInvalid(implementation);
    }

    function _administers(address implementation, address who) private view returns (bool) {
        try IAccessControl(implementation).hasRole(POLICY_ADMIN_ROLE, who) returns (bool held) {
            return held;
        } catch {
            return false;
        }
    }

    /// @dev An implementation without `paused()` counts as not paused.
    function _isPaused(address implementation) private view returns (bool) {
        try IPausedView(implementation).paused() returns (bool p) {
            return p;
        } catch {
            return false;
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IActionPolicy} from "./interfaces/IActionPolicy.sol";
import {IPolicyRegistry} from "./interfaces/IPolicyRegistry.sol";

/// @title PolicyRegistry
/// @notice Policy id -> current implementation, every version kept. Deploying and
///         upgrading are governed (timelock), so an upgrade is visible on-chain as a
///         scheduled operation before it takes effect.
contract PolicyRegistry is IPolicyRegistry, AccessControl {
    bytes32 public constant POLICY_ADMIN_ROLE = keccak256("POLICY_ADMIN_ROLE");

    mapping(bytes32 policyId => Version[]) private _history;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers the first implementation of a policy id.
    function deploy(bytes32 policyId, address implementation) external onlyRole(POLICY_ADMIN_ROLE) {
        if (_history[policyId].length != 0) revert PolicyAlreadyDeployed(policyId);
        _requireContract(implementation);
        _history[policyId].push(Version(implementation, uint64(block.number)));
        emit PolicyDeployed(policyId, implementation, 1);
    }

    /// @notice Points a policy id at a new implementation.
    function upgrade(bytes32 policyId, address implementation) external onlyRole(POLICY_ADMIN_ROLE) {
        Version[] storage history = _history[policyId];
        if (history.length == 0) revert PolicyUnknown(policyId);
        _requireContract(implementation);
        address previous = history[history.length - 1].implementation;
        history.push(Version(implementation, uint64(block.number)));
        emit PolicyUpgraded(policyId, previous, implementation, history.length);
    }

    /// @inheritdoc IPolicyRegistry
    function current(bytes32 policyId) public view returns (address implementation, uint256 version) {
        Version[] storage history = _history[policyId];
        if (history.length == 0) revert PolicyUnknown(policyId);
        return (history[history.length - 1].implementation, history.length);
    }

    function versionCount(bytes32 policyId) external view returns (uint256) {
        return _history[policyId].length;
    }

    /// @notice Version `version` (1-based) of a policy id.
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
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IActionPolicy} from "./IActionPolicy.sol";

/// @title IRuleBasedPolicy
/// @notice Rules keyed by (role, action type, target), set through governance.
interface IRuleBasedPolicy is IActionPolicy {
    struct Rule {
        bool enabled;
        uint8 allowedDataClasses; // bit i set: data class i may leave (0 public .. 3 restricted)
        uint8 maxRiskScore; // 0-100
        uint32 utcHours; // bit h set: allowed during UTC hour h
        uint256 maxAmount;
        uint256 approvalThreshold; // amounts above this need a human; 0 = never
        bytes32 requiredModel; // model id the agent must run; 0 = any approved model
    }

    /// @notice The rule is inconsistent (threshold above limit, unknown class bits, risk > 100, bad hours).
    error RuleInvalid(bytes32 role, bytes32 actionType, bytes32 target);

    event RuleSet(bytes32 indexed role, bytes32 indexed actionType, bytes32 indexed target, Rule rule);

    /// @notice Sets (or disables, with `enabled` false) the rule for agents of `role` doing `actionType` on `target`.
    function setRule(bytes32 role, bytes32 actionType, bytes32 target, Rule calldata rule) external;

    /// @notice The rule for (role, action type, target); all zero (disabled) when none was set.
    function ruleOf(bytes32 role, bytes32 actionType, bytes32 target) external view returns (Rule memory);
}

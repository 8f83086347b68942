// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {IActionPolicy} from "./interfaces/IActionPolicy.sol";
import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";

/// @title RuleBasedPolicy
/// @notice Per (role, action type, target) rule: an amount limit, a human-approval
///         threshold and the highest data classification allowed. Checks the agent
///         registry in the same call so identity and policy are read at one block.
contract RuleBasedPolicy is IActionPolicy, AccessControl, Pausable {
    bytes32 public constant POLICY_ADMIN_ROLE = keccak256("POLICY_ADMIN_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    struct Rule {
        bool enabled;
        uint8 maxDataClass;
        uint256 maxAmount;
        uint256 approvalThreshold; // amounts above this need a human; 0 = never
    }

    error RuleInvalid(bytes32 role, bytes32 actionType, bytes32 target);

    event RuleSet(
        bytes32 indexed role,
        bytes32 indexed actionType,
        bytes32 indexed target,
        bool enabled,
        uint8 maxDataClass,
        uint256 maxAmount,
        uint256 approvalThreshold
    );

    IAgentRegistry private immutable _registry;
    mapping(bytes32 ruleKey => Rule) private _rules;

    constructor(address admin, IAgentRegistry registry_) {
        _registry = registry_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    function registry() external view returns (IAgentRegistry) {
        return _registry;
    }

    function ruleOf(bytes32 role, bytes32 actionType, bytes32 target) external view returns (Rule memory) {
        return _rules[_key(role, actionType, target)];
    }

    /// @notice Sets or replaces one rule.
    function setRule(bytes32 role, bytes32 actionType, bytes32 target, Rule calldata rule)
        external
        onlyRole(POLICY_ADMIN_ROLE)
    {
        if (rule.approvalThreshold > rule.maxAmount || rule.maxDataClass > 3) {
            revert RuleInvalid(role, actionType, target);
        }
        _rules[_key(role, actionType, target)] = rule;
        emit RuleSet(role, actionType, target, rule.enabled, rule.maxDataClass, rule.maxAmount, rule.approvalThreshold);
    }

    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(POLICY_ADMIN_ROLE) {
        _unpause();
    }

    /// @inheritdoc IActionPolicy
    function evaluate(Action calldata action) external view returns (Verdict memory) {
        if (paused()) return Verdict(Decision.Deny, "POLICY_PAUSED", bytes32(0));
        IAgentRegistry.Agent memory a = _registry.agent(action.agentId);
        if (a.status == IAgentRegistry.Status.Unknown) return Verdict(Decision.Deny, "AGENT_UNKNOWN", bytes32(0));
        if (a.status == IAgentRegistry.Status.Revoked) return Verdict(Decision.Deny, "AGENT_REVOKED", a.modelHash);
        Rule memory rule = _rules[_key(a.role, action.actionType, action.target)];
        if (!rule.enabled) return Verdict(Decision.Deny, "ACTION_NOT_PERMITTED", a.modelHash);
        if (action.dataClass > rule.maxDataClass) {
            return Verdict(Decision.Deny, "DATA_CLASS_NOT_PERMITTED", a.modelHash);
        }
        if (action.amount > rule.maxAmount) return Verdict(Decision.Deny, "AMOUNT_OVER_LIMIT", a.modelHash);
        if (rule.approvalThreshold != 0 && action.amount > rule.approvalThreshold) {
            return Verdict(Decision.RequireApproval, "HUMAN_APPROVAL_REQUIRED", a.modelHash);
        }
        return Verdict(Decision.Allow, "OK", a.modelHash);
    }

    function _key(bytes32 role, bytes32 actionType, bytes32 target) private pure returns (bytes32) {
        return keccak256(abi.encode(role, actionType, target));
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {IActionPolicy} from "./interfaces/IActionPolicy.sol";
import {IRuleBasedPolicy} from "./interfaces/IRuleBasedPolicy.sol";
import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title RuleBasedPolicy
/// @notice One rule per (role, action type, target): allowed data classifications, a
///         maximum risk score, UTC hour windows, a required model, an amount limit and a
///         human-approval threshold. Reads the agent and model registries in the same
///         call, so identity, provenance and policy are evaluated at one block.
///         Rules are set by governance (timelock); a guardian may pause at once, and a
///         paused policy denies everything.
contract RuleBasedPolicy is IRuleBasedPolicy, AccessControl, Pausable {
    bytes32 public constant POLICY_ADMIN_ROLE = keccak256("POLICY_ADMIN_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    uint32 public constant ALL_HOURS = 0x00FFFFFF;

    IAgentRegistry private immutable _agents;
    IModelRegistry private immutable _models;
    mapping(bytes32 ruleKey => Rule) private _rules;

    constructor(address admin, IAgentRegistry agents_, IModelRegistry models_) {
        _agents = agents_;
        _models = models_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    function registries() external view returns (IAgentRegistry agents, IModelRegistry models) {
        return (_agents, _models);
    }

    /// @inheritdoc IRuleBasedPolicy
    function ruleOf(bytes32 role, bytes32 actionType, bytes32 target) external view returns (Rule memory) {
        return _rules[_key(role, actionType, target)];
    }

    /// @inheritdoc IRuleBasedPolicy
    function setRule(bytes32 role, bytes32 actionType, bytes32 target, Rule calldata rule)
        external
        onlyRole(POLICY_ADMIN_ROLE)
    {
        if (
            rule.approvalThreshold > rule.maxAmount || rule.allowedDataClasses > 0x0F || rule.maxRiskScore > 100
                || rule.utcHours > ALL_HOURS || (rule.enabled && rule.utcHours == 0)
        ) {
            revert RuleInvalid(role, actionType, target);
        }
        _rules[_key(role, actionType, target)] = rule;
        emit RuleSet(role, actionType, target, rule);
    }

    /// @notice Emergency stop (guardian, no delay).
    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
    }

    /// @notice Resuming is governed: it waits for the timelock.
    function unpause() external onlyRole(POLICY_ADMIN_ROLE) {
        _unpause();
    }

    /// @inheritdoc IActionPolicy
    function evaluate(Action calldata action) external view returns (Verdict memory) {
        if (paused()) return Verdict(Decision.Deny, "POLICY_PAUSED", bytes32(0));
        IAgentRegistry.Agent memory a = _agents.agent(action.agentId);
        if (a.status == IAgentRegistry.Status.Unknown) return Verdict(Decision.Deny, "AGENT_UNKNOWN", bytes32(0));
        (bytes32 modelHash, bool modelApproved) = _models.provenance(a.modelId);
        if (a.status == IAgentRegistry.Status.Revoked) return Verdict(Decision.Deny, "AGENT_REVOKED", modelHash);
        if (a.keyFingerprint != bytes32(0) && a.keyFingerprint != action.keyFingerprint) {
            return Verdict(Decision.Deny, "KEY_NOT_BOUND", modelHash);
        }
        if (!modelApproved) return Verdict(Decision.Deny, "MODEL_NOT_APPROVED", modelHash);
        Rule memory rule = _rules[_key(a.role, action.actionType, action.target)];
        if (!rule.enabled) return Verdict(Decision.Deny, "ACTION_NOT_PERMITTED", modelHash);
        if (rule.requiredModel != bytes32(0) && rule.requiredModel != a.modelId) {
            return Verdict(Decision.Deny, "MODEL_NOT_APPROVED", modelHash);
        }
        if (action.dataClass > 3 || (rule.allowedDataClasses >> action.dataClass) & 1 == 0) {
            return Verdict(Decision.Deny, "DATA_CLASS_NOT_PERMITTED", modelHash);
        }
        if (action.riskScore > rule.maxRiskScore) return Verdict(Decision.Deny, "RISK_TOO_HIGH", modelHash);
        if ((rule.utcHours >> ((block.timestamp / 3600) % 24)) & 1 == 0) {
            return Verdict(Decision.Deny, "OUTSIDE_TIME_WINDOW", modelHash);
        }
        if (action.amount > rule.maxAmount) return Verdict(Decision.Deny, "AMOUNT_OVER_LIMIT", modelHash);
        if (rule.approvalThreshold != 0 && action.amount > rule.approvalThreshold) {
            return Verdict(Decision.RequireApproval, "HUMAN_APPROVAL_REQUIRED", modelHash);
        }
        return Verdict(Decision.Allow, "OK", modelHash);
    }

    function _key(bytes32 role, bytes32 actionType, bytes32 target) private pure returns (bytes32) {
        return keccak256(abi.encode(role, actionType, target));
    }
}

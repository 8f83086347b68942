// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {GuardianControl} from "./GuardianControl.sol";
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
///
///         `evaluate` answers with the first check that fails, in this order (each a stable reason code):
///         1. `POLICY_PAUSED`: the policy is paused;
///         2. `AGENT_UNKNOWN`: the agent id is not registered;
///         3. `AGENT_REVOKED`: the agent is revoked;
///         4. `KEY_NOT_BOUND`: the agent is bound to a key and the presented key differs;
///         5. `MODEL_NOT_APPROVED`: the agent's model is unregistered or deprecated;
///         6. `ACTION_NOT_PERMITTED`: no enabled rule for (agent role, action type, target);
///         7. `MODEL_NOT_APPROVED`: the rule requires another model;
///         8. `DATA_CLASS_NOT_PERMITTED`: data class above 3 or not in the rule's mask;
///         9. `RISK_TOO_HIGH`: risk score above the rule's maximum;
///         10. `OUTSIDE_TIME_WINDOW`: the UTC hour of `block.timestamp` is not in the rule's mask
///             (the authorizer sets `block.timestamp` to its own clock, bounded against the head block);
///         11. `AMOUNT_OVER_LIMIT`: amount above the rule's maximum;
///         12. `HUMAN_APPROVAL_REQUIRED` (decision RequireApproval): amount above a non-zero approval threshold;
///         else `OK` (decision Allow). Every verdict but the first two carries the model's artifact hash.
contract RuleBasedPolicy is IRuleBasedPolicy, GuardianControl, Pausable {
    bytes32 public constant POLICY_ADMIN_ROLE = keccak256("POLICY_ADMIN_ROLE");
    uint32 public constant ALL_HOURS = 0x00FFFFFF;

    IAgentRegistry private immutable _agents;
    IModelRegistry private immutable _models;
    mapping(bytes32 ruleKey => Rule) private _rules;

    /// @param admin receives `DEFAULT_ADMIN_ROLE` (the deployer during the bootstrap, the timelock for a v2)
    /// @param agents_ the AgentRegistry `evaluate` reads
    /// @param models_ the ModelRegistry `evaluate` reads
    constructor(address admin, IAgentRegistry agents_, IModelRegistry models_) {
        _agents = agents_;
        _models = models_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice The registries `evaluate` reads (the authorizer must watch both for state changes).
    function registries() external view returns (IAgentRegistry agents, IModelRegistry models) {
        return (_agents, _models);
    }

    /// @inheritdoc IRuleBasedPolicy
    function ruleOf(bytes32 role, bytes32 actionType, bytes32 target) external view returns (Rule memory) {
        return _rules[_key(role, actionType, target)];
    }

    /// @inheritdoc IRuleBasedPolicy
    /// @dev Requirements:
    /// - the caller has `POLICY_ADMIN_ROLE`;
    /// - the rule is consistent (reverts {RuleInvalid}): approval threshold not above the amount limit,
    ///   data class bits within 0x0F, risk at most 100, hours within `ALL_HOURS`, an enabled rule has hours.
    ///
    /// Emits a {RuleSet} event.
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

    /// @notice Emergency stop, no delay: a paused policy denies everything (`POLICY_PAUSED`).
    /// @dev Pausing only removes power, so the timelock may pause too (a governed upgrade pauses the new
    /// implementation when the old one is paused, so an upgrade never lifts the guardian's brake).
    /// Requirements:
    /// - the caller has `GUARDIAN_ROLE` or `POLICY_ADMIN_ROLE` (reverts {AccessControlUnauthorizedAccount});
    /// - the policy is not paused (reverts {EnforcedPause}).
    ///
    /// Emits a {Paused} event.
    function pause() external {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(POLICY_ADMIN_ROLE, msg.sender)) {
            revert AccessControlUnauthorizedAccount(msg.sender, GUARDIAN_ROLE);
        }
        _pause();
    }

    /// @notice Resuming is governed: it waits for the timelock.
    /// @dev Requirements:
    /// - the caller has `POLICY_ADMIN_ROLE`;
    /// - the policy is paused (reverts {ExpectedPause}).
    ///
    /// Emits an {Unpaused} event.
    function unpause() external onlyRole(POLICY_ADMIN_ROLE) {
        _unpause();
    }

    /// @inheritdoc IActionPolicy
    /// @dev The order of the checks is in the contract's notice above.
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

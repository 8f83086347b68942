// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IActionPolicy
/// @notice A policy decides whether a structured agent action may run. `evaluate`
///         is a view: the authorizer executes it locally against state pinned at a block.
interface IActionPolicy {
    enum Decision {
        Deny,
        Allow,
        RequireApproval
    }

    /// @notice A structured action, built by the authorizer from the request itself.
    struct Action {
        bytes32 agentId; // keccak256(SPIFFE ID)
        bytes32 keyFingerprint; // SHA-256 of the presented certificate's SPKI
        bytes32 actionType; // keccak256 of e.g. "payment.transfer"
        bytes32 target; // keccak256 of the target service name
        uint256 amount; // smallest currency unit; 0 when the route carries none
        uint8 dataClass; // 0 public, 1 internal, 2 confidential, 3 restricted
        uint8 riskScore; // 0-100, from the operator's risk feed
    }

    /// @notice Result of an evaluation. `reason` is a stable, right-padded ASCII code.
    struct Verdict {
        Decision decision;
        bytes32 reason;
        bytes32 modelHash; // artifact SHA-256 of the agent's model (0 when unknown)
    }

    /// @notice The verdict for `action` at the current state (a view: no state change, no event).
    function evaluate(Action calldata action) external view returns (Verdict memory);
}

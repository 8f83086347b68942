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
        bytes32 actionType; // e.g. "payment.transfer"
        bytes32 target; // target service name
        uint256 amount; // smallest currency unit; 0 when the route carries none
        uint8 dataClass; // 0 public, 1 internal, 2 confidential, 3 restricted
    }

    /// @notice Result of an evaluation. `reason` is a stable, right-padded ASCII code.
    struct Verdict {
        Decision decision;
        bytes32 reason;
        bytes32 modelHash;
    }

    function evaluate(Action calldata action) external view returns (Verdict memory);
}

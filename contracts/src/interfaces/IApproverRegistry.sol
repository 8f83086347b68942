// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IApproverRegistry
/// @notice The people who may approve actions a policy holds for human approval:
///         approver name id -> Ed25519 public key of their approval-signing key.
interface IApproverRegistry {
    error ApproverAlreadyActive(bytes32 nameId);
    error ApproverNotActive(bytes32 nameId);
    error ApproverKeyMissing(bytes32 nameId);
    /// @notice The approver name id is zero.
    error ApproverNameMissing();

    event ApproverRegistered(bytes32 indexed nameId, bytes32 ed25519Key);
    event ApproverRevoked(bytes32 indexed nameId, address indexed by);

    /// @notice The approver's Ed25519 public key (32 bytes) and whether they may approve now.
    function approverKey(bytes32 nameId) external view returns (bytes32 ed25519Key, bool active);
}

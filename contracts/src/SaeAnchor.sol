// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ISaeAnchor} from "./interfaces/ISaeAnchor.sol";

/// @title SaeAnchor
/// @notice One append-only log of Merkle batches. The contract, not the caller, assigns each batch the next
///         `leafCount` sequence numbers, so ranges are strictly consecutive (never overlapping, never backwards,
///         no gaps) and a root is bound to its range when it is first anchored. Anchoring a root again with the
///         same leaf count changes nothing and returns its range: an honest anchorer whose transaction was
///         front-run, or that re-sends after a reorg or a crash, stays idempotent.
/// @dev Sequence numbers start at 1. Only leaf hashes built by the contract from a value are ever checked
///      against a root (`verifyInclusion` takes the value, not a leaf), so an inner node cannot pass as a leaf.
contract SaeAnchor is ISaeAnchor, AccessControl {
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");
    /// @notice Largest batch one call may anchor (keeps a leaves-mode transaction under the block gas limit).
    uint256 public constant MAX_BATCH_LEAVES = 16384;

    mapping(bytes32 root => Batch) private _batches;
    uint256 private _batchCount;
    uint64 private _nextSeq = 1;

    /// @param admin receives DEFAULT_ADMIN_ROLE (the timelock after deployment)
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Anchors a batch root of `leafCount` values (root-only mode: the values stay off-chain).
    /// @dev Requirements:
    /// - the caller holds `ANCHORER_ROLE`;
    /// - `root` is not zero, `leafCount` is 1..MAX_BATCH_LEAVES;
    /// - `root` is not anchored yet, or was anchored with the same `leafCount` (then nothing changes).
    ///
    /// Emits a {BatchAnchored} event when the root is new.
    /// @return firstSeq first sequence number of the batch's range
    /// @return lastSeq last sequence number of the batch's range
    function anchor(bytes32 root, uint64 leafCount)
        external
        onlyRole(ANCHORER_ROLE)
        returns (uint64 firstSeq, uint64 lastSeq)
    {
        return _anchor(root, leafCount, false);
    }

    /// @notice Anchors a batch root and carries its values in this transaction's calldata (leaves mode), so the
    ///         record set can be rebuilt and proven from chain data alone. The contract does not rebuild the tree
    ///         (that would cost a sort on-chain); whoever reads the values rebuilds it and compares the root.
    /// @dev Requirements:
    /// - the caller holds `ANCHORER_ROLE`;
    /// - `root` is not zero, `values` has 1..MAX_BATCH_LEAVES entries;
    /// - `root` is not anchored yet, or was anchored with the same leaf count (then nothing changes).
    ///
    /// Emits a {BatchAnchored} event (`withLeaves` true) when the root is new.
    /// @return firstSeq first sequence number of the batch's range
    /// @return lastSeq last sequence number of the batch's range
    function anchorWithLeaves(bytes32 root, bytes32[] calldata values)
        external
        onlyRole(ANCHORER_ROLE)
        returns (uint64 firstSeq, uint64 lastSeq)
    {
        return _anchor(root, uint64(values.length), true);
    }

    /// @notice The sequence number the next new batch starts at.
    function nextSeq() external view returns (uint64) {
        return _nextSeq;
    }

    /// @notice How many distinct batches were anchored.
    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    /// @notice The batch a root was anchored as (all zero when it never was).
    function batchOf(bytes32 root) external view returns (Batch memory) {
        return _batches[root];
    }

    /// @notice The StandardMerkleTree leaf of one anchored value: keccak256(keccak256(abi.encode(value))).
    function leafHash(bytes32 value) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(value))));
    }

    /// @notice True when `value` is a leaf of the anchored tree `root`. Takes the value and hashes it into its leaf
    ///         here, so an inner node of the tree (a 64-byte preimage) can never be proven as a value.
    function verifyInclusion(bytes32 root, bytes32 value, bytes32[] calldata proof) external view returns (bool) {
        return _batches[root].blockNumber != 0 && MerkleProof.verifyCalldata(proof, root, leafHash(value));
    }

    function _anchor(bytes32 root, uint64 leafCount, bool withLeaves) private returns (uint64, uint64) {
        if (root == bytes32(0)) revert ZeroRoot();
        if (leafCount == 0) revert EmptyBatch();
        if (leafCount > MAX_BATCH_LEAVES) revert BatchTooLarge(leafCount, MAX_BATCH_LEAVES);
        Batch storage existing = _batches[root];
        if (existing.blockNumber != 0) {
            if (existing.leafCount != leafCount) revert RootConflict(root, existing.leafCount, leafCount);
            return (existing.firstSeq, existing.lastSeq); // idempotent re-anchoring
        }
        uint64 first = _nextSeq;
        uint64 last = first + leafCount - 1;
        _nextSeq = last + 1;
        _batches[root] = Batch(uint64(block.number), leafCount, first, last);
        uint256 index = _batchCount++;
        emit BatchAnchored(index, root, leafCount, first, last, withLeaves);
        return (first, last);
    }
}

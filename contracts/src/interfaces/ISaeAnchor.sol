// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISaeAnchor
/// @notice Records Merkle roots of batches of anchored values (the SHA-256 of an SAE's or a denial's JWS
///         signing input, see docs/evidence-format.md), in one log with strictly consecutive sequence numbers.
///         Leaves follow the OpenZeppelin StandardMerkleTree convention for one `bytes32` column:
///         keccak256(bytes.concat(keccak256(abi.encode(bytes32 value)))).
interface ISaeAnchor {
    /// @notice A batch as bound at anchoring: its block and its range of the contract's own sequence.
    struct Batch {
        uint64 blockNumber;
        uint64 leafCount;
        uint64 firstSeq;
        uint64 lastSeq;
    }

    /// @notice The batch has no leaves.
    error EmptyBatch();
    /// @notice The batch has more leaves than `MAX_BATCH_LEAVES`.
    error BatchTooLarge(uint256 leafCount, uint256 maxLeaves);
    /// @notice The root was anchored before with another leaf count: a root is bound to one range for good.
    error RootConflict(bytes32 root, uint64 anchoredLeafCount, uint64 leafCount);
    /// @notice The root is zero (no tree has it).
    error ZeroRoot();

    /// @notice A new batch took the sequence range [firstSeq, lastSeq]; `withLeaves` says the transaction's
    ///         calldata carries the batch's values (leaves mode), so the batch is recoverable from the chain alone.
    event BatchAnchored(
        uint256 indexed batchIndex,
        bytes32 indexed root,
        uint64 leafCount,
        uint64 firstSeq,
        uint64 lastSeq,
        bool withLeaves
    );

    function anchor(bytes32 root, uint64 leafCount) external returns (uint64 firstSeq, uint64 lastSeq);

    function anchorWithLeaves(bytes32 root, bytes32[] calldata values)
        external
        returns (uint64 firstSeq, uint64 lastSeq);

    function nextSeq() external view returns (uint64);

    function batchCount() external view returns (uint256);

    function batchOf(bytes32 root) external view returns (Batch memory);

    function leafHash(bytes32 value) external pure returns (bytes32);

    function verifyInclusion(bytes32 root, bytes32 value, bytes32[] calldata proof) external view returns (bool);
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISaeAnchor
/// @notice Records Merkle roots of batches of SAE / denial-record hashes.
///         Leaves follow the OpenZeppelin StandardMerkleTree convention:
///         keccak256(bytes.concat(keccak256(abi.encode(bytes32 saeSha256)))).
interface ISaeAnchor {
    struct Batch {
        uint64 blockNumber;
        uint64 leafCount;
        uint64 firstSeq;
        uint64 lastSeq;
    }

    error RootAlreadyAnchored(bytes32 root);
    error EmptyBatch();
    error InvalidSequenceRange(uint64 firstSeq, uint64 lastSeq, uint64 leafCount);

    event BatchAnchored(
        uint256 indexed batchIndex, bytes32 indexed root, uint64 leafCount, uint64 firstSeq, uint64 lastSeq
    );

    function batchOf(bytes32 root) external view returns (Batch memory);

    function verifyInclusion(bytes32 root, bytes32 leaf, bytes32[] calldata proof) external view returns (bool);
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ISaeAnchor} from "./interfaces/ISaeAnchor.sol";

/// @title SaeAnchor
/// @notice Anchors Merkle roots of SAE and denial-record hashes, one event per batch.
contract SaeAnchor is ISaeAnchor, AccessControl {
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    mapping(bytes32 root => Batch) private _batches;
    uint256 private _batchCount;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Records a batch root covering queue sequence numbers [firstSeq, lastSeq].
    function anchor(bytes32 root, uint64 leafCount, uint64 firstSeq, uint64 lastSeq)
        external
        onlyRole(ANCHORER_ROLE)
    {
        if (leafCount == 0) revert EmptyBatch();
        if (lastSeq < firstSeq || lastSeq - firstSeq + 1 != leafCount) {
            revert InvalidSequenceRange(firstSeq, lastSeq, leafCount);
        }
        if (_batches[root].blockNumber != 0) revert RootAlreadyAnchored(root);
        _batches[root] = Batch(uint64(block.number), leafCount, firstSeq, lastSeq);
        uint256 index = _batchCount++;
        emit BatchAnchored(index, root, leafCount, firstSeq, lastSeq);
    }

    function batchCount() external view returns (uint256) {
        return _batchCount;
    }

    /// @inheritdoc ISaeAnchor
    function batchOf(bytes32 root) external view returns (Batch memory) {
        return _batches[root];
    }

    /// @inheritdoc ISaeAnchor
    function verifyInclusion(bytes32 root, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        return _batches[root].blockNumber != 0 && MerkleProof.verifyCalldata(proof, root, leaf);
    }
}

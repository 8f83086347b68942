// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @title IdentityRegistry8004
/// @notice An ERC-8004 ("Trustless Agents") Identity Registry, implemented from the standard's interface:
///         each agent is an ERC-721 token whose URI is the agent's registration file, with on-chain
///         key/value metadata its owner sets. Sealgate publishes its agents here so another organisation
///         can resolve one (SPIFFE ID, the Sealgate AgentRegistry holding its policy state) from the chain.
///         Open registration, as the standard: the registry vouches for nothing; a resolver checks the
///         Sealgate AgentRegistry the registration names.
contract IdentityRegistry8004 is ERC721URIStorage {
    struct MetadataEntry {
        string metadataKey;
        bytes metadataValue;
    }

    event Registered(uint256 indexed agentId, string agentURI, address indexed owner);
    event URIUpdated(uint256 indexed agentId, string newURI, address indexed updatedBy);
    event MetadataSet(uint256 indexed agentId, string indexed indexedMetadataKey, string metadataKey, bytes metadataValue);

    error NotAgentOwner(uint256 agentId, address caller);

    uint256 private _nextAgentId = 1;
    mapping(uint256 => mapping(string => bytes)) private _metadata;

    constructor() ERC721("ERC-8004 Agent Identity", "AGENT") {}

    function register(string calldata agentURI, MetadataEntry[] calldata metadata) external returns (uint256 agentId) {
        agentId = _mintAgent(agentURI);
        for (uint256 i = 0; i < metadata.length; i++) {
            _setMetadata(agentId, metadata[i].metadataKey, metadata[i].metadataValue);
        }
    }

    function register(string calldata agentURI) external returns (uint256 agentId) {
        agentId = _mintAgent(agentURI);
    }

    function register() external returns (uint256 agentId) {
        agentId = _mintAgent("");
    }

    function setAgentURI(uint256 agentId, string calldata newURI) external {
        _onlyOwner(agentId);
        _setTokenURI(agentId, newURI);
        emit URIUpdated(agentId, newURI, msg.sender);
    }

    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external {
        _onlyOwner(agentId);
        _setMetadata(agentId, metadataKey, metadataValue);
    }

    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory) {
        _requireOwned(agentId);
        return _metadata[agentId][metadataKey];
    }

    function totalAgents() external view returns (uint256) {
        return _nextAgentId - 1;
    }

    function _mintAgent(string memory agentURI) private returns (uint256 agentId) {
        agentId = _nextAgentId++;
        _safeMint(msg.sender, agentId);
        if (bytes(agentURI).length > 0) _setTokenURI(agentId, agentURI);
        emit Registered(agentId, agentURI, msg.sender);
    }

    function _setMetadata(uint256 agentId, string memory key, bytes memory value) private {
        _metadata[agentId][key] = value;
        emit MetadataSet(agentId, key, key, value);
    }

    function _onlyOwner(uint256 agentId) private view {
        if (ownerOf(agentId) != msg.sender) revert NotAgentOwner(agentId, msg.sender);
    }
}

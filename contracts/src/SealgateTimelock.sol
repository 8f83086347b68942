// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title SealgateTimelock
/// @notice OpenZeppelin TimelockController, unchanged: owns every Sealgate contract.
///         Proposer (and canceller): the owners' Safe multisig. Executor: anyone, once
///         the delay has passed. No admin: the timelock administers itself.
contract SealgateTimelock is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors)
        TimelockController(minDelay, proposers, executors, address(0))
    {}
}

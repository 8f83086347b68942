// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";

/// @notice Safe 1.4.1's transaction guard interface (interface id 0xe6d7a83a), declared here.
interface ISafeTransactionGuard is IERC165 {
    /// @notice Called by the Safe before a Safe transaction; reverting refuses it.
    function checkTransaction(
        address to,
        uint256 value,
        bytes memory data,
        uint8 operation,
        uint256 safeTxGas,
        uint256 baseGas,
        uint256 gasPrice,
        address gasToken,
        address payable refundReceiver,
        bytes memory signatures,
        address msgSender
    ) external;

    /// @notice Called by the Safe after a Safe transaction.
    function checkAfterExecution(bytes32 txHash, bool success) external;
}

/// @title SafeTimelockGuard
/// @notice Safe transaction guard: the owners' Safe may only CALL other contracts (in Sealgate:
///         propose to and cancel on the timelock). A Safe transaction to the Safe itself (addOwner,
///         removeOwner, swapOwner, changeThreshold, setGuard, enableModule, disableModule,
///         setFallbackHandler) or any delegatecall is refused, so owners and threshold change only
///         through the timelock, which is the Safe's module: a governed operation calls
///         `execTransactionFromModule(safe, 0, swapOwner(...), CALL)` after the delay, in public.
///         Safe 1.4.1 does not run the guard on module transactions. Stateless: `msg.sender` is the Safe.
contract SafeTimelockGuard is ISafeTransactionGuard {
    /// @notice A Safe transaction targets the Safe itself (owner, threshold, guard or module management).
    error SafeSelfCallForbidden(bytes4 selector);
    /// @notice A Safe transaction is a delegatecall (it could rewrite the Safe's storage).
    error SafeDelegateCallForbidden(address to);

    /// @notice Called by the Safe before executing a transaction; reverts to refuse it.
    /// @dev Requirements:
    /// - `operation` is CALL (0) (reverts {SafeDelegateCallForbidden});
    /// - `to` is not the calling Safe (reverts {SafeSelfCallForbidden}).
    function checkTransaction(
        address to,
        uint256,
        bytes memory data,
        uint8 operation,
        uint256,
        uint256,
        uint256,
        address,
        address payable,
        bytes memory,
        address
    ) external view {
        if (operation != 0) revert SafeDelegateCallForbidden(to);
        if (to == msg.sender) revert SafeSelfCallForbidden(data.length >= 4 ? bytes4(data) : bytes4(0));
    }

    /// @notice Called by the Safe after executing a transaction; nothing to check.
    function checkAfterExecution(bytes32, bool) external pure {}

    /// @notice ERC-165: the Safe's guard interface and ERC-165 itself.
    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == type(ISafeTransactionGuard).interfaceId || interfaceId == type(IERC165).interfaceId;
    }
}

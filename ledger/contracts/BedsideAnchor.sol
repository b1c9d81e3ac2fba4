// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title BedsideAnchor
/// @notice Publishes the hash of a signed bedside session checkpoint (or the RFC 6962 root of a
///         batch of such hashes) as an event, so that a reviewer can later show that the
///         checkpoint existed no later than the block that carries it.
/// @dev The contract keeps no state and trusts no one: anyone may anchor anything, and the event
///      records who did. Verification therefore checks the submitter against the key the
///      reviewer expects. Only a 32-byte hash and a count ever reach the chain.
contract BedsideAnchor {
    /// @param submitter the account that sent the transaction
    /// @param root SHA-256 of the signed checkpoint note, or the RFC 6962 root of a batch of them
    /// @param size the checkpointed tree size (single anchor) or the number of leaves (batch)
    event Anchored(address indexed submitter, bytes32 indexed root, uint64 size);

    /// @notice The zero root anchors nothing and is almost always a caller's bug.
    error ZeroRoot();

    function anchor(bytes32 root, uint64 size) external {
        if (root == bytes32(0)) revert ZeroRoot();
        emit Anchored(msg.sender, root, size);
    }
}

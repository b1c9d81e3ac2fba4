"""RFC 6962 / RFC 9162 Merkle tree hashing: leaves, roots, inclusion and consistency proofs.

The tree is the one Certificate Transparency and the Go checksum database use: a leaf hashes as
SHA-256(0x00 || data), an interior node as SHA-256(0x01 || left || right), and a tree of n leaves
splits at the largest power of two below n. `Frontier` keeps only the right edge of the tree (one
hash per set bit of the size), so appending is O(log n) time and memory and a reader can compute
the root of a million-entry ledger without holding it. Verification follows RFC 9162 §2.1.3.2 and
§2.1.4.2 and is checked against the transparency-dev/merkle vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from bedside.errors import LedgerIntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one ledger entry's bytes."""
    return _sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


class ProofError(LedgerIntegrityError):
    """An inclusion or consistency proof does not verify."""


class Frontier:
    """The right edge of an RFC 6962 tree: O(log n) append and root.

    `_stack[j]` is the root of a perfect subtree; sizes are the set bits of `size`, largest first,
    so the tree's root folds them from the right.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self.size = 0

    def append(self, leaf_hash: bytes) -> None:
        node = leaf_hash
        n = self.size
        stack = self._stack
        # Each trailing 1-bit of the old size is a perfect subtree of the same height: merge it.
        while n & 1:
            node = _sha256(b"\x01" + stack.pop() + node).digest()
            n >>= 1
        stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        stack = self._stack
        node = stack[-1]
        for left in reversed(stack[:-1]):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def copy(self) -> Frontier:
        other = Frontier()
        other._stack = list(self._stack)
        other.size = self.size
        return other


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Every perfect subtree's root, level by level, so proofs cost O(log n) hashes.

    `_levels[k]` holds, 32 bytes each, the roots of the aligned perfect subtrees of 2**k leaves
    (level 0 = leaf hashes). Appending adds on average one hash; memory is about 64 bytes per
    entry, which the writer and the prover can afford and the streaming verifier never needs.
    """

    __slots__ = ("_levels", "_root")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        # (size, root) of the last whole-tree root: a prefix's root never changes (the tree
        # only grows), and the sentry asks twice at a cell's end (checkpoint and receipt).
        self._root: tuple[int, bytes] = (0, EMPTY_ROOT)

    def append(self, leaf_hash: bytes) -> None:
        levels = self._levels
        levels[0] += leaf_hash
        k = 0
        # A level that now holds an even number of nodes has completed a pair: hash it upward.
        while not (len(levels[k]) // HASH_SIZE) & 1:
            level = levels[k]
            node = _sha256(b"\x01" + level[-2 * HASH_SIZE :]).digest()
            if k + 1 == len(levels):
                levels.append(bytearray())
            levels[k + 1] += node
            k += 1

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def __getitem__(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self._levels[0][i * HASH_SIZE : (i + 1) * HASH_SIZE])

    def subtree_root(self, start: int, end: int) -> bytes:
        """Root of the RFC 6962 tree over leaves [start, end) (start aligned as in a proof)."""
        n = end - start
        if n <= 0:
            return EMPTY_ROOT
        k = n.bit_length() - 1
        if n == 1 << k and start % n == 0:
            j = start >> k
            return bytes(self._levels[k][j * HASH_SIZE : (j + 1) * HASH_SIZE])
        split = _split(n)
        return hash_children(
            self.subtree_root(start, start + split), self.subtree_root(start + split, end)
        )

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree over the first `size` leaves (all of them by default).

        The prefix splits into the perfect subtrees of its size's set bits, each already stored
        aligned in `_levels`; the root folds them from the right (as `Frontier` does), smallest
        first: O(popcount) hashes, no recursion, no list. It runs for every receipt the sentry
        signs. The subtree of bit k covers the leaves from `(n >> (k + 1)) << (k + 1)` on, which
        is node `(n >> (k + 1)) << 1` of level k.
        """
        n = len(self) if size is None else size
        if n <= 0 or n > len(self):
            return self.subtree_root(0, n)
        if self._root[0] == n:
            return self._root[1]
        levels = self._levels
        node = b""
        k, m = 0, n
        while m:
            if m & 1:
                j = (m >> 1) * 2 * HASH_SIZE
                sub = levels[k][j : j + HASH_SIZE]
                node = _sha256(b"\x01" + sub + node).digest() if node else bytes(sub)
            m >>= 1
            k += 1
        if n == len(self):
            self._root = (n, node)
        return node

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size])."""
        if not 0 <= index < size <= len(self):
            raise ProofError(f"no inclusion proof for entry {index} in a tree of size {size}")
        proof: list[bytes] = []
        start, end, m = 0, size, index
        # Walk down from the root, collecting the sibling subtree at each level (root-first).
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                proof.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_root(start, start + k))
                start += k
                m -= k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2])."""
        if not 0 < size1 <= size2 <= len(self):
            raise ProofError(f"no consistency proof from size {size1} to size {size2}")
        if size1 == size2:
            return []
        proof: list[bytes] = []
        start, end, m, complete = 0, size2, size1, True
        while True:
            n = end - start
            if m == n:
                if not complete:
                    proof.append(self.subtree_root(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_root(start, start + k))
                start += k
                m -= k
                complete = False
        proof.reverse()
        return proof


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    frontier = Frontier()
    for leaf in leaf_hashes:
        frontier.append(leaf)
    return frontier.root()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is entry `index` of the tree of `size` leaves with `root`.

    Raises ProofError; returns None on success (no boolean for a security decision).
    """
    if index < 0 or index >= size:
        raise ProofError(f"entry index {index} is outside a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE or len(root) != HASH_SIZE:
        raise ProofError("leaf hash and root must be 32-byte SHA-256 hashes")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("inclusion proof holds a hash that is not 32 bytes")
    computed = _root_from_inclusion(leaf_hash, index, size, proof)
    if computed != root:
        raise ProofError(
            f"inclusion proof for entry {index} does not lead to the root {root.hex()[:16]}…"
        )


def _siblings(
    fn: int, sn: int, path: Sequence[bytes], *, longer: str, shorter: str
) -> Iterator[tuple[bytes, bool]]:
    """The walk of RFC 9162 §2.1.3.2 and §2.1.4.2 from node `fn` up a tree whose last node is
    `sn`: each hash of `path` with True where it is the left sibling, False where the right.
    Raises ProofError (`longer` or `shorter`) when `path` does not fit the tree's depth."""
    for c in path:
        if sn == 0:
            raise ProofError(longer)
        left = bool(fn & 1) or fn == sn
        yield c, left
        if left and not fn & 1:
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(shorter)


def _root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    # RFC 9162 §2.1.3.2.
    r = leaf_hash
    for p, left in _siblings(
        index,
        size - 1,
        proof,
        longer="inclusion proof is longer than the tree is deep",
        shorter="inclusion proof is shorter than the tree is deep",
    ):
        r = hash_children(p, r) if left else hash_children(r, p)
    return r


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1). Raises ProofError."""
    if size2 < size1:
        raise ProofError(f"tree size went backwards: {size1} then {size2}")
    if size1 == 0:
        # Every tree extends the empty tree; a proof "from zero" proves nothing, so refuse it.
        raise ProofError("a consistency proof from an empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if root1 != root2:
            raise ProofError(f"two different roots for the same tree size {size1}")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to {size2}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("consistency proof holds a hash that is not 32 bytes")
    # RFC 9162 §2.1.4.2.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c, left in _siblings(
        fn,
        sn,
        path[1:],
        longer="consistency proof is longer than needed",
        shorter="consistency proof is shorter than needed",
    ):
        if left:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
        else:
            sr = hash_children(sr, c)
    if fr != root1:
        raise ProofError(f"consistency proof does not reproduce the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not reproduce the root of size {size2}")

"""The Merkle Tree Hash of RFC 6962 section 2.1 over a checkpoint's record hashes.

A checkpoint signs the root over the hashes of records ``first_seq..seq``, so an auditor holding one
record and its audit path can prove it belongs to a signed checkpoint without the rest of the trail.
Leaves and nodes are domain-separated (RFC 6962 section 2.1)::

    leaf = SHA-256(0x00 || record hash)
    node = SHA-256(0x01 || left || right)

:class:`MerkleBuilder` computes the root in one pass with memory logarithmic in the number of
leaves, so :mod:`adapter.audit.verify` can stream millions of records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


class EmptyMerkleTreeError(ValueError):
    """A checkpoint must cover at least one record; RFC 6962's empty-tree hash is never used here."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleBuilder:
    """Adds leaves in order; :meth:`root` is RFC 6962's MTH of all leaves added so far.

    The stack holds perfect subtrees of strictly decreasing size (the binary digits of the leaf
    count). RFC 6962 splits ``n`` leaves at the largest power of two below ``n``, which is exactly
    folding those subtrees from the right: MTH = node(T_a, node(T_b, ... T_z)).
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaf count, subtree hash)
        self.count = 0

    def add(self, data: bytes) -> None:
        size, digest = 1, leaf_hash(data)
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, digest = left_size + size, node_hash(left, digest)
        self._stack.append((size, digest))
        self.count += 1

    def root(self) -> bytes:
        if not self._stack:
            raise EmptyMerkleTreeError("a Merkle root needs at least one record")
        digest = self._stack[-1][1]
        for _size, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """RFC 6962 MTH over ``leaves`` (record hashes, in seq order); refuses an empty range."""
    builder = MerkleBuilder()
    for leaf in leaves:
        builder.add(leaf)
    return builder.root()

"""The Merkle tree of RFC 9162 §2.1 (the RFC 6962 tree) over SHA-256: hashes, proofs, verification.

Why this tree: it is the one Certificate Transparency, the Go checksum database and every C2SP
transparency log use, so an auditor can check Bastion's audit log with tools nobody here wrote.

Three layers, all pure:

* ``root``, ``inclusion_proof`` and ``consistency_proof`` take the whole list of leaf hashes: the
  RFC's definitions, written to be read, and the reference the stored-node versions are tested
  against.
* :class:`Frontier` is the right edge of the tree (one complete-subtree hash per set bit of the
  size). Appending a leaf touches only that edge, never the history, and returns the complete
  subtree nodes the append created so the log can store them.
* ``subtree_root``, ``inclusion_proof_at`` and ``consistency_proof_at`` build the same proofs from
  those stored complete-subtree nodes (a :class:`NodeSource`), reading O(log² n) of them at most,
  so serving a proof never rehashes the log.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 literally and never raises: anything malformed
(a hash that is not 32 bytes, a size or index out of range, a proof too long or too short) is
simply ``False``. The edge cases follow the CT implementations (transparency-dev/merkle):

* equal sizes are consistent only with an empty proof and equal roots (size 0 included);
* old size 0 is consistent with any newer tree, with an empty proof, whatever the roots: the empty
  tree is a prefix of every tree, so there is nothing to prove;
* every hash must still be 32 bytes, even the ones those two rules do not compare.

A proof does not commit to the tree size by itself: where the hashing path is the same (leaf 0 of
a tree of 3 or of 4, say) a proof verifies for either size against the same root. Size and root
must therefore come from one signed checkpoint, as every caller here takes them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypedDict

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) — the root of the empty tree (RFC 9162 §2.1.1)."""
_HEX_HASH = re.compile("[0-9a-f]{64}")

Node = tuple[int, int, bytes]
"""A complete subtree ``(level, index, hash)``: leaves [index·2^level, (index+1)·2^level)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the 0x00 prefix keeps a leaf from posing as an inner node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2): where the RFC splits a tree of n."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


RangeRoot = Callable[[int, int], bytes]
"""MTH(D[start:end]) for a range of the leaves, however the caller obtains it."""


def _path(range_root: RangeRoot, m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]) of RFC 9162 §2.1.3.1, siblings listed from the leaf up."""
    proof: list[bytes] = []
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            proof.append(range_root(start + k, end))
            end = start + k
        else:
            proof.append(range_root(start, start + k))
            start, m = start + k, m - k
    proof.reverse()
    return proof


def _subproof(range_root: RangeRoot, m: int, start: int, end: int) -> list[bytes]:
    """SUBPROOF(m, D[start:end], true) of RFC 9162 §2.1.4.1, listed from the bottom up."""
    proof: list[bytes] = []
    complete = True  # the b flag: is D[start:start+m] still a subtree the verifier already has?
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(range_root(start + k, end))
            end = start + k
        else:
            proof.append(range_root(start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(range_root(start, end))
    proof.reverse()
    return proof


def _list_range_root(leaf_hashes: Sequence[bytes]) -> RangeRoot:
    def mth(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaf_hashes[start]
        k = _split(end - start)
        return node_hash(mth(start, start + k), mth(start + k, end))

    return mth


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 from every leaf hash (O(n); the log uses :class:`Frontier`)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _list_range_root(leaf_hashes)(0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of all ``leaf_hashes``."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _path(_list_range_root(leaf_hashes), index, 0, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the first ``old_size`` leaves are a prefix of ``leaf_hashes``.

    Empty when ``old_size`` is 0 or the whole tree: those need nothing proved (module docstring).
    """
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    if old_size in (0, len(leaf_hashes)):
        return []
    return _subproof(_list_range_root(leaf_hashes), old_size, 0, len(leaf_hashes))


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` put ``leaf_hash`` at ``index`` of the tree ``root``?"""
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_size(index) and _is_size(size)):
        return False
    if index >= size or not all(_is_hash(p) for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``old_root`` of ``old_size`` a prefix of ``new_root``?"""
    if not (_is_size(old_size) and _is_size(new_size) and _is_hash(old_root)):
        return False
    if not _is_hash(new_root) or old_size > new_size or not all(_is_hash(p) for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is a complete subtree: its root starts
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class FrontierState(TypedDict):
    """The JSON form of a :class:`Frontier`: its size and right-edge hashes in hex, left first."""

    size: int
    hashes: list[str]


class Frontier:
    """The right edge of the tree: enough to append a leaf and to compute the root, in O(log n).

    ``_hashes[i]`` is the root of the i-th complete subtree from the left, one per set bit of the
    size, largest first. This is all the log must keep in memory (and persist) to go on appending
    after a restart without reading its history.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Add a leaf; return the complete subtrees it completed, the leaf (level 0) first."""
        if not _is_hash(leaf_hash):
            raise ValueError("a leaf hash is 32 bytes")
        index = self._size
        created: list[Node] = [(0, index, leaf_hash)]
        h, level = leaf_hash, 0
        while (index >> level) & 1:  # a complete left sibling is waiting at this level
            h = node_hash(self._hashes.pop(), h)
            level += 1
            created.append((level, index >> level, h))
        self._hashes.append(h)
        self._size += 1
        return created

    def root(self) -> bytes:
        """MTH of every leaf appended so far: the edge folded from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_state(self) -> FrontierState:
        return {"size": self._size, "hashes": [h.hex() for h in self._hashes]}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> Frontier:
        """Rebuild from :meth:`to_state` output, refusing anything that cannot be a frontier."""
        size, hashes = state.get("size"), state.get("hashes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("a frontier state's size is an int >= 0")
        if not isinstance(hashes, list) or len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has a list of {size.bit_count()} hashes")
        if not all(isinstance(h, str) and _HEX_HASH.fullmatch(h) for h in hashes):
            raise ValueError("each frontier hash is 64 lowercase hex digits")
        decoded = [bytes.fromhex(h) for h in hashes]
        frontier = cls()
        frontier._size, frontier._hashes = size, decoded
        return frontier


class NodeSource(Protocol):
    """Where proofs read complete-subtree hashes from (the log's node table, or memory)."""

    def node(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree of 2^level leaves starting at leaf index·2^level."""
        ...


class MemoryNodes:
    """A :class:`NodeSource` in a dict, filled from :meth:`Frontier.append`; counts its reads."""

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self._nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0
        self.add(nodes)

    @classmethod
    def from_leaves(cls, leaf_hashes: Iterable[bytes]) -> MemoryNodes:
        frontier, nodes = Frontier(), cls()
        for h in leaf_hashes:
            nodes.add(frontier.append(h))
        return nodes

    def add(self, nodes: Iterable[Node]) -> None:
        for level, index, h in nodes:
            self._nodes[(level, index)] = h

    def node(self, level: int, index: int) -> bytes:
        self.reads += 1
        try:
            return self._nodes[(level, index)]
        except KeyError:
            raise KeyError(f"no stored node at level {level}, index {index}") from None


def subtree_root(src: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) from stored complete subtrees.

    For the ranges the RFC's recursion produces (``start`` a multiple of a power of two at least
    ``end - start``) the left half of every split is one stored node, so this reads O(log n) nodes;
    other ranges are still answered correctly, just with more reads.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    if start == end:
        return EMPTY_ROOT
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return src.node(level, start >> level)
    k = _split(n)
    return node_hash(subtree_root(src, start, start + k), subtree_root(src, start + k, end))


def inclusion_proof_at(src: NodeSource, index: int, size: int) -> list[bytes]:
    """:func:`inclusion_proof` for leaf ``index`` of the tree's first ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    return _path(lambda s, e: subtree_root(src, s, e), index, 0, size)


def consistency_proof_at(src: NodeSource, old_size: int, size: int) -> list[bytes]:
    """:func:`consistency_proof` between the tree's first ``old_size`` and ``size`` leaves."""
    if not 0 <= old_size <= size:
        raise ValueError(f"old size {old_size} is outside 0..{size}")
    if old_size in (0, size):
        return []
    return _subproof(lambda s, e: subtree_root(src, s, e), old_size, 0, size)

"""The RFC 9162 Merkle tree: the CT known answers, the CT proof shapes, and properties at random.

Known answers are the RFC 6962 test tree shared by the CT implementations, copied from
transparency-dev/merkle ``proof/verify_test.go`` (the ``leaves``, ``roots``, ``inclusionProofs`` and
``consistencyProofs`` tables, also in google/certificate-transparency's ``merkle_tree_test.cc``),
with its corruption probes and edge-case tables. Which stored nodes each proof is made of comes from
transparency-dev/merkle ``proof/proof_test.go`` (``TestInclusion``, ``TestConsistency``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryNodes,
    consistency_proof,
    consistency_proof_at,
    inclusion_proof,
    inclusion_proof_at,
    leaf_hash,
    node_hash,
    root,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
HASHES = [leaf_hash(d) for d in LEAVES]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # size 0: SHA-256("")
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def hexes(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# (0-based leaf index, tree size, proof); verify_test.go lists the index 1-based.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        hexes(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, hexes("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        hexes(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        hexes(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def flip(h: bytes, byte: int = 0, mask: int = 8) -> bytes:
    return h[:byte] + bytes([h[byte] ^ mask]) + h[byte + 1 :]


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"data") == hashlib.sha256(b"\x00data").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_ct_test_tree(size: int) -> None:
    frontier = Frontier()
    for h in HASHES[:size]:
        frontier.append(h)
    nodes = MemoryNodes.from_leaves(HASHES[:size])
    assert root(HASHES[:size]) == ROOTS[size]
    assert frontier.root() == ROOTS[size]
    assert subtree_root(nodes, 0, size) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_ct_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    nodes = MemoryNodes.from_leaves(HASHES)
    assert inclusion_proof(HASHES[:size], index) == proof
    assert inclusion_proof_at(nodes, index, size) == proof
    leaf, r = HASHES[index], ROOTS[size]
    assert verify_inclusion(leaf, index, size, proof, r)
    # transparency-dev's corruptInclusionProof probes, each of which must fail.
    probes = [
        (index - 1, size, r, leaf, proof),
        (index + 1, size, r, leaf, proof),
        (index ^ 2, size, r, leaf, proof),
        (index, size * 2, r, leaf, proof),
        (index, size // 2, r, leaf, proof),
        (index, size, r, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, leaf, proof),
        (index, size, SOME_HASH, leaf, proof),
        (index, size, r, leaf, [*proof, b""]),
        (index, size, r, leaf, [*proof, r]),
        (index, size, r, leaf, [b"", *proof]),
        (index, size, r, leaf, [r, *proof]),
        *(
            (index, size, r, leaf, [*proof[:i], flip(p), *proof[i + 1 :]])
            for i, p in enumerate(proof)
        ),
    ]
    if proof:
        probes.append((index, size, r, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((index, size, r, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    for i, s, probe_root, probe_leaf, probe_proof in probes:
        assert not verify_inclusion(probe_leaf, i, s, probe_proof, probe_root), (i, s)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_ct_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    nodes = MemoryNodes.from_leaves(HASHES)
    assert consistency_proof(HASHES[:new], old) == proof
    assert consistency_proof_at(nodes, old, new) == proof
    r1, r2 = ROOTS[old], ROOTS[new]
    assert verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    # transparency-dev's corruptConsistencyProof probes, each of which must fail.
    wrong = SOME_HASH
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, wrong, r2, proof),
        (old, new, r1, wrong, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
        *(
            (old, new, r1, r2, [*proof[:i], flip(p, 0, 16), *proof[i + 1 :]])
            for i, p in enumerate(proof)
        ),
    ]
    for o, n, a, b, p in probes:
        assert not verify_consistency(o, n, a, b, p), (o, n)


R1, R2 = hashlib.sha256(b"don't care 1").digest(), hashlib.sha256(b"don't care 2").digest()


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "ok"),
    [  # transparency-dev TestVerifyConsistency; its "don't care" roots made 32 bytes long
        (0, 0, R1, R2, [], False),
        (1, 1, R1, R2, [], False),
        (0, 0, R1, R1, [], True),
        (0, 1, R1, R2, [], True),  # the empty tree is a prefix of every tree
        (1, 1, R2, R2, [], True),
        (1, 0, R1, R2, [], False),
        (2, 1, R1, R2, [], False),
        (1, 2, R1, R2, [], False),
        (0, 0, EMPTY_ROOT, R2, [], False),
        (1, 1, EMPTY_ROOT, R2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, b"short", R2, [], False),  # ours: every hash is 32 bytes, even an unused one
    ],
)
def test_consistency_edge_cases(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], ok: bool
) -> None:
    assert verify_consistency(old, new, old_root, new_root, proof) is ok


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_edge_cases(index: int, size: int) -> None:
    # transparency-dev TestVerifyInclusion: empty proofs against wrong roots and leaves.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


def test_inclusion_in_a_single_leaf_tree() -> None:
    h = leaf_hash(b"data")  # transparency-dev TestVerifyInclusionSingleEntry
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(
    "args",
    [(-1, 8), (True, 8), (0, -1), (1.0, 8), ("0", 8), (0, None)],
)
def test_verification_never_raises_on_nonsense(args: tuple[object, object]) -> None:
    index, size = args
    assert not verify_inclusion(HASHES[0], index, size, [], ROOTS[1])  # type: ignore[arg-type]
    assert not verify_consistency(index, size, ROOTS[1], ROOTS[1], [])  # type: ignore[arg-type]
    assert not verify_inclusion(HASHES[0], 0, 1, [None], ROOTS[1])  # type: ignore[list-item]
    assert not verify_consistency(1, 2, ROOTS[1], ROOTS[2], ["x" * 32])  # type: ignore[list-item]


# -- which stored nodes each proof is made of (transparency-dev proof_test.go) -------------------
Id = tuple[int, int]
Spec = list[Id] | tuple[int, int, list[Id]]  # plain nodes, or (begin, end, ids) to rehash


def rehash(begin: int, end: int, *ids: Id) -> Spec:
    return (begin, end, list(ids))


def expected(nodes: MemoryNodes, spec: Spec) -> list[bytes]:
    """ids[begin:end] hashed together from the bottom up stand for one node the tree lacks."""
    if isinstance(spec, list):
        return [nodes.node(*i) for i in spec]
    begin, end, ids = spec
    hashes = [nodes.node(*i) for i in ids]
    folded = hashes[begin]
    for h in hashes[begin + 1 : end]:
        folded = node_hash(h, folded)
    return [*hashes[:begin], folded, *hashes[end:]]


INCLUSION_NODES: list[tuple[int, int, Spec]] = [
    (1, 0, []),
    (2, 0, [(0, 1)]),
    (2, 1, [(0, 0)]),
    (3, 1, [(0, 0), (0, 2)]),
    (7, 0, rehash(2, 4, (0, 1), (1, 1), (0, 6), (1, 2))),
    (7, 1, rehash(2, 4, (0, 0), (1, 1), (0, 6), (1, 2))),
    (7, 2, rehash(2, 4, (0, 3), (1, 0), (0, 6), (1, 2))),
    (7, 3, rehash(2, 4, (0, 2), (1, 0), (0, 6), (1, 2))),
    (7, 4, [(0, 5), (0, 6), (2, 0)]),
    (7, 5, [(0, 4), (0, 6), (2, 0)]),
    (7, 6, [(1, 2), (2, 0)]),
    (4, 2, [(0, 3), (1, 0)]),
    (5, 3, [(0, 2), (1, 0), (0, 4)]),
    (6, 3, [(0, 2), (1, 0), (1, 2)]),
    (6, 4, [(0, 5), (2, 0)]),
    (15, 10, rehash(2, 4, (0, 11), (1, 4), (0, 14), (1, 6), (3, 0))),
    (31, 24, rehash(2, 4, (0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0))),
    (95, 81, rehash(3, 6, (0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0))),
]
CONSISTENCY_NODES: list[tuple[int, int, Spec]] = [
    (1, 2, [(0, 1)]),
    (1, 4, [(0, 1), (1, 1)]),
    (1, 6, [(0, 1), (1, 1), (1, 2)]),
    (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]),
    (3, 7, rehash(3, 5, (0, 2), (0, 3), (1, 0), (0, 6), (1, 2))),
    (4, 7, rehash(0, 2, (0, 6), (1, 2))),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    *((n, n, []) for n in (1, 2, 3, 4, 5, 7, 8)),
    (2, 4, [(1, 1)]),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]),
    (1, 7, rehash(2, 4, (0, 1), (1, 1), (0, 6), (1, 2))),
    (10, 15, rehash(2, 4, (1, 4), (1, 5), (0, 14), (1, 6), (3, 0))),
    (24, 31, rehash(1, 4, (3, 2), (0, 30), (1, 14), (2, 6), (4, 0))),
    (
        81,
        95,
        rehash(4, 7, (0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)),
    ),
]
BIG = [leaf_hash(str(i).encode()) for i in range(100)]  # a bigger stored tree, as in proof_test.go


@pytest.mark.parametrize(("size", "index", "spec"), INCLUSION_NODES)
def test_inclusion_proofs_are_made_of_the_ct_nodes(size: int, index: int, spec: Spec) -> None:
    nodes = MemoryNodes.from_leaves(BIG)
    assert inclusion_proof_at(nodes, index, size) == expected(nodes, spec)
    assert inclusion_proof(BIG[:size], index) == expected(nodes, spec)


@pytest.mark.parametrize(("old", "new", "spec"), CONSISTENCY_NODES)
def test_consistency_proofs_are_made_of_the_ct_nodes(old: int, new: int, spec: Spec) -> None:
    nodes = MemoryNodes.from_leaves(BIG)
    assert consistency_proof_at(nodes, old, new) == expected(nodes, spec)
    assert consistency_proof(BIG[:new], old) == expected(nodes, spec)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (7, 7), (-1, 3)])
def test_proofs_of_leaves_outside_the_tree_are_refused(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(BIG[:size], index)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof_at(MemoryNodes.from_leaves(BIG), index, size)


@pytest.mark.parametrize(("old", "size"), [(-1, 3), (4, 3)])
def test_consistency_with_an_impossible_old_size_is_refused(old: int, size: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(BIG[:size], old)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof_at(MemoryNodes.from_leaves(BIG), old, size)


# -- the frontier -------------------------------------------------------------------------------
def test_append_returns_exactly_the_subtrees_it_completes() -> None:
    frontier = Frontier()
    created = [frontier.append(h) for h in HASHES]
    assert created[0] == [(0, 0, HASHES[0])]
    assert created[2] == [(0, 2, HASHES[2])]
    assert created[3] == [
        (0, 3, HASHES[3]),
        (1, 1, node_hash(HASHES[2], HASHES[3])),
        (2, 0, ROOTS[4]),
    ]
    assert created[7][-1] == (3, 0, ROOTS[8])
    assert [len(c) for c in created] == [1, 2, 1, 3, 1, 2, 1, 4]


@pytest.mark.parametrize("size", [1, 2, 3, 31, 64, 100])
def test_stored_nodes_are_all_complete_subtrees_and_nothing_else(size: int) -> None:
    frontier, stored = Frontier(), {}
    for h in BIG[:size]:
        for level, index, node in frontier.append(h):
            assert (level, index) not in stored
            stored[(level, index)] = node
    assert len(stored) == 2 * size - size.bit_count()
    for (level, index), node in stored.items():
        start, end = index << level, (index + 1) << level
        assert end <= size
        assert node == root(BIG[start:end])


def test_frontier_state_survives_json_and_appending_goes_on() -> None:
    straight, resumed = Frontier(), Frontier()
    for h in BIG[:37]:
        straight.append(h)
        resumed.append(h)
    state = json.loads(json.dumps(resumed.to_state()))
    assert state["size"] == 37
    assert len(state["hashes"]) == 3  # 37 = 0b100101
    resumed = Frontier.from_state(state)
    assert resumed.size == 37
    assert resumed.root() == straight.root() == root(BIG[:37])
    for h in BIG[37:]:
        assert resumed.append(h) == straight.append(h)
    assert resumed.root() == root(BIG)


GOOD = "ab" * 32


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"size": -1, "hashes": []},
        {"size": True, "hashes": [GOOD]},
        {"size": "1", "hashes": [GOOD]},
        {"size": 1, "hashes": []},
        {"size": 3, "hashes": [GOOD]},
        {"size": 1, "hashes": GOOD},
        {"size": 1, "hashes": [GOOD.upper()]},
        {"size": 1, "hashes": [GOOD[:-2]]},
        {"size": 1, "hashes": [GOOD[:-2] + "zz"]},
        {"size": 1, "hashes": [" " + GOOD[1:]]},
        {"size": 1, "hashes": [bytes(32)]},
    ],
)
def test_frontier_state_that_cannot_be_a_frontier_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="frontier"):
        Frontier.from_state(state)


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33])
def test_only_hashes_can_be_appended(bad: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append(bad)


def test_missing_nodes_are_reported() -> None:
    with pytest.raises(KeyError, match="level 2, index 0"):
        MemoryNodes.from_leaves(BIG[:3]).node(2, 0)


# -- properties ---------------------------------------------------------------------------------
PROPERTIES = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TAMPERING = settings(PROPERTIES, max_examples=200)


def tree(size: int, salt: bytes) -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(2, "big")) for i in range(size)]


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def inclusion_shape(index: int, size: int) -> list[str]:
    """Which side each sibling is on, from the top: the hashing an inclusion proof implies."""
    sides = []
    while size > 1:
        k = split(size)
        sides.append("right" if index < k else "left")
        index, size = (index, k) if index < k else (index - k, size - k)
    return sides


def consistency_shape(old: int, new: int) -> tuple[list[str], bool]:
    sides, complete = [], True
    while old != new:
        k = split(new)
        sides.append("right" if old <= k else "left")
        if old <= k:
            new = k
        else:
            old, new, complete = old - k, new - k, False
    return sides, complete


@PROPERTIES
@given(size=st.integers(1, 300), salt=st.binary(max_size=4))
@example(size=1, salt=b"")
@example(size=8, salt=b"")
@example(size=256, salt=b"")
@example(size=257, salt=b"")
def test_every_proof_verifies_and_both_builders_agree(size: int, salt: bytes) -> None:
    leaves = tree(size, salt)
    nodes, frontier, roots = MemoryNodes.from_leaves(leaves), Frontier(), [EMPTY_ROOT]
    for h in leaves:
        frontier.append(h)
        roots.append(frontier.root())
    assert roots[-1] == root(leaves)
    budget = size.bit_length() ** 2  # O(log² n) stored-node reads per proof
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        nodes.reads = 0
        assert inclusion_proof_at(nodes, index, size) == proof
        assert nodes.reads <= budget
        assert verify_inclusion(leaves[index], index, size, proof, roots[-1])
    for old in range(size + 1):
        proof = consistency_proof(leaves, old)
        nodes.reads = 0
        assert consistency_proof_at(nodes, old, size) == proof
        assert nodes.reads <= budget
        assert roots[old] == root(leaves[:old]) == subtree_root(nodes, 0, old)
        assert verify_consistency(old, size, roots[old], roots[-1], proof)


def flip_bit(h: bytes, bit: int) -> bytes:
    return flip(h, bit // 8 % len(h), 1 << bit % 8)


@TAMPERING
@given(data=st.data(), size=st.integers(1, 300), salt=st.binary(max_size=4))
def test_any_tampering_with_an_inclusion_proof_fails(
    data: st.DataObject, size: int, salt: bytes
) -> None:
    leaves = tree(size + 1, salt)  # one more, for the root of size + 1
    index = data.draw(st.integers(0, size - 1), label="index")
    bit = data.draw(st.integers(0, 255), label="bit")
    leaf, r, proof = leaves[index], root(leaves[:size]), inclusion_proof(leaves[:size], index)
    assert verify_inclusion(leaf, index, size, proof, r)
    assert not verify_inclusion(flip_bit(leaf, bit), index, size, proof, r)
    assert not verify_inclusion(leaf, index, size, proof, flip_bit(r, bit))
    for i, p in enumerate(proof):
        assert not verify_inclusion(
            leaf, index, size, [*proof[:i], flip_bit(p, bit), *proof[i + 1 :]], r
        )
    assert not verify_inclusion(leaf, index - 1, size, proof, r)
    assert not verify_inclusion(leaf, index + 1, size, proof, r)
    for other in (size - 1, size + 1):
        # Against the root of the size claimed, a wrong size always fails.
        assert not verify_inclusion(leaf, index, other, proof, root(leaves[:other]))
        # Against the same root it fails unless the hashing is identical: an inclusion proof does
        # not commit to the tree size (the signed checkpoint binding size and root does).
        same = index < other and inclusion_shape(index, other) == inclusion_shape(index, size)
        assert verify_inclusion(leaf, index, other, proof, r) is same


def tampered(proof: Sequence[bytes], i: int, bit: int) -> list[bytes]:
    return [*proof[:i], flip_bit(proof[i], bit), *proof[i + 1 :]]


@TAMPERING
@given(data=st.data(), size=st.integers(2, 300), salt=st.binary(max_size=4))
def test_any_tampering_with_a_consistency_proof_fails(
    data: st.DataObject, size: int, salt: bytes
) -> None:
    leaves = tree(size + 1, salt)
    old = data.draw(st.integers(1, size - 1), label="old")
    bit = data.draw(st.integers(0, 255), label="bit")
    r1, r2, proof = root(leaves[:old]), root(leaves[:size]), consistency_proof(leaves[:size], old)
    assert verify_consistency(old, size, r1, r2, proof)
    assert not verify_consistency(old, size, flip_bit(r1, bit), r2, proof)
    assert not verify_consistency(old, size, r1, flip_bit(r2, bit), proof)
    for i in range(len(proof)):
        assert not verify_consistency(old, size, r1, r2, tampered(proof, i, bit))
    shape = consistency_shape(old, size)
    for o, n in ((old - 1, size), (old + 1, size), (old, size - 1), (old, size + 1)):
        # With the roots of the sizes claimed, a wrong size always fails ...
        assert not verify_consistency(o, n, root(leaves[:o]), root(leaves[:n]), proof)
        # ... and with the same roots, unless the hashing is identical (as for inclusion).
        same = 0 < o < n and consistency_shape(o, n) == shape
        assert verify_consistency(o, n, r1, r2, proof) is same

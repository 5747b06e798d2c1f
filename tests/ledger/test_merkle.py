"""RFC 6962 Merkle tree: known-answer vectors, rejected mutations, and properties.

The vectors in tests/vectors/rfc6962-merkle.json are checked byte for byte. A small recursive
transcription of RFC 6962 sections 2.1, 2.1.1 and 2.1.2 below serves as an independent
reference for the iterative implementation on trees larger than the vectors'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "rfc6962-merkle.json").read_text(encoding="utf-8")
)
LEAF_INPUTS = [bytes.fromhex(h) for h in VECTORS["leaf_inputs_hex"]]
LEAF_HASHES = [bytes.fromhex(h) for h in VECTORS["leaf_hashes_hex"]]
ROOTS = {int(size): bytes.fromhex(h) for size, h in VECTORS["roots_by_tree_size"].items()}
INCLUSION = VECTORS["inclusion_proofs"]
CONSISTENCY = VECTORS["consistency_proofs"]


def _inclusion_id(v: dict[str, Any]) -> str:
    return f"leaf{v['leaf_index']}-of-{v['tree_size']}"


def _consistency_id(v: dict[str, Any]) -> str:
    return f"{v['first_size']}-to-{v['second_size']}"


def _proof(v: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in v["proof_hex"]]


def _inclusion_vector(index: int, size: int) -> list[bytes]:
    return _proof(next(v for v in INCLUSION if (v["leaf_index"], v["tree_size"]) == (index, size)))


def _consistency_vector(old: int, new: int) -> list[bytes]:
    return _proof(next(v for v in CONSISTENCY if (v["first_size"], v["second_size"]) == (old, new)))


def _flip_bit(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- An independent reference: RFC 6962 written as the RFC writes it, recursive. ---


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _split(len(d))
    return hashlib.sha256(b"\x01" + _ref_mth(d[:k]) + _ref_mth(d[k:])).digest()


def _ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _split(len(d))
    if m < k:
        return _ref_path(m, d[:k]) + [_ref_mth(d[k:])]
    return _ref_path(m - k, d[k:]) + [_ref_mth(d[:k])]


def _ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_ref_mth(d)]
    k = _split(len(d))
    if m <= k:
        return _ref_subproof(m, d[:k], b) + [_ref_mth(d[k:])]
    return _ref_subproof(m - k, d[k:], False) + [_ref_mth(d[:k])]


def _ref_consistency(m: int, d: Sequence[bytes]) -> list[bytes]:
    if m in (0, len(d)):
        return []
    return _ref_subproof(m, d, True)


def _synthetic_leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


# --- Hash primitives ---


def test_empty_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert merkle_root([]) == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = LEAF_HASHES[0], LEAF_HASHES[1]
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != leaf_hash(a + b)


def test_node_hash_refuses_children_that_are_not_hashes() -> None:
    with pytest.raises(ValueError):
        node_hash(b"short", LEAF_HASHES[0])


@pytest.mark.parametrize("position", range(len(LEAF_INPUTS)))
def test_vector_leaf_hash(position: int) -> None:
    assert leaf_hash(LEAF_INPUTS[position]) == LEAF_HASHES[position]


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_vector_root(size: int) -> None:
    assert merkle_root(LEAF_HASHES[:size]) == ROOTS[size]
    assert merkle_root(tuple(LEAF_HASHES[:size])) == ROOTS[size]


def test_vectors_cover_every_size_and_every_proof() -> None:
    assert sorted(ROOTS) == list(range(9))
    inclusion_cases = [(v["leaf_index"], v["tree_size"]) for v in INCLUSION]
    assert sorted(inclusion_cases) == sorted((i, n) for n in range(1, 9) for i in range(n))
    consistency_cases = [(v["first_size"], v["second_size"]) for v in CONSISTENCY]
    assert sorted(consistency_cases) == sorted((m, n) for n in range(1, 9) for m in range(1, n + 1))


# --- Inclusion proofs: known answers and every mutation rejected. ---


@pytest.mark.parametrize("v", INCLUSION, ids=_inclusion_id)
def test_vector_inclusion_proof(v: dict[str, Any]) -> None:
    index, size, expected = v["leaf_index"], v["tree_size"], _proof(v)
    assert inclusion_proof(LEAF_HASHES[:size], index) == expected
    assert verify_inclusion(LEAF_HASHES[index], index, size, expected, ROOTS[size])


@pytest.mark.parametrize("v", INCLUSION, ids=_inclusion_id)
def test_vector_inclusion_mutations_rejected(v: dict[str, Any]) -> None:
    index, size, proof = v["leaf_index"], v["tree_size"], _proof(v)
    leaf, root = LEAF_HASHES[index], ROOTS[size]

    # index +- 1 (out of range or not this leaf's position)
    assert not verify_inclusion(leaf, index + 1, size, proof, root)
    assert not verify_inclusion(leaf, index - 1, size, proof, root)
    # tree size x2, and the root of the doubled tree where we have it
    assert not verify_inclusion(leaf, index, size * 2, proof, root)
    if size * 2 in ROOTS:
        assert not verify_inclusion(leaf, index, size * 2, proof, ROOTS[size * 2])
    # a flipped bit anywhere in any proof element
    for position, element in enumerate(proof):
        for bit in range(len(element) * 8):
            bad = [*proof[:position], _flip_bit(element, bit), *proof[position + 1 :]]
            assert not verify_inclusion(leaf, index, size, bad, root), (position, bit)
    # an element added at either end, or any element removed
    for extra in (LEAF_HASHES[0], root, EMPTY_ROOT):
        assert not verify_inclusion(leaf, index, size, [*proof, extra], root)
        assert not verify_inclusion(leaf, index, size, [extra, *proof], root)
    # ... even when the root was forged to match the longer path
    forged_root = node_hash(LEAF_HASHES[0], root)
    assert not verify_inclusion(leaf, index, size, [*proof, LEAF_HASHES[0]], forged_root)
    for position in range(len(proof)):
        assert not verify_inclusion(leaf, index, size, proof[:position] + proof[position + 1 :], root)
    # wrong root, wrong leaf
    assert not verify_inclusion(leaf, index, size, proof, _flip_bit(root, 0))
    for other in range(9):
        if other != size:
            assert not verify_inclusion(leaf, index, size, proof, ROOTS[other])
    assert not verify_inclusion(_flip_bit(leaf, 255), index, size, proof, root)
    for other_index, other_leaf in enumerate(LEAF_HASHES):
        if other_index != index:
            assert not verify_inclusion(other_leaf, index, size, proof, root)


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 0), (-1, 3), (3, 3), (8, 8)],
)
def test_inclusion_proof_rejects_out_of_range_index(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_proof(LEAF_HASHES[:size], index)


# --- Consistency proofs: known answers and every mutation rejected. ---


@pytest.mark.parametrize("v", CONSISTENCY, ids=_consistency_id)
def test_vector_consistency_proof(v: dict[str, Any]) -> None:
    old, new, expected = v["first_size"], v["second_size"], _proof(v)
    assert consistency_proof(LEAF_HASHES[:new], old) == expected
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


@pytest.mark.parametrize("v", CONSISTENCY, ids=_consistency_id)
def test_vector_consistency_mutations_rejected(v: dict[str, Any]) -> None:
    old, new, proof = v["first_size"], v["second_size"], _proof(v)
    old_root, new_root = ROOTS[old], ROOTS[new]

    # first size +- 1, with the claimed roots and with the roots of the changed sizes
    for bad_old in (old - 1, old + 1):
        assert not verify_consistency(bad_old, new, old_root, new_root, proof)
        if 0 < bad_old < new:
            assert not verify_consistency(bad_old, new, ROOTS[bad_old], new_root, proof)
    # second size x2. (Not +- 1: a proof cannot always tell sizes apart, since a smaller tree
    # whose last leaf hash is an inner node of the larger one has the same root, e.g. 1-to-4
    # also verifies as 1-to-3; the size is bound by the signed tree head, not by the proof.)
    assert not verify_consistency(old, new * 2, old_root, new_root, proof)
    if new * 2 in ROOTS:
        assert not verify_consistency(old, new * 2, old_root, ROOTS[new * 2], proof)
    # first size > second size
    if old != new:
        assert not verify_consistency(new, old, new_root, old_root, proof)
        assert not verify_consistency(new, old, old_root, new_root, proof)
    # a flipped bit anywhere in any proof element
    for position, element in enumerate(proof):
        for bit in range(len(element) * 8):
            bad = [*proof[:position], _flip_bit(element, bit), *proof[position + 1 :]]
            assert not verify_consistency(old, new, old_root, new_root, bad), (position, bit)
    # an element added at either end, or any element removed
    for extra in (LEAF_HASHES[0], old_root, new_root, EMPTY_ROOT):
        assert not verify_consistency(old, new, old_root, new_root, [*proof, extra])
        assert not verify_consistency(old, new, old_root, new_root, [extra, *proof])
    for position in range(len(proof)):
        shorter = proof[:position] + proof[position + 1 :]
        assert not verify_consistency(old, new, old_root, new_root, shorter)
    # wrong old root, wrong new root
    for other in range(9):
        if other != old:
            assert not verify_consistency(old, new, ROOTS[other], new_root, proof)
        if other != new:
            assert not verify_consistency(old, new, old_root, ROOTS[other], proof)
    assert not verify_consistency(old, new, _flip_bit(old_root, 7), new_root, proof)
    assert not verify_consistency(old, new, old_root, _flip_bit(new_root, 7), proof)


def test_consistency_from_the_empty_tree() -> None:
    for size in range(9):
        assert consistency_proof(LEAF_HASHES[:size], 0) == []
        assert verify_consistency(0, size, EMPTY_ROOT, ROOTS[size], [])
        assert not verify_consistency(0, size, EMPTY_ROOT, ROOTS[size], [EMPTY_ROOT])
        assert not verify_consistency(0, size, ROOTS[1], ROOTS[size], [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, ROOTS[1], [])


@pytest.mark.parametrize(("old_size", "size"), [(-1, 3), (4, 3), (1, 0)])
def test_consistency_proof_rejects_out_of_range_size(old_size: int, size: int) -> None:
    with pytest.raises(ValueError):
        consistency_proof(LEAF_HASHES[:size], old_size)


def test_builders_refuse_leaves_that_are_not_hashes() -> None:
    with pytest.raises(ValueError):
        merkle_root([LEAF_HASHES[0], b"raw leaf data"])
    with pytest.raises(ValueError):
        inclusion_proof([b"raw"], 0)
    with pytest.raises(ValueError):
        consistency_proof([LEAF_HASHES[0], b"raw"], 1)


# --- Verifiers answer False to malformed input, never raise. ---

_LEAF, _ROOT3, _PROOF_0_OF_3 = LEAF_HASHES[0], ROOTS[3], _inclusion_vector(0, 3)


@pytest.mark.parametrize(
    "args",
    [
        (_LEAF, -1, 3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF, 0, -3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF, 0, 0, [], EMPTY_ROOT),
        (_LEAF, 0, 1, [], _LEAF[:31]),
        (_LEAF[:31], 0, 1, [], _LEAF),
        (_LEAF, 0, 3, [_PROOF_0_OF_3[0], _PROOF_0_OF_3[1][:31]], _ROOT3),
        (_LEAF, 0, 3, [_PROOF_0_OF_3[0], _PROOF_0_OF_3[1] + b"\x00"], _ROOT3),
        (_LEAF, 0, 3, [_PROOF_0_OF_3[0], None], _ROOT3),
        (_LEAF, 0, 3, b"".join(_PROOF_0_OF_3), _ROOT3),
        (_LEAF, 0, 3, None, _ROOT3),
        (_LEAF, 0.0, 3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF, False, 3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF, "0", 3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF.hex(), 0, 3, _PROOF_0_OF_3, _ROOT3),
        (_LEAF, 0, 3, _PROOF_0_OF_3, None),
        (_LEAF, 0, 2**70, _PROOF_0_OF_3, _ROOT3),
    ],
)
def test_verify_inclusion_malformed_is_false(args: tuple[Any, ...]) -> None:
    assert verify_inclusion(*args) is False


_PROOF_3_TO_8 = _consistency_vector(3, 8)


@pytest.mark.parametrize(
    "args",
    [
        (3, 8, ROOTS[3], ROOTS[8], None),
        (3, 8, ROOTS[3], ROOTS[8], []),
        (3, 8, ROOTS[3], ROOTS[8], b"".join(_PROOF_3_TO_8)),
        (3, 8, ROOTS[3], ROOTS[8], [*_PROOF_3_TO_8[:-1], _PROOF_3_TO_8[-1][:31]]),
        (3, 8, ROOTS[3], ROOTS[8], [*_PROOF_3_TO_8[:-1], 5]),
        (3, 8, ROOTS[3][:31], ROOTS[8], _PROOF_3_TO_8),
        (3, 8, ROOTS[3], None, _PROOF_3_TO_8),
        (-3, 8, ROOTS[3], ROOTS[8], _PROOF_3_TO_8),
        (3, -8, ROOTS[3], ROOTS[8], _PROOF_3_TO_8),
        (8, 3, ROOTS[8], ROOTS[3], _PROOF_3_TO_8),
        (3.0, 8, ROOTS[3], ROOTS[8], _PROOF_3_TO_8),
        (True, 8, ROOTS[1], ROOTS[8], _consistency_vector(1, 8)),
        (3, 2**70, ROOTS[3], ROOTS[8], _PROOF_3_TO_8),
        (5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]]),
        (5, 5, ROOTS[5], ROOTS[6], []),
    ],
)
def test_verify_consistency_malformed_is_false(args: tuple[Any, ...]) -> None:
    assert verify_consistency(*args) is False


# --- Beyond the vectors: agreement with the RFC's recursive definition, and scale. ---


def test_root_matches_recursive_definition_for_many_sizes() -> None:
    leaves = _synthetic_leaves(140)
    for size in range(len(leaves) + 1):
        assert merkle_root(leaves[:size]) == _ref_mth(leaves[:size]), size


def test_large_tree_root_and_proofs() -> None:
    leaves = _synthetic_leaves(10_001)
    root = merkle_root(leaves)
    assert root == _ref_mth(leaves)
    for index in (0, 4_096, 8_191, 8_192, 10_000):
        proof = inclusion_proof(leaves, index)
        assert proof == _ref_path(index, leaves)
        assert verify_inclusion(leaves[index], index, len(leaves), proof, root)
    for old_size in (1, 8_192, 8_193, 9_999):
        proof = consistency_proof(leaves, old_size)
        assert verify_consistency(old_size, len(leaves), merkle_root(leaves[:old_size]), root, proof)


@st.composite
def _tree_and_position(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    data = draw(st.lists(st.binary(max_size=8), min_size=1, max_size=200))
    leaves = [leaf_hash(d) for d in data]
    index = draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    old_size = draw(st.integers(min_value=0, max_value=len(leaves)))
    return leaves, index, old_size


@settings(max_examples=150, deadline=None)
@given(case=_tree_and_position(), bit=st.integers(min_value=0, max_value=255), pick=st.integers(0))
def test_generated_proofs_verify_and_a_flipped_bit_fails(
    case: tuple[list[bytes], int, int], bit: int, pick: int
) -> None:
    leaves, index, old_size = case
    size = len(leaves)
    root = merkle_root(leaves)
    old_root = merkle_root(leaves[:old_size])

    path = inclusion_proof(leaves, index)
    assert path == _ref_path(index, leaves)
    assert verify_inclusion(leaves[index], index, size, path, root)
    if path:
        at = pick % len(path)
        bad_path = [*path[:at], _flip_bit(path[at], bit), *path[at + 1 :]]
        assert not verify_inclusion(leaves[index], index, size, bad_path, root)
    assert not verify_inclusion(leaves[index], index, size, path, _flip_bit(root, bit))
    assert not verify_inclusion(_flip_bit(leaves[index], bit), index, size, path, root)

    proof = consistency_proof(leaves, old_size)
    assert proof == _ref_consistency(old_size, leaves)
    assert verify_consistency(old_size, size, old_root, root, proof)
    if proof:
        at = pick % len(proof)
        bad_proof = [*proof[:at], _flip_bit(proof[at], bit), *proof[at + 1 :]]
        assert not verify_consistency(old_size, size, old_root, root, bad_proof)
    assert not verify_consistency(old_size, size, _flip_bit(old_root, bit), root, proof)
    if old_size > 0:  # from the empty tree, any new root is consistent
        assert not verify_consistency(old_size, size, old_root, _flip_bit(root, bit), proof)

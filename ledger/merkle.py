"""RFC 6962 Merkle Tree Hash over ledger leaves, with inclusion and consistency proofs.

What it is for: a block commits to its transactions by the Merkle root of their leaf hashes, and
an auditor holding only a root can check that one leaf is in the tree (inclusion, RFC 6962
section 2.1.1) or that a larger tree extends a smaller one without rewriting it (consistency,
section 2.1.2). Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2.

    leaf hash   = SHA-256(0x00 || data)
    node hash   = SHA-256(0x01 || left || right)
    empty tree  = SHA-256("")

The roots and proof builders take leaf *hashes*, not leaf data, so storage can keep the 32-byte
leaf hashes and never re-encode the leaves; what a leaf's bytes are is the encoding module's job.

This module is pure computation on bytes: it must never do I/O (no files, database, network,
logging or clock) and must never import anything beyond the standard library's hashlib.
The builders raise ``ValueError`` on out-of-range input; the verifiers never raise and answer
``False`` to anything malformed, because they are fed untrusted proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
"""Length in bytes of every leaf hash, node hash, root and proof element."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves: SHA-256 of the empty string."""


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf's bytes: SHA-256(0x00 || data)."""
    digest = hashlib.sha256(_LEAF_PREFIX)
    digest.update(data)
    return digest.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes into their parent: SHA-256(0x01 || left || right).

    Both children must be 32-byte hashes: with other lengths the boundary between left and
    right would be ambiguous, and two different trees could share a parent hash.
    """
    if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
        raise ValueError(f"node children must be {HASH_SIZE}-byte hashes")
    digest = hashlib.sha256(_NODE_PREFIX)
    digest.update(left)
    digest.update(right)
    return digest.digest()


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 Merkle Tree Hash of a list of leaf hashes (EMPTY_ROOT for none)."""
    level = _checked_leaf_hashes(leaf_hashes)
    return _root(level)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path PATH(index, D[n]) of RFC 6962 section 2.1.1, leaf side first.

    Raises ValueError unless 0 <= index < len(leaf_hashes).
    """
    level = _checked_leaf_hashes(leaf_hashes)
    if not _is_size(index) or index >= len(level):
        raise ValueError(f"leaf index {index!r} out of range for a tree of {len(level)} leaves")
    # Walking the bottom-up levels (see _next_level), the audit path is the sibling of the
    # leaf's ancestor at every level where it has one; a node carried up alone has no sibling
    # at that level, exactly as in the RFC's recursive definition.
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index >>= 1
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[n]) of RFC 6962 section 2.1.2 (SUBPROOF with b = true).

    The proof is empty when old_size is 0 or n: nothing needs proving. Raises ValueError unless
    0 <= old_size <= len(leaf_hashes).
    """
    leaves = _checked_leaf_hashes(leaf_hashes)
    size = len(leaves)
    if not _is_size(old_size) or old_size > size:
        raise ValueError(f"old size {old_size!r} out of range for a tree of {size} leaves")
    if old_size in (0, size):
        return []
    # SUBPROOF(m, D[lo:hi], b) unrolled: each step descends into one half and owes the root of
    # the other half, which the RFC appends *after* the deeper part of the proof; so the owed
    # roots are collected on the way down and emitted in reverse.
    lo, hi, m = 0, size, old_size
    whole_old_tree_is_a_subtree = True  # the RFC's flag b
    owed: list[bytes] = []
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            owed.append(_root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            owed.append(_root(leaves[lo : lo + k]))
            lo += k
            m -= k
            whole_old_tree_is_a_subtree = False
    # When the old tree is itself a subtree of the new one, the verifier already holds its root
    # (the old root), so the RFC leaves it out of the proof.
    proof = [] if whole_old_tree_is_a_subtree else [_root(leaves[lo:hi])]
    proof.extend(reversed(owed))
    return proof


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Check that leaf_hash is leaf number index of the tree of tree_size leaves with this root.

    RFC 9162 section 2.1.3.2. Returns False, never raises, on any malformed input.
    """
    if not (_is_size(index) and _is_size(tree_size) and index < tree_size):
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    path = _checked_proof(proof)
    if path is None:
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:  # the proof is longer than the path from this leaf to the root
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # The last node of a level with no right sibling is carried up unchanged.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Check that the tree of new_size leaves with new_root extends the one of old_size/old_root.

    RFC 9162 section 2.1.4.2, plus the trivial cases it leaves out: equal sizes need an empty
    proof and equal roots; an empty old tree needs an empty proof and old_root == EMPTY_ROOT.
    Returns False, never raises, on any malformed input (old_size > new_size included).
    """
    if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
        return False
    if not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    path = _checked_proof(proof)
    if path is None:
        return False
    if old_size == 0:
        # Every tree extends the empty one, but only the real empty root describes it.
        return not path and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not path and old_root == new_root
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree of the new one; the proof omits its root.
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # the proof is longer than the tree is deep
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def _root(level: list[bytes]) -> bytes:
    """Merkle Tree Hash of already-checked leaf hashes, in O(n) hashes and no recursion."""
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def _next_level(level: list[bytes]) -> list[bytes]:
    """Hash adjacent pairs from the left; an unpaired last node is carried up unchanged.

    This builds the same tree as RFC 6962's split at the largest power of two k < n: the left
    k leaves form a complete subtree, so pairing from the left never crosses the split, and the
    right part, having no more than k leaves, is finished before the left is and waits as a
    carried last node until the two meet.
    """
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def _largest_power_of_two_below(n: int) -> int:
    """The RFC's split point k for n >= 2: the largest power of two strictly less than n."""
    return 1 << ((n - 1).bit_length() - 1)


def _checked_leaf_hashes(leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Copy the leaf hashes into a list, refusing anything that is not a 32-byte hash.

    Passing leaf data where leaf hashes belong would silently give a different root; this
    catches the usual form of that mistake.
    """
    leaves = list(leaf_hashes)
    for position, item in enumerate(leaves):
        if not _is_hash(item):
            raise ValueError(f"leaf hash at position {position} is not {HASH_SIZE} bytes")
    return leaves


def _checked_proof(proof: Sequence[bytes]) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is not one."""
    # bytes and str are Sequences too, but of characters and ints, never of hashes.
    if not isinstance(proof, Sequence) or isinstance(proof, (bytes, bytearray, str)):
        return None
    path = list(proof)
    if not all(_is_hash(item) for item in path):
        return None
    return path


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    # bool is an int subclass; True is not a tree size.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

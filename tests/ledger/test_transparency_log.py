"""The ledger read as a transparency log: entries re-hash to the leaves the headers commit to,
and proofs and tiles built from cached subtrees equal the ones built from every leaf."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import NotFound
from ledger.transparency import TILE_WIDTH, TransparencyLog
from tests.support.ledger import BACKENDS, UNIT, FakeClock, LedgerFixture, make_ledger, postgres_unavailable

BLOCK_SIZES = (1, 255, 2, 1, 300, 7)  # crosses the 256-entry tile boundary twice, mid-block


@pytest.fixture(scope="module", params=BACKENDS)
def sealed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerFixture]:
    if request.param == "postgres" and (reason := postgres_unavailable()):
        pytest.skip(reason)
    lf = make_ledger(Path(tmp_path_factory.mktemp("log")), FakeClock(1_700_000_000_000), backend=request.param)
    alice = lf.party("alice")
    for size in BLOCK_SIZES:
        for _ in range(size):
            lf.mint(alice.address, UNIT)
        lf.clock.advance(5)
        assert lf.ledger.seal() is not None
    yield lf
    lf.close()


def test_entries_rehash_to_the_leaves_and_the_head_root(sealed: LedgerFixture) -> None:
    log = TransparencyLog(sealed.ledger.store)
    size = log.size()
    assert size == sum(BLOCK_SIZES)
    entries = log.entries(0, size)
    leaves = [merkle.leaf_hash(e) for e in entries]
    assert leaves == log.leaf_hashes(0, size) == sealed.ledger.store.leaf_hashes(size)
    assert log.root(size) == merkle.merkle_root(leaves) == bytes.fromhex(sealed.ledger.head().header.tree_root[2:])


def test_ranges_of_the_log_start_and_stop_anywhere(sealed: LedgerFixture) -> None:
    log = TransparencyLog(sealed.ledger.store)
    every = log.leaf_hashes(0, log.size())
    for start, stop in [(0, 1), (1, 2), (200, 300), (255, 257), (256, 512), (560, 566), (565, 9999), (9999, 10_000)]:
        assert log.leaf_hashes(start, stop) == every[start:stop]


def test_every_block_boundary_is_a_tree_whose_proofs_match_the_reference(sealed: LedgerFixture) -> None:
    log = TransparencyLog(sealed.ledger.store)
    every = log.leaf_hashes(0, log.size())
    sizes = [sum(BLOCK_SIZES[:i]) for i in range(1, len(BLOCK_SIZES) + 1)]
    for size in sizes:
        root = merkle.merkle_root(every[:size])
        assert log.root(size) == root
        for index in {0, size // 2, size - 1}:
            proof = log.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(every[:size], index)
            assert merkle.verify_inclusion(every[index], index, size, proof, root)
        for old in sizes:
            if old <= size:
                proof = log.consistency_proof(old, size)
                assert proof == merkle.consistency_proof(every[:size], old)
                assert merkle.verify_consistency(old, size, merkle.merkle_root(every[:old]), root, proof)


def test_tiles_and_entry_bundles(sealed: LedgerFixture) -> None:
    log = TransparencyLog(sealed.ledger.store)
    size = log.size()
    every = log.leaf_hashes(0, size)
    assert log.hash_tile(0, 0, TILE_WIDTH, size) == b"".join(every[:256])
    assert log.hash_tile(0, 2, size - 512, size) == b"".join(every[512:size])
    assert log.hash_tile(0, 1, 3, size) == b"".join(every[256:259])  # a partial tile is a prefix
    assert [merkle.leaf_hash(e) for e in log.entry_bundle(1, TILE_WIDTH, size)] == every[256:512]
    with pytest.raises(NotFound):
        log.hash_tile(0, 2, TILE_WIDTH, size)  # not complete yet
    # A level-1 tile's hashes are roots of whole level-0 tiles: two of them exist at 566 entries.
    assert log.hash_tile(1, 0, 2, size) == merkle.merkle_root(every[:256]) + merkle.merkle_root(every[256:512])
    with pytest.raises(NotFound):
        log.hash_tile(1, 0, 3, size)


def test_the_log_index_of_a_transaction(sealed: LedgerFixture) -> None:
    log = TransparencyLog(sealed.ledger.store)
    store = sealed.ledger.store
    for height in (1, 2, 5):
        block = store.block(height)
        assert block is not None
        txs = store.block_transactions(height)
        first = block.header.tree_size - block.header.tx_count
        assert [log.index_of(t.tx_id) for t in (txs[0], txs[-1])] == [first, first + len(txs) - 1]
    with pytest.raises(NotFound):
        log.index_of("0x" + "00" * 32)


# ---- deep trees, on a store of synthetic leaves (no signatures needed to test the arithmetic) ----


@dataclass
class _Header:
    tree_size: int


@dataclass
class _Head:
    header: _Header


class _LeavesOnly:
    """Just enough of a store for the subtree arithmetic: a head and leaf hashes by index."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.reads = 0

    def head(self) -> _Head:
        return _Head(_Header(len(self.leaves)))

    def log_leaf_hashes(self, start: int, stop: int) -> list[bytes]:
        self.reads += 1
        return self.leaves[max(start, 0) : stop]


@pytest.fixture(scope="module")
def deep() -> tuple[_LeavesOnly, list[bytes]]:
    leaves = [secrets.token_bytes(32) for _ in range(65_536 + 700)]
    return _LeavesOnly(leaves), leaves


def test_a_level_one_tile_holds_the_roots_of_level_zero_tiles(deep: tuple[_LeavesOnly, list[bytes]]) -> None:
    store, leaves = deep
    log = TransparencyLog(store)  # type: ignore[arg-type]
    tile = log.hash_tile(1, 0, TILE_WIDTH, len(leaves))
    assert tile[:32] == merkle.merkle_root(leaves[:256])
    assert tile[-32:] == merkle.merkle_root(leaves[65_280:65_536])
    assert log.root(len(leaves)) == merkle.merkle_root(leaves)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_proofs_over_cached_subtrees_equal_the_reference(deep: tuple[_LeavesOnly, list[bytes]], data: Any) -> None:
    store, leaves = deep
    log = TransparencyLog(store)  # type: ignore[arg-type]
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    root = merkle.merkle_root(leaves[:size])
    assert merkle.verify_inclusion(leaves[index], index, size, log.inclusion_proof(index, size), root)
    proof = log.consistency_proof(old, size)
    if 0 < old < size:
        assert proof == merkle.consistency_proof(leaves[:size], old)
        assert merkle.verify_consistency(old, size, merkle.merkle_root(leaves[:old]), root, proof)


def test_a_proof_in_a_big_tree_reads_few_leaves_once_cached(deep: tuple[_LeavesOnly, list[bytes]]) -> None:
    store, leaves = deep
    log = TransparencyLog(store)  # type: ignore[arg-type]
    log.root(len(leaves))
    store.reads = 0
    log.inclusion_proof(12_345, len(leaves))
    log.consistency_proof(40_000, len(leaves))
    assert store.reads <= 20  # only the ragged edges below 256 leaves are read again

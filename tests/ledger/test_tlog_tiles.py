"""Tiles and entry bundles (ledger/tlog/tiles.py): the spec's paths and examples, tile hashes
against the Merkle tree they stand for, roots recomputed from tiles, tampering and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import MalformedTile, MalformedTilePath
from ledger.tlog.tiles import (
    TILE_WIDTH,
    TilePath,
    checkpoint_tiles,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    new_tiles,
    parse_tile_path,
    root_from_tiles,
    split_tile,
    tile_from_children,
    tile_hashes,
    tile_path,
    tile_subtree_hash,
)


def leaves(count: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(8, "big")) for i in range(count)]


def test_paths_match_the_spec() -> None:
    assert tile_path(0, 1234067, 8) == "tile/0/x001/x234/067.p/8"
    assert tile_path(1, 1234067) == "tile/1/x001/x234/067"
    assert tile_path(63, 0, 256) == "tile/63/000"
    assert tile_path(2, 1000) == "tile/2/x001/000"
    assert entries_path(5) == "tile/entries/005"
    assert entries_path(999, 255) == "tile/entries/999.p/255"
    assert parse_tile_path("tile/0/x001/x234/067.p/8") == TilePath(0, 1234067, 8)
    assert parse_tile_path("tile/entries/x001/000") == TilePath(None, 1000, None)
    assert parse_tile_path(tile_path(0, (1 << 63) - 1)).index == (1 << 63) - 1


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x000/005",  # not canonical: one path per tile
        "tile/00/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/08",
        "tile/0/1234",
        "tile/0/12",
        "tile/0/x1/000",
        "tile/0/001/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/data/000",
        "tile/8/0/000",
        "tile/0/x009/x223/x372/x036/x854/x775/808",  # 2^63
        "tile/0/000.p/",
        "tile/0/000.p/8/",
        "tile/entries/000.p/1x",
        "tile/0/\u0660\u0660\u0660",
    ],
)
def test_tile_path_parser_is_strict(path: str) -> None:
    with pytest.raises(MalformedTilePath):
        parse_tile_path(path)


@given(
    st.one_of(st.none(), st.integers(0, 63)), st.integers(0, (1 << 63) - 1), st.one_of(st.none(), st.integers(1, 255))
)
def test_tile_paths_round_trip(level: int | None, index: int, width: int | None) -> None:
    tile = TilePath(level, index, width)
    assert parse_tile_path(tile.path()) == tile


@given(st.text(alphabet="tile/entrisx0123456789.p", max_size=40) | st.text(max_size=40))
def test_parse_tile_path_on_garbage_raises_only_malformed_tile_path(text: str) -> None:
    try:
        tile = parse_tile_path(text)
    except MalformedTilePath:
        return
    assert tile.path() == text


def test_tile_hashes_are_the_subtree_roots_and_children_give_the_parent() -> None:
    hashes = leaves(TILE_WIDTH * 3)
    level0 = [tile_hashes(0, n, None, hashes[n * 256 : (n + 1) * 256]) for n in range(3)]
    assert level0[1] == b"".join(hashes[256:512])
    level1 = tile_hashes(1, 0, 3, hashes)
    assert split_tile(level1, 3) == [merkle.merkle_root(hashes[n * 256 : (n + 1) * 256]) for n in range(3)]
    assert tile_from_children(level0) == level1
    assert tile_subtree_hash(level0[0]) == merkle.merkle_root(hashes[:256])
    with pytest.raises(ValueError):
        tile_hashes(1, 0, 3, hashes[:-1])
    with pytest.raises(MalformedTile):
        tile_from_children([level0[0][:-32]])  # a partial tile never goes into the level above


def test_the_specs_70000_and_256_examples() -> None:
    tiles = new_tiles(0, 70_000)
    by_level = {level: [t for t in tiles if t.level == level] for level in range(3)}
    assert sum(t.width is None for t in by_level[0]) == 273 and [t.width for t in by_level[0] if t.width] == [112]
    assert [(t.index, t.width) for t in by_level[1]] == [(0, None), (1, 17)]
    assert [(t.index, t.width) for t in by_level[2]] == [(0, 1)]
    assert len(tiles) == 273 + 1 + 2 + 1
    assert checkpoint_tiles(70_000) == [TilePath(2, 0, 1), TilePath(1, 1, 17), TilePath(0, 273, 112)]
    assert new_tiles(0, 256) == [TilePath(0, 0, None), TilePath(1, 0, 1)]
    assert checkpoint_tiles(256) == [TilePath(1, 0, 1)]
    assert new_tiles(0, 256, entries=True) == [TilePath(None, 0, None)]


def test_new_tiles_between_sizes() -> None:
    assert new_tiles(10, 10) == []
    assert new_tiles(10, 11) == [TilePath(0, 0, 11)]
    assert new_tiles(250, 600) == [TilePath(0, 0, None), TilePath(0, 1, None), TilePath(0, 2, 88), TilePath(1, 0, 2)]
    assert new_tiles(255, 256, entries=True) == [TilePath(None, 0, None)]
    with pytest.raises(ValueError):
        new_tiles(11, 10)


def build_tiles(hashes: list[bytes]) -> dict[TilePath, bytes]:
    """Every tile of the tree: the full ones and the partial ones of its size."""
    size = len(hashes)
    out: dict[TilePath, bytes] = {}
    for tile in new_tiles(0, size):
        assert tile.level is not None
        span = TILE_WIDTH**tile.level
        start = tile.index * TILE_WIDTH * span
        out[tile] = tile_hashes(tile.level, tile.index, tile.width, hashes[start : start + tile.hash_count * span])
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000) | st.sampled_from([1, 255, 256, 257, 511, 512, 65535, 65536, 65537, 70_000]))
def test_root_from_tiles_is_the_merkle_root(size: int) -> None:
    hashes = leaves(size)
    tiles = build_tiles(hashes)
    assert set(checkpoint_tiles(size)) <= set(tiles)
    assert root_from_tiles(size, tiles) == merkle.merkle_root(hashes)


def test_a_tampered_or_missing_tile_gives_another_root_or_an_error() -> None:
    hashes = leaves(700)
    tiles = build_tiles(hashes)
    root = merkle.merkle_root(hashes)
    for tile in checkpoint_tiles(700):
        data = tiles[tile]
        for position in (0, len(data) // 2, len(data) - 1):
            bad = dict(tiles)
            bad[tile] = data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
            assert root_from_tiles(700, bad) != root
        with pytest.raises(MalformedTile):
            root_from_tiles(700, {k: v for k, v in tiles.items() if k != tile})
        with pytest.raises(MalformedTile):
            root_from_tiles(700, {**tiles, tile: data + b"\x00" * 32})


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=TILE_WIDTH))
def test_entry_bundles_round_trip_and_hash_to_their_level0_tile(entries: list[bytes]) -> None:
    bundle = encode_entry_bundle(entries)
    assert decode_entry_bundle(bundle) == entries
    level0 = tile_hashes(0, 0, len(entries), [merkle.leaf_hash(e) for e in entries])
    assert split_tile(level0, None if len(entries) == TILE_WIDTH else len(entries)) == [
        merkle.leaf_hash(e) for e in decode_entry_bundle(bundle)
    ]


def test_entry_bundle_limits() -> None:
    assert decode_entry_bundle(encode_entry_bundle([b"", b"\xff" * 0xFFFF])) == [b"", b"\xff" * 0xFFFF]
    for bad in ([], [b"x"] * 257, [b"x" * 0x10000]):
        with pytest.raises(MalformedTile):
            encode_entry_bundle(bad)
    for data in (b"", b"\x00", b"\x00\x05abc", b"\x00\x00" * 257):
        with pytest.raises(MalformedTile):
            decode_entry_bundle(data)


@given(st.binary(max_size=600))
def test_decode_entry_bundle_on_garbage_raises_only_malformed_tile(data: bytes) -> None:
    try:
        entries = decode_entry_bundle(data)
    except MalformedTile:
        return
    assert encode_entry_bundle(entries) == data

"""Tiled logs (c2sp.org/tlog-tiles): tile paths, tile hashes and entry bundles.

What it is for: serving and reading a log as static files. A tile at level L, index N holds
up to 256 consecutive 32-byte Merkle Tree Hashes, hash i being MTH(D[(N*256 + i) * 256**L :
(N*256 + i + 1) * 256**L]); the rightmost tiles are partial (``.p/<width>``). Entry bundles
(``tile/entries/...``) hold the entries of a level-0 tile, each behind a 2-byte big-endian
length.

- ``tile_path`` / ``entries_path`` / ``parse_tile_path``: ``tile/0/x001/x234/067.p/8``, strictly
  canonical (a parsed path formats back to the same string).
- ``tile_hashes``: the caller passes the leaf hashes a tile covers (level 0: its own leaves;
  level L: the 256**L * width leaves under it) and gets the tile's bytes. ``tile_from_children``
  builds a level L+1 tile from full level-L tiles without going back to the leaves.
- ``new_tiles``: which tiles appear or change when a log grows from one size to another.
- ``checkpoint_tiles`` / ``root_from_tiles``: the partial tiles of a tree size, and the root
  they hash to, so a client can check fetched tiles against a checkpoint.

It must never do I/O; its parsers raise only ``MalformedTilePath`` and ``MalformedTile``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger.errors import MalformedTile, MalformedTilePath
from ledger.merkle import HASH_SIZE, merkle_root, node_hash
from ledger.tlog.text import INT63_MAX

TILE_HEIGHT = 8
TILE_WIDTH = 256
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
FULL_TILE_SIZE = TILE_WIDTH * HASH_SIZE

_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


@dataclass(frozen=True)
class TilePath:
    """A tile's coordinates: level (None for an entry bundle), index, width (None when full)."""

    level: int | None
    index: int
    width: int | None

    def __post_init__(self) -> None:
        if self.level is not None and not (_is_int(self.level) and 0 <= self.level <= MAX_LEVEL):
            raise MalformedTilePath(f"a tile level is an integer in [0, {MAX_LEVEL}], not {self.level!r}")
        if not (_is_int(self.index) and 0 <= self.index <= INT63_MAX):
            raise MalformedTilePath(f"a tile index is an integer in [0, 2^63 - 1], not {self.index!r}")
        if self.width is not None and not (_is_int(self.width) and 1 <= self.width < TILE_WIDTH):
            raise MalformedTilePath(f"a partial tile's width is in [1, {TILE_WIDTH - 1}], not {self.width!r}")

    @property
    def hash_count(self) -> int:
        """How many hashes (or entries) the tile holds."""
        return TILE_WIDTH if self.width is None else self.width

    def path(self) -> str:
        level = "entries" if self.level is None else str(self.level)
        partial = "" if self.width is None else f".p/{self.width}"
        return f"tile/{level}/{_index_path(self.index)}{partial}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_path(index: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _tile(level: int | None, index: int, width: int | None) -> TilePath:
    return TilePath(level, index, None if width == TILE_WIDTH else width)


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """``tile/<level>/<index path>[.p/<width>]``; width None or 256 is a full tile."""
    if level is None:
        raise MalformedTilePath("a hash tile has a level; use entries_path for entry bundles")
    return _tile(level, index, width).path()


def entries_path(index: int, width: int | None = None) -> str:
    """``tile/entries/<index path>[.p/<width>]``; width None or 256 is a full bundle."""
    return _tile(None, index, width).path()


def parse_tile_path(path: str) -> TilePath:
    """Parse a canonical tile or entry-bundle path (relative: starting with ``tile/``)."""
    if not isinstance(path, str) or len(path) > 64:
        raise MalformedTilePath("a tile path is a short string")
    match = _PATH.fullmatch(path)
    if match is None:
        raise MalformedTilePath(f"{path[:64]!r} is not tile/<L>/<N>[.p/<W>]")
    level_text, index_text, width_text = match.groups()
    index = int(index_text.replace("x", "").replace("/", ""))
    width = None if width_text is None else int(width_text)
    if width is not None and width >= TILE_WIDTH:
        raise MalformedTilePath(f"a partial tile's width is below {TILE_WIDTH}")
    if index > INT63_MAX:
        raise MalformedTilePath("a tile index is at most 2^63 - 1")
    parsed = TilePath(None if level_text == "entries" else int(level_text), index, width)
    if parsed.path() != path:  # e.g. "x000/005" for "005": one path per tile
        raise MalformedTilePath(f"{path!r} is not the canonical path of its tile")
    return parsed


def tile_hashes(level: int, index: int, width: int | None, leaf_hashes_of_range: Sequence[bytes]) -> bytes:
    """The bytes of tile (level, index, width) from the leaf hashes it covers, in order.

    There must be exactly width * 256**level of them, starting at leaf
    (index * 256 + 0) * 256**level. ``index`` only names the tile; the hashes decide its content.
    """
    tile = _tile(level, index, width)
    span = TILE_WIDTH**level
    if len(leaf_hashes_of_range) != tile.hash_count * span:
        raise ValueError(f"tile {tile.path()} covers {tile.hash_count * span} leaves, not {len(leaf_hashes_of_range)}")
    return b"".join(merkle_root(leaf_hashes_of_range[i : i + span]) for i in range(0, len(leaf_hashes_of_range), span))


def split_tile(data: bytes, width: int | None = None) -> list[bytes]:
    """A tile's bytes as its list of hashes; refuses data that is not ``width`` hashes."""
    count = TILE_WIDTH if width is None else width
    if not isinstance(data, bytes) or len(data) != count * HASH_SIZE:
        raise MalformedTile(f"a tile of width {count} is {count * HASH_SIZE} bytes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def tile_subtree_hash(data: bytes) -> bytes:
    """The Merkle Tree Hash over a tile's hashes: for a full tile, its hash in the level above."""
    if not isinstance(data, bytes) or not data or len(data) % HASH_SIZE or len(data) > FULL_TILE_SIZE:
        raise MalformedTile(f"tile data is 1 to {TILE_WIDTH} hashes of {HASH_SIZE} bytes")
    return merkle_root(split_tile(data, len(data) // HASH_SIZE))


def tile_from_children(children: Sequence[bytes]) -> bytes:
    """The level L+1 tile over these full level-L tiles (1 to 256 of them, in order)."""
    if not 1 <= len(children) <= TILE_WIDTH:
        raise MalformedTile(f"a tile has 1 to {TILE_WIDTH} children")
    for child in children:
        split_tile(child)  # each must be full: partial tiles are never hashed into the level above
    return b"".join(tile_subtree_hash(child) for child in children)


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """1 to 256 entries, each behind its big-endian uint16 length."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise MalformedTile(f"an entry bundle holds 1 to {TILE_WIDTH} entries")
    out = bytearray()
    for entry in entries:
        if not isinstance(entry, bytes) or len(entry) > MAX_ENTRY_SIZE:
            raise MalformedTile(f"an entry is bytes of at most {MAX_ENTRY_SIZE} bytes")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; refuses a truncated, empty or over-long one."""
    if not isinstance(data, bytes) or not data:
        raise MalformedTile("an entry bundle is non-empty bytes")
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if len(entries) == TILE_WIDTH:
            raise MalformedTile(f"an entry bundle holds at most {TILE_WIDTH} entries")
        if at + 2 > len(data):
            raise MalformedTile("an entry bundle ends inside a length prefix")
        length = int.from_bytes(data[at : at + 2], "big")
        at += 2
        if at + length > len(data):
            raise MalformedTile("an entry bundle ends inside an entry")
        entries.append(data[at : at + length])
        at += length
    return entries


def _width_at(level: int, size: int) -> int:
    return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH


def checkpoint_tiles(size: int) -> list[TilePath]:
    """The partial tile of every level for a tree of ``size`` leaves, top level first.

    Together they hash to the tree's root (``root_from_tiles``); a level whose count of hashes
    is a multiple of 256 has no partial tile.
    """
    if not _is_int(size) or not 0 <= size <= INT63_MAX:
        raise ValueError(f"tree size {size!r} out of range")
    tiles = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = _width_at(level, size)
        if width:
            tiles.append(TilePath(level, size >> (TILE_HEIGHT * (level + 1)), width))
        level += 1
    return list(reversed(tiles))


def root_from_tiles(size: int, tiles: Mapping[TilePath, bytes]) -> bytes:
    """The RFC 6962 root of the tree of ``size`` leaves from its ``checkpoint_tiles``.

    Each partial tile's hashes are perfect subtrees of 256**level leaves; grouped by the binary
    digits of its width they give perfect subtrees of strictly decreasing size in leaf order,
    and the tree's root is those folded together from the right (RFC 6962's split rule).
    Raises MalformedTile if a tile is missing or of the wrong length; compare the answer with
    the checkpoint's root to authenticate the tiles.
    """
    subtrees: list[bytes] = []
    for tile in checkpoint_tiles(size):
        data = tiles.get(tile)
        if data is None:
            raise MalformedTile(f"tile {tile.path()} is needed for tree size {size}")
        hashes = split_tile(data, tile.width)
        at = 0
        for bit in reversed(range(TILE_HEIGHT)):
            if tile.hash_count & (1 << bit):
                subtrees.append(merkle_root(hashes[at : at + (1 << bit)]))
                at += 1 << bit
    if not subtrees:
        return merkle_root([])
    root = subtrees[-1]
    for subtree in reversed(subtrees[:-1]):
        root = node_hash(subtree, root)
    return root


def new_tiles(old_size: int, new_size: int, entries: bool = False) -> list[TilePath]:
    """The tiles (or, with ``entries``, the entry bundles) that appear or change as a log grows.

    Level by level: every tile that became full, then the new rightmost partial tile, if any.
    """
    if not (_is_int(old_size) and _is_int(new_size) and 0 <= old_size <= new_size <= INT63_MAX):
        raise ValueError(f"sizes {old_size!r} -> {new_size!r} are not a growing tree")
    found: list[TilePath] = []
    for level in range(1 if entries else MAX_LEVEL + 1):
        old_count = old_size >> (TILE_HEIGHT * level)
        new_count = new_size >> (TILE_HEIGHT * level)
        if new_count == 0:
            break
        if new_count == old_count:
            continue
        name = None if entries else level
        for index in range(old_count // TILE_WIDTH, new_count // TILE_WIDTH):
            found.append(TilePath(name, index, None))
        if new_count % TILE_WIDTH:
            found.append(TilePath(name, new_count // TILE_WIDTH, new_count % TILE_WIDTH))
    return found

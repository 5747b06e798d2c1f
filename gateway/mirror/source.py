"""The log a mirror follows, as its ledger API serves it: checkpoints, entry bundles with the
level-0 tiles beside them, block headers, and the tiles of a checkpoint.

Everything is read through ``LedgerApiClient`` (so an unreachable source is
``storage_unavailable``, and its own errors come back as their classes) and returned as served:
this module checks shapes (a bundle of the width asked for, a tile of the right length, headers
that parse), never what the log signed. ``gateway.mirror.follow`` does that.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.client.ledger_api import LedgerApiClient
from ledger.errors import MalformedRecord
from ledger.tlog.tiles import (
    TILE_WIDTH,
    TilePath,
    checkpoint_tiles,
    decode_entry_bundle,
    entries_path,
    split_tile,
    tile_path,
)
from ledger.types import ChainInfo, SignedBlock

BLOCK_PAGE = 256  # block headers asked for at once (the ledger API serves up to 1000)


@dataclass(frozen=True)
class ServedEntry:
    index: int  # the entry's position in the log
    entry: bytes  # its bytes, from the entry bundle
    tile_leaf: bytes  # the leaf hash the level-0 tile holds for it


class Source:
    def __init__(self, api: LedgerApiClient) -> None:
        self.api = api

    @property
    def url(self) -> str:
        return self.api.base_url

    def checkpoint(self) -> bytes:
        return self.api.checkpoint()

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        return self.api.checkpoint_consistency(old_size, new_size)

    def vkey(self) -> str:
        """The checkpoint key the source says it signs with (``/checkpoint/status``): only as
        trustworthy as the source, so it is pinned once and never asked for again."""
        vkey = self.api.get_json("/checkpoint/status").get("vkey")
        if not isinstance(vkey, str):
            raise MalformedRecord("checkpoint status: no vkey")
        return vkey

    def chain_info(self) -> ChainInfo:
        return self.api.chain_info()

    def genesis(self) -> SignedBlock:
        found = self.api.blocks(0, 1)
        if not found:
            raise MalformedRecord("the source serves no genesis block")
        return SignedBlock.from_dict(found[0])

    def blocks(self, start_height: int, stop_size: int) -> Iterator[SignedBlock]:
        """Signed block headers from ``start_height`` on, until one reaches ``stop_size``
        entries (the checkpoint's size); a page at a time."""
        height = start_height
        while True:
            page = self.api.blocks(height, BLOCK_PAGE)
            if not page:
                raise MalformedRecord(f"the source's blocks end at height {height - 1}, short of its checkpoint")
            for data in page:
                block = SignedBlock.from_dict(data)
                yield block
                if block.header.tree_size >= stop_size:
                    return
                height = block.header.height + 1

    def entries(self, start: int, stop: int) -> Iterator[ServedEntry]:
        """Entries ``first <= i < stop`` where ``first`` is ``start`` rounded down to its bundle
        (the mirror compares those it holds already), each with its level-0 tile's leaf hash.
        Bundles are asked for at their width in a tree of ``stop`` entries."""
        for bundle in range(start // TILE_WIDTH, -(-stop // TILE_WIDTH)):
            first = bundle * TILE_WIDTH
            width = min(TILE_WIDTH, stop - first)
            entries = decode_entry_bundle(self.api.get_bytes("/" + entries_path(bundle, width)))
            leaves = split_tile(self.api.get_bytes("/" + tile_path(0, bundle, width)), width)
            if len(entries) != width:
                raise MalformedRecord(f"entry bundle {bundle} holds {len(entries)} entries, not {width}")
            for offset, (entry, leaf) in enumerate(zip(entries, leaves, strict=True)):
                yield ServedEntry(first + offset, entry, leaf)

    def checkpoint_tiles(self, size: int) -> dict[TilePath, bytes]:
        """The partial tiles of every level of a tree of ``size`` entries, as served."""
        return {where: self.api.get_bytes("/" + where.path()) for where in checkpoint_tiles(size)}

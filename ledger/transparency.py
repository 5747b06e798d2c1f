"""The ledger read as a transparency log: entries by index, subtree hashes, proofs and tiles.

Every sealed transaction is one entry of one RFC 6962 log, in sealing order; an entry's bytes
are ``ledger.encoding.leaf_bytes`` of its record, so any standard verifier re-hashes it as
SHA-256(0x00 || entry) and reaches the tree root that block headers and checkpoints carry.

Proofs and tiles are built from hashes of perfect, aligned subtrees, which never change once
sealed: those of 256 leaves and more are computed once and kept (a few bytes per 256 entries),
so an inclusion or consistency proof costs O(log n) subtree lookups and at most a few hundred
leaf hashes read, not a scan of the log. Tiles follow c2sp.org/tlog-tiles (height 8): a level-L
tile holds the hashes of subtrees of 256^L leaves. This module reads through the store's
``log_*`` methods; it never writes and never signs.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from ledger import merkle
from ledger.encoding import LEAF_PREFIX, leaf_bytes
from ledger.errors import MalformedRecord, NotFound
from ledger.storage.base import LedgerStore
from ledger.types import Transaction

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_CACHED_FROM = TILE_HEIGHT  # perfect subtrees of 2^8 leaves and more are kept once computed
_CHUNKS_KEPT = 64  # leaf hashes of this many complete 256-leaf chunks are kept (512 KiB)


def entry_bytes(record: str) -> bytes:
    """A stored record as the log entry whose leaf hash the tree commits to."""
    return leaf_bytes(Transaction.from_dict(json.loads(record)))


def transaction_of_entry(entry: bytes) -> Transaction:
    """The transaction a log entry records; ``MalformedRecord`` unless the entry is exactly its
    canonical bytes (so one transaction has one entry, and one entry one transaction)."""
    if not isinstance(entry, bytes) or not entry.startswith(LEAF_PREFIX):
        raise MalformedRecord("a log entry starts with the transaction leaf prefix")
    try:
        data = json.loads(entry[len(LEAF_PREFIX) :].decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise MalformedRecord("a log entry is the prefix and a JSON record") from exc
    tx = Transaction.from_dict(data)
    if leaf_bytes(tx) != entry:
        raise MalformedRecord("a log entry is not the canonical encoding of its transaction")
    return tx


class TransparencyLog:
    """A read view of one store's log. Thread-safe; meant to live as long as the store."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._perfect: dict[tuple[int, int], bytes] = {}  # (log2 size, index) -> hash
        self._chunks: OrderedDict[int, list[bytes]] = OrderedDict()  # recent complete chunks' leaves
        self._lock = threading.Lock()

    def size(self) -> int:
        """Entries in the log: the tree size of the sealed head."""
        return self.store.head().header.tree_size

    def entries(self, start: int, stop: int) -> list[bytes]:
        return [entry_bytes(r) for r in self.store.log_records(start, stop)]

    def leaf_hashes(self, start: int, stop: int) -> list[bytes]:
        return self.store.log_leaf_hashes(start, stop)

    # ---- subtree hashes ----

    def subtree_hash(self, start: int, stop: int) -> bytes:
        """The Merkle Tree Hash of entries ``start <= i < stop`` as a subtree of the log, where
        the range is one the RFC 6962 recursion visits (aligned on its largest power of two)."""
        count = stop - start
        if count <= 0:
            return merkle.EMPTY_ROOT
        if count & (count - 1) == 0 and start % count == 0:
            return self._perfect_hash(count.bit_length() - 1, start // count)
        split = 1 << ((count - 1).bit_length() - 1)  # largest power of two below count
        return merkle.node_hash(self.subtree_hash(start, start + split), self.subtree_hash(start + split, stop))

    def _perfect_hash(self, height: int, index: int) -> bytes:
        key = (height, index)
        with self._lock:
            known = self._perfect.get(key)
        if known is not None:
            return known
        if height < _CACHED_FROM:  # inside one 256-leaf chunk: hash from its leaves
            width = 1 << height
            start = index * width
            offset = start % TILE_WIDTH
            leaves = self._chunk_leaves(start // TILE_WIDTH)[offset : offset + width]
            if len(leaves) != width:
                raise NotFound(f"entries {start}..{start + width - 1} are not all in the log yet")
            return merkle.merkle_root(leaves)
        if height > _CACHED_FROM:
            # Fill the 256-leaf roots underneath in few large reads before combining them,
            # rather than one read per 256 leaves.
            chunks = 1 << (height - _CACHED_FROM)
            self._fill_chunks(index * chunks, (index + 1) * chunks)
            found = merkle.node_hash(
                self._perfect_hash(height - 1, 2 * index), self._perfect_hash(height - 1, 2 * index + 1)
            )
        else:
            found = merkle.merkle_root(self._complete_leaves(index * TILE_WIDTH, (index + 1) * TILE_WIDTH))
        with self._lock:
            self._perfect[key] = found
        return found

    def _fill_chunks(self, first: int, stop: int, per_read: int = 256) -> None:
        """Compute and keep the roots of 256-leaf chunks ``first <= c < stop`` not yet known."""
        with self._lock:
            missing = [c for c in range(first, stop) if (_CACHED_FROM, c) not in self._perfect]
        for batch_start in range(0, len(missing), per_read):
            batch = missing[batch_start : batch_start + per_read]
            low, high = batch[0], batch[-1] + 1
            leaves = self._complete_leaves(low * TILE_WIDTH, high * TILE_WIDTH)
            roots = {
                (_CACHED_FROM, c): merkle.merkle_root(leaves[(c - low) * TILE_WIDTH : (c - low + 1) * TILE_WIDTH])
                for c in batch
            }
            with self._lock:
                self._perfect.update(roots)

    def _chunk_leaves(self, chunk: int) -> list[bytes]:
        """The leaf hashes of a 256-leaf chunk, fewer where the log ends inside it (a few
        recent complete ones are kept)."""
        with self._lock:
            found = self._chunks.get(chunk)
            if found is not None:
                self._chunks.move_to_end(chunk)
                return found
        leaves = self.store.log_leaf_hashes(chunk * TILE_WIDTH, (chunk + 1) * TILE_WIDTH)
        if len(leaves) != TILE_WIDTH:
            return leaves  # the log's ragged end: it will grow, so it is not kept
        with self._lock:
            self._chunks[chunk] = leaves
            while len(self._chunks) > _CHUNKS_KEPT:
                self._chunks.popitem(last=False)
        return leaves

    def _complete_leaves(self, start: int, stop: int) -> list[bytes]:
        leaves = self.store.log_leaf_hashes(start, stop)
        if len(leaves) != stop - start:
            raise NotFound(f"entries {start}..{stop - 1} are not all in the log yet")
        return leaves

    def root(self, size: int) -> bytes:
        return self.subtree_hash(0, size)

    # ---- proofs (RFC 6962 section 2.1, over subtree hashes) ----

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]), leaf side first."""
        if not 0 <= index < size:
            raise NotFound(f"entry {index} is not in a tree of {size} entries")
        return self._path(index, 0, size)

    def _path(self, index: int, start: int, stop: int) -> list[bytes]:
        count = stop - start
        if count == 1:
            return []
        split = 1 << ((count - 1).bit_length() - 1)
        if index < start + split:
            return [*self._path(index, start, start + split), self.subtree_hash(start + split, stop)]
        return [*self._path(index, start + split, stop), self.subtree_hash(start, start + split)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]); empty when either size is 0 or they are equal."""
        if not 0 <= old_size <= new_size:
            raise NotFound(f"no consistency proof from {old_size} to {new_size} entries")
        if old_size in (0, new_size):
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, old: int, start: int, stop: int, whole: bool) -> list[bytes]:
        count = stop - start
        if old == count:
            return [] if whole else [self.subtree_hash(start, stop)]
        split = 1 << ((count - 1).bit_length() - 1)
        if old <= split:
            return [*self._subproof(old, start, start + split, whole), self.subtree_hash(start + split, stop)]
        return [*self._subproof(old - split, start + split, stop, False), self.subtree_hash(start, start + split)]

    # ---- tiles (c2sp.org/tlog-tiles) ----

    def hash_tile(self, level: int, index: int, width: int, size: int) -> bytes:
        """The ``width`` hashes of tile ``level``/``index`` in a tree of ``size`` entries:
        hashes of subtrees of 256^level entries, which must all be complete at ``size``."""
        span = 1 << (TILE_HEIGHT * level)  # entries under one hash of this tile
        first = index * TILE_WIDTH
        if not 1 <= width <= TILE_WIDTH or (first + width) * span > size:
            raise NotFound(f"tile {level}/{index} of width {width} is not in a tree of {size} entries")
        if level == 0:
            return b"".join(self.store.log_leaf_hashes(first, first + width))
        height = TILE_HEIGHT * level
        return b"".join(self._perfect_hash(height, first + j) for j in range(width))

    def entry_bundle(self, index: int, width: int, size: int) -> list[bytes]:
        first = index * TILE_WIDTH
        if not 1 <= width <= TILE_WIDTH or first + width > size:
            raise NotFound(f"entry bundle {index} of width {width} is not in a tree of {size} entries")
        return self.entries(first, first + width)

    # ---- where a transaction is ----

    def index_of(self, tx_id: str) -> int:
        """The log index of a sealed transaction."""
        stored = self.store.get(tx_id)
        if stored is None or stored.block_height is None:
            raise NotFound(f"transaction {tx_id} is not sealed into the log yet", tx_id=tx_id)
        block = self.store.block(stored.block_height)
        assert block is not None
        first = block.header.tree_size - block.header.tx_count
        position = next(i for i, t in enumerate(self.store.block_transactions(stored.block_height)) if t.tx_id == tx_id)
        return first + position

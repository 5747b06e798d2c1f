"""Following a log: check the source's checkpoint, replay what is new through the mirror's own
store, block by block, and stop with evidence at the first thing the log's signatures deny.

One pass (``Mirror.observe`` then ``Mirror.sync_to``):

1. The source's checkpoint must verify under the pinned vkey, name the key's origin and be
   consistent with the newest one seen before (``CheckpointTracker``, its memory in the home).
2. For each block after the mirror's head, up to the checkpoint's size: the entries the
   source serves for it must hash to the leaves its level-0 tiles hold; the block must be
   signed by the chain's sealer, follow the mirror's head and have exactly those leaves under
   its merkle root; only then is each entry parsed (its canonical bytes), checked on its own
   (``ledger.replay.checked``), applied by the store's own rules and the block attached with
   the log tree regrown to its root (``ledger.replay``, as import does).
3. The mirror's head must then be the checkpoint (size and root), and the source's checkpoint
   tiles must hash to the same root; the note is stored, and served from there.

Entries the mirror holds already that the source serves again (the start of a bundle) must be
unchanged. Memory stays flat: one page of headers, one bundle and one block at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from gateway.client.checkpoints import CheckpointTracker
from gateway.mirror.evidence import BadEntry, Finding, keep
from gateway.mirror.source import ServedEntry, Source
from ledger import LedgerStore, merkle
from ledger.blocks import chain_commitment, check_block_signature
from ledger.checkpoints import ORIGIN_PREFIX, default_origin
from ledger.clock import system_now_ms
from ledger.errors import HistoryRewritten, InferpayError, InvalidInput, LedgerNotInitialized, StorageUnavailable
from ledger.replay import apply_transactions, attach_block, check_block, checked
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.note import NoteVerifier
from ledger.tlog.tiles import TILE_WIDTH, root_from_tiles
from ledger.transparency import TransparencyLog, transaction_of_entry
from ledger.types import ChainInfo, SignedBlock

VKEY_FILE = "source.vkey"
LOCK_FILE = "mirror.lock"

Progress = Callable[[int], None]  # called with how many entries were just replayed


@dataclass(frozen=True)
class SyncResult:
    checkpoint: Checkpoint
    head: SignedBlock
    replayed: int  # entries replayed in this pass
    elapsed_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.checkpoint.origin,
            "checkpointSize": self.checkpoint.size,
            "head": self.head.to_dict(),
            "replayed": self.replayed,
            "elapsedMs": self.elapsed_ms,
            "units": {"checkpointSize": "entries", "replayed": "entries"},
        }


@contextlib.contextmanager
def locked_home(directory: Path) -> Iterator[None]:
    """One mirror per home: a second one would replay the same blocks twice."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StorageUnavailable(f"another mirror runs in {directory} ({LOCK_FILE} is locked)") from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def pinned_vkey(directory: Path, store: LedgerStore, source: Source, given: str | None) -> tuple[str, bool]:
    """The source's checkpoint key: the one pinned in the home, else ``given`` (``--vkey``),
    else, the first time only, the one the source names (trust on first use). It is pinned by
    the first checkpoint it verifies (``Mirror.observe``). Returns it and whether it came from
    the source."""
    path = directory / VKEY_FILE
    if path.exists():
        pinned = path.read_text().strip()
        if given is not None and given != pinned:
            raise InvalidInput(f"the mirror in {directory} follows the log of {pinned}, not {given}")
        return pinned, False
    with contextlib.suppress(LedgerNotInitialized):
        store.chain_info()
        raise InvalidInput(f"{directory} holds a ledger that is not a mirror (no {VKEY_FILE}): use an empty home")
    vkey = given if given is not None else source.vkey()
    NoteVerifier.from_vkey(vkey)  # MalformedKey unless it is one
    return vkey, given is None


class Mirror:
    def __init__(self, directory: Path, store: LedgerStore, source: Source, vkey: str) -> None:
        self.directory = directory
        self.store = store
        self.source = source
        self.verifier = NoteVerifier.from_vkey(vkey)
        self.tracker = CheckpointTracker(self.verifier, directory=directory)
        self.log = TransparencyLog(store)

    def observe(self) -> tuple[Checkpoint, bytes]:
        """The newest checkpoint to sync to, and its note: the source's, once it verifies and is
        consistent with every one seen before (else ``InconsistentCheckpoints``, evidence kept)."""
        note = self.source.checkpoint()
        shown = self.tracker.observe(note, self.source.consistency)
        self._pin()
        latest, latest_note = self.tracker.latest, self.tracker.latest_note
        assert latest is not None and latest_note is not None
        # The same checkpoint may come back with more witness cosignatures: keep the fresher note.
        return latest, note if shown.size == latest.size else latest_note

    def _pin(self) -> None:
        """Keep the key once a checkpoint verified under it, before anything is replayed (a home
        with a ledger and no pinned key is not a mirror's)."""
        path = self.directory / VKEY_FILE
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_text(self.verifier.vkey + "\n")
            os.replace(temporary, path)

    def size(self) -> int:
        with contextlib.suppress(LedgerNotInitialized):
            return self.store.head().header.tree_size
        return 0

    def sync_to(self, target: Checkpoint, note: bytes, progress: Progress | None = None) -> SyncResult:
        started = time.monotonic()
        chain = self._chain(target, note)
        head = self.store.head()
        before = head.header.tree_size
        if before < target.size:
            head = self._replay(chain, head, target, note, progress)
        elif before > target.size and self.log.root(target.size) != target.root_hash:
            raise self._finding(f"the checkpoint of {target.size} entries is not a prefix of the mirror's copy", note)
        if head.header.tree_size == target.size:
            if head.header.tree_root != "0x" + target.root_hash.hex():
                raise self._finding(f"block {head.header.height} does not have the checkpoint's root", note, [head])
            if self.store.checkpoints.at(target.size) != note:
                self._check_tiles(target, note)
                self.store.checkpoints.save(target.size, note, system_now_ms())
        elapsed_ms = int((time.monotonic() - started) * 1000)
        return SyncResult(target, head, head.header.tree_size - before, elapsed_ms)

    # ---- the steps ----

    def _chain(self, target: Checkpoint, note: bytes) -> ChainInfo:
        """The mirror's chain; the first time, the source's, once its genesis block commits to
        it, is signed by its sealer, and is the genesis the log's origin names (when the origin
        is the default one, which carries the genesis hash)."""
        with contextlib.suppress(LedgerNotInitialized):
            return self.store.chain_info()
        chain, genesis = self.source.chain_info(), self.source.genesis()
        header = genesis.header
        try:
            check_block_signature(genesis, chain.sealer)
        except InferpayError as exc:
            raise self._finding(f"the genesis block is not valid: {exc.message}", note, [genesis]) from exc
        if (header.height, header.tx_count, header.tree_size) != (0, 0, 0) or header.prev_hash != chain_commitment(
            chain
        ):
            raise self._finding("the genesis block does not commit to the chain the source describes", note, [genesis])
        if target.origin.startswith(ORIGIN_PREFIX + "/") and target.origin != default_origin(
            chain.chain_id, genesis.block_hash
        ):
            raise self._finding(f"the log's origin {target.origin} names another genesis block", note, [genesis])
        self.store.initialize(chain, genesis)
        return chain

    def _replay(
        self, chain: ChainInfo, head: SignedBlock, target: Checkpoint, note: bytes, progress: Progress | None
    ) -> SignedBlock:
        entries = self._new_entries(head.header.tree_size, target.size, note)
        previous = head
        for block in self.source.blocks(head.header.height + 1, target.size):
            if block.header.tree_size > target.size:
                raise self._finding(f"the checkpoint of {target.size} entries ends inside a block", note, [block])
            served = list(islice(entries, block.header.tx_count))
            self._replay_block(chain, previous, block, served, note)
            previous = block
            if progress:
                progress(len(served))
        return previous

    def _new_entries(self, size: int, stop: int, note: bytes) -> Iterator[ServedEntry]:
        """The source's entries from ``size`` on; those before it in the same bundle must be the
        ones the mirror holds."""
        first = size - size % TILE_WIDTH
        mine = self.log.entries(first, size)
        for served in self.source.entries(size, stop):
            if served.index >= size:
                yield served
            elif served.entry != mine[served.index - first]:
                kept = BadEntry(served.index, served.entry, merkle.leaf_hash(mine[served.index - first]), "mirror")
                raise self._finding(f"entry {served.index} changed since it was mirrored", note, entries=[kept])

    def _replay_block(
        self, chain: ChainInfo, previous: SignedBlock, block: SignedBlock, served: list[ServedEntry], note: bytes
    ) -> None:
        height = block.header.height
        leaves = [merkle.leaf_hash(s.entry) for s in served]
        pairs = zip(served, leaves, strict=True)
        wrong = [BadEntry(s.index, s.entry, s.tile_leaf, "tile") for s, leaf in pairs if leaf != s.tile_leaf]
        span = f"entries {previous.header.tree_size}..{block.header.tree_size - 1}"
        if len(served) != block.header.tx_count:
            raise self._finding(f"block {height} holds more entries than the log serves", note, [previous, block])
        try:
            check_block(chain, previous, block, leaves)
        except InferpayError as exc:
            what = f"entry {wrong[0].index} is not what block {height} was signed with" if wrong else f"block {height}"
            raise self._finding(f"{what} ({span}): {exc.message}", note, [previous, block], wrong) from exc
        if wrong:  # the sealer signed these entries, but the tiles give other leaves
            raise self._finding(f"the log's tiles do not hold the leaves of block {height}", note, [block], wrong)
        try:
            items = [checked(chain, transaction_of_entry(s.entry)) for s in served]
            apply_transactions(self.store, items, [s.index + 1 for s in served], resuming=True)
            attach_block(self.store, block, leaves)
        except StorageUnavailable:
            raise  # the mirror's own store, not the source
        except InferpayError as exc:
            raise self._finding(
                f"block {height} ({span}), signed by the sealer, breaks the ledger's rules: {exc.message} [{exc.code}]",
                note,
                [previous, block],
            ) from exc

    def _check_tiles(self, target: Checkpoint, note: bytes) -> None:
        tiles = self.source.checkpoint_tiles(target.size)
        if root_from_tiles(target.size, tiles) != target.root_hash:
            raise self._finding(f"the log's tiles for {target.size} entries do not hash to its checkpoint", note)

    def _finding(
        self,
        reason: str,
        note: bytes | None,
        blocks: Sequence[SignedBlock] = (),
        entries: Sequence[BadEntry] = (),
    ) -> HistoryRewritten:
        finding = Finding(reason, self.source.url, self.verifier.vkey, note, blocks, entries)
        return keep(self.directory, finding)

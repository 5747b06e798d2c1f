"""Move a whole ledger from one store to another (SQLite <-> PostgreSQL) through a JSON Lines dump.

The dump is the chain, not the database: the chain's identity, every block (with the log tree's
compact frontier after it), every transaction (record, leaf hash, seq, block height) and the API
keys, one JSON object per line, in chain order (a block's transactions, then the block)::

    {"type": "header", "format": "inferpay-ledger-dump", "version": 1, "chain": {...}, ...}
    {"type": "block", "block": {...genesis...}, "frontier": []}
    {"type": "tx", "seq": 1, "txId": "0x..", "record": {...}, "leafHash": "0x..", "blockHeight": 1}
    {"type": "block", "block": {...}, "frontier": ["0x..", ...]}
    ...                                              (then transactions not sealed yet)
    {"type": "apiKey", "keyHash": "..", "keyPrefix": "..", "allowanceId": "0x..", ...}
    {"type": "end", "transactions": N, "blocks": B, "apiKeys": K, "head": "0x.."}

Import never copies balances, nonces, holds or allowances: it replays each transaction through
the target store's own ``append`` (``ledger.replay``, which mirrors share), rebuilding them by
the same rules as when the transaction was first accepted (and refusing what those rules
refuse), after checking that the record hashes to its id and leaf, is properly signed, and gets
its original seq. Blocks are then re-attached through the store's own ``seal``, with the dumped
block (its signature cannot be remade without the sealer key, and need not be) only after
checking that it links to the previous block and covers exactly the replayed leaves. So a dump
that was edited fails to import, and an imported ledger passes ``verify`` with the same head as
the original.

Stop writers (the gateway) before exporting: the dump is the ledger as of its head. Import needs
an empty target; a failed import leaves a partial ledger there, to be deleted before retrying.
This module never imports a database driver and never prints: the CLI shows progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ledger.blocks import chain_commitment, frontier_append
from ledger.encoding import leaf_hash, transaction_id
from ledger.errors import (
    IdempotencyConflict,
    InferpayError,
    LedgerNotInitialized,
    MalformedRecord,
    StorageUnavailable,
)
from ledger.replay import Replayable, apply_transactions, attach_block, checked
from ledger.storage.base import ApiKeyRow, LedgerStore, RawTx
from ledger.types import ChainInfo, SignedBlock, Transaction

FORMAT = "inferpay-ledger-dump"
VERSION = 1
BATCH = 1000  # transactions applied per commit on import

Progress = Callable[[int], None]  # called with how many transactions were just handled


@dataclass(frozen=True)
class TransferResult:
    transactions: int
    blocks: int  # including genesis
    api_keys: int
    head: SignedBlock

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "blocks": self.blocks,
            "apiKeys": self.api_keys,
            "head": self.head.to_dict(),
        }


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


# ---- export ----


def export_ledger(store: LedgerStore, out: TextIO, progress: Progress | None = None) -> TransferResult:
    """Write ``store``'s whole ledger to ``out``; streams (memory stays flat however long the chain)."""
    chain = store.chain_info()
    start_head = store.head()
    out.write(
        _line(
            {
                "type": "header",
                "format": FORMAT,
                "version": VERSION,
                "chain": chain.to_dict(),
                "transactions": start_head.header.tree_size + store.unsealed()[0],
            }
        )
    )
    txs: Iterator[RawTx] = store.iter_raw_transactions()
    pending = next(txs, None)
    frontier: list[bytes] = []
    size = blocks = count = 0
    head: SignedBlock | None = None
    for height, record in store.iter_raw_blocks():
        block = SignedBlock.from_dict(json.loads(record))
        if height != blocks:
            raise MalformedRecord(f"block {height} follows block {blocks - 1}: run `inferpay verify`")
        while pending is not None and pending.block_height == height:
            out.write(_tx_line(pending))
            frontier_append(frontier, size, pending.leaf_hash)
            size, count = size + 1, count + 1
            if progress:
                progress(1)
            pending = next(txs, None)
        if size != block.header.tree_size:
            raise MalformedRecord(
                f"block {height} covers {block.header.tree_size} transactions, the store has {size}: "
                "run `inferpay verify`"
            )
        out.write(_line({"type": "block", "block": block.to_dict(), "frontier": [_hex(h) for h in frontier]}))
        blocks, head = blocks + 1, block
    if head is None:
        raise LedgerNotInitialized("the ledger has no blocks")
    while pending is not None:
        if pending.block_height is not None:
            raise StorageUnavailable(
                f"transaction #{pending.seq} was sealed into block {pending.block_height} while exporting: "
                "stop the gateway (or any other writer) and export again"
            )
        out.write(_tx_line(pending))
        count += 1
        if progress:
            progress(1)
        pending = next(txs, None)
    keys = store.api_keys.all()
    for key in keys:
        out.write(_line(_api_key_dict(key)))
    out.write(
        _line({"type": "end", "transactions": count, "blocks": blocks, "apiKeys": len(keys), "head": head.block_hash})
    )
    return TransferResult(count, blocks, len(keys), head)


def _tx_line(raw: RawTx) -> str:
    try:
        record = json.loads(raw.record)
    except ValueError as exc:
        raise MalformedRecord(f"transaction #{raw.seq} does not parse: run `inferpay verify`") from exc
    return _line(
        {
            "type": "tx",
            "seq": raw.seq,
            "txId": raw.tx_id,
            "record": record,
            "leafHash": _hex(raw.leaf_hash),
            "blockHeight": raw.block_height,
        }
    )


def _api_key_dict(key: ApiKeyRow) -> dict[str, Any]:
    return {
        "type": "apiKey",
        "keyHash": key.key_hash,
        "keyPrefix": key.key_prefix,
        "allowanceId": key.allowance.allowance_id,
        "label": key.label,
        "createdAt": key.created_at_ms,
        "revoked": key.revoked,
    }


# ---- import ----


def read_header(lines: Iterable[str]) -> dict[str, Any]:
    """The dump's first line, checked (format, version, chain identity): what ``import`` will
    bring in, and how many transactions (for a progress bar)."""
    header = _parse(next(iter(lines), ""), 1)
    _check_header(header)
    return header


def _check_header(header: dict[str, Any]) -> ChainInfo:
    if header.get("type") != "header" or header.get("format") != FORMAT:
        raise MalformedRecord("not an inferpay ledger dump (made by `inferpay export`)")
    if header.get("version") != VERSION:
        raise MalformedRecord(f"dump format version {header.get('version')!r} is not supported (expected {VERSION})")
    return ChainInfo.from_dict(header.get("chain"))


def import_ledger(store: LedgerStore, lines: Iterable[str], progress: Progress | None = None) -> TransferResult:
    """Rebuild the dumped ledger in ``store``, which must hold none yet."""
    try:
        store.chain_info()
    except LedgerNotInitialized:
        pass
    else:
        raise IdempotencyConflict("the target already holds a ledger: import into an empty database")
    importer = _Importer(store, progress)
    number = 0
    try:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                importer.take(_parse(text, number), number)
    except InferpayError as exc:
        exc.message = f"import stopped at line {number} ({exc.message}); the target holds a partial ledger now"
        exc.args = (exc.message,)
        raise
    return importer.finish()


def _parse(text: str, number: int) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedRecord(f"line {number} is not JSON (truncated or edited dump?)") from exc
    if not isinstance(data, dict):
        raise MalformedRecord(f"line {number} is not a JSON object")
    return data


class _Importer:
    def __init__(self, store: LedgerStore, progress: Progress | None) -> None:
        self.store = store
        self.progress = progress
        self.chain: ChainInfo | None = None
        self.previous: SignedBlock | None = None
        self.leaves: list[bytes] = []  # replayed since the last block
        self.waiting: list[tuple[Replayable, object]] = []  # checked, not yet applied
        self.transactions = 0
        self.blocks = 0
        self.keys: list[dict[str, Any]] = []
        self.end: dict[str, Any] | None = None

    def take(self, data: dict[str, Any], number: int) -> None:
        kind = data.get("type")
        if self.end is not None:
            raise MalformedRecord("content after the end line")
        if number == 1:
            self.chain = _check_header(data)
        elif kind == "block":
            self.block(SignedBlock.from_dict(data.get("block")), data.get("frontier"))
        elif kind == "tx":
            self.transaction(data)
        elif kind == "apiKey":
            self.keys.append(data)
        elif kind == "end":
            self.end = data
        else:
            raise MalformedRecord(f"unknown line type {kind!r}")

    def transaction(self, data: dict[str, Any]) -> None:
        if self.chain is None or self.previous is None:
            raise MalformedRecord("a transaction before the genesis block")
        tx = Transaction.from_dict(data.get("record"))
        if transaction_id(tx) != data.get("txId") or _hex(leaf_hash(tx)) != data.get("leafHash"):
            raise MalformedRecord(f"transaction #{data.get('seq')}: the record does not hash to its id and leaf")
        self.waiting.append((checked(self.chain, tx), data.get("seq")))  # signature, window, amounts
        if len(self.waiting) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Apply the waiting transactions by the store's own rules, which rebuild the state; one
        commit per batch where the store can (a million-row import is not a million fsyncs)."""
        if not self.waiting:
            return
        apply_transactions(self.store, [item for item, _ in self.waiting], [seq for _, seq in self.waiting])
        self.leaves.extend(leaf for (_, _, leaf), _ in self.waiting)
        self.transactions += len(self.waiting)
        if self.progress:
            self.progress(len(self.waiting))
        self.waiting = []

    def block(self, block: SignedBlock, frontier: object) -> None:
        self.flush()
        if not isinstance(frontier, list) or not all(isinstance(h, str) for h in frontier):
            raise MalformedRecord(f"block {block.header.height}: frontier must be a list of hex hashes")
        if self.previous is None:
            if self.chain is None or block.header.height != 0 or frontier:
                raise MalformedRecord("the dump must start with its header and the genesis block")
            if block.header.prev_hash != chain_commitment(self.chain):
                raise MalformedRecord("the genesis block does not commit to the dumped chain")
            self.store.initialize(self.chain, block)
        else:
            self.seal(block, frontier)
        self.previous = block
        self.leaves = []
        self.blocks += 1

    def seal(self, block: SignedBlock, frontier: list[str]) -> None:
        if not self.leaves or block.header.tx_count != len(self.leaves):
            raise MalformedRecord(
                f"block {block.header.height} holds {block.header.tx_count} transactions, "
                f"the dump gives {len(self.leaves)}"
            )
        attach_block(self.store, block, self.leaves, frontier)  # the dumped frontier must come out

    def finish(self) -> TransferResult:
        self.flush()
        if self.end is None:
            raise MalformedRecord("the dump has no end line (truncated?)")
        if self.previous is None:
            raise MalformedRecord("the dump has no blocks")
        for key in sorted(self.keys, key=lambda k: not k.get("revoked")):
            # Revoked keys first, each revoked as soon as it is in: revoking by prefix then
            # cannot touch a live key that happens to share it.
            self.store.api_keys.register(
                str(key["keyHash"]),
                str(key["keyPrefix"]),
                str(key["allowanceId"]),
                str(key["label"]),
                int(key["createdAt"]),
            )
            if key.get("revoked"):
                self.store.api_keys.revoke(str(key["keyPrefix"]))
        counts = (self.transactions, self.blocks, len(self.keys), self.previous.block_hash)
        claimed = (self.end.get("transactions"), self.end.get("blocks"), self.end.get("apiKeys"), self.end.get("head"))
        if counts != claimed:
            raise MalformedRecord(f"the dump's end line claims {claimed}, it holds {counts} (edited?)")
        return TransferResult(self.transactions, self.blocks, len(self.keys), self.store.head())

"""Rebuild a ledger in a store from its signed history, by the store's own rules: what
``inferpay import`` (``ledger.storage.dump``) and a mirror (``gateway.mirror``) both do.

Nothing is copied but the history itself. Each transaction is checked on its own (it hashes to
its id and leaf, is properly signed, within its window: ``check_transaction``) and then applied
through the store's ``append_many``, which rebuilds balances, nonces, holds and allowances by
the same rules as when the transaction was first accepted, and refuses what they refuse; it
must get the position (seq) it had in the original. A signed block is then re-attached through
the store's own ``seal``, only after checking that it follows the store's head and covers
exactly the replayed leaves, and that the log tree regrown from the store's frontier with them
has the block's root. The block's signature cannot be remade without the sealer key, and need
not be: it is kept as it was (``check_block`` checks it for callers that must not trust it).

This module never opens a store, never signs, and never prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger import merkle
from ledger.blocks import check_block_signature, frontier_append, frontier_root
from ledger.encoding import leaf_hash, transaction_id
from ledger.errors import InferpayError, MalformedRecord, StorageUnavailable
from ledger.storage.base import LedgerStore
from ledger.types import ChainInfo, SignedBlock, Transaction, TxId
from ledger.validation import check_transaction

Replayable = tuple[Transaction, TxId, bytes]  # a checked transaction, its id and its leaf hash


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def checked(chain: ChainInfo, tx: Transaction) -> Replayable:
    """``tx`` with its id and leaf, once its signature, window and amounts hold on their own."""
    check_transaction(chain, tx, tx.accepted_at_ms // 1000)
    return tx, transaction_id(tx), leaf_hash(tx)


def apply_transactions(
    store: LedgerStore, items: Sequence[Replayable], seqs: Sequence[object], *, resuming: bool = False
) -> None:
    """Apply ``items`` by the store's rules (one commit where the store can), each at the seq
    it had in the original (``seqs``). ``resuming``: a transaction the store already holds
    unsealed at exactly that seq is taken as applied (a replay stopped between applying a
    block's transactions and attaching the block); otherwise a duplicate is refused."""
    outcomes = store.append_many(list(items))
    for (_, tx_id, _), wanted, outcome in zip(items, seqs, outcomes, strict=True):
        if isinstance(outcome, InferpayError):
            raise outcome
        stored, created = outcome
        kept = not created and resuming and stored.seq == wanted and stored.block_height is None
        if (not created and not kept) or stored.seq != wanted:
            raise MalformedRecord(
                f"transaction {tx_id} replays as #{stored.seq}, not as #{wanted}"
                + ("" if created else " (a duplicate)")
            )


def check_block(chain: ChainInfo, previous: SignedBlock, block: SignedBlock, leaves: Sequence[bytes]) -> None:
    """What a signed block claims about ``leaves``, checked before any of them is applied: the
    sealer signed it, it follows ``previous``, and it holds exactly these transactions."""
    height = block.header.height
    if height != previous.header.height + 1 or block.header.prev_hash != previous.block_hash:
        raise MalformedRecord(f"block {height} does not follow block {previous.header.height}")
    check_block_signature(block, chain.sealer)
    if block.header.tx_count != len(leaves) or _hex(merkle.merkle_root(list(leaves))) != block.header.merkle_root:
        raise MalformedRecord(f"block {height}: its merkle root does not cover these {len(leaves)} transactions")


def attach_block(
    store: LedgerStore, block: SignedBlock, leaves: Sequence[bytes], frontier: list[str] | None = None
) -> None:
    """Seal the store's waiting ``leaves`` into ``block`` as it was signed. Refused unless it
    follows the store's head, the store would seal exactly these leaves, and the log tree
    regrown from the stored frontier has the block's root (and is ``frontier``, when given)."""
    height = block.header.height
    expected = list(leaves)
    if not expected or block.header.tx_count != len(expected):
        raise MalformedRecord(
            f"block {height} holds {block.header.tx_count} transactions, the replay gives {len(expected)}"
        )

    def replayed_block(previous: SignedBlock, waiting: list[bytes], before: list[str]) -> tuple[SignedBlock, list[str]]:
        if previous.block_hash != block.header.prev_hash or height != previous.header.height + 1:
            raise MalformedRecord(f"block {height} does not follow block {previous.header.height}")
        if waiting != expected:
            raise MalformedRecord(f"block {height} would seal other transactions than the replay gives")
        grown, size = [bytes.fromhex(h[2:]) for h in before], previous.header.tree_size
        for leaf in waiting:
            frontier_append(grown, size, leaf)
            size += 1
        grown_hex = [_hex(h) for h in grown]
        if size != block.header.tree_size or _hex(frontier_root(grown)) != block.header.tree_root:
            raise MalformedRecord(f"block {height}: the log tree does not match its transactions")
        if frontier is not None and grown_hex != frontier:
            raise MalformedRecord(f"block {height}: the log tree does not match its transactions")
        return block, grown_hex

    sealed = store.seal(replayed_block, len(expected))
    if sealed is None or sealed.block_hash != block.block_hash:
        raise StorageUnavailable(f"block {height} could not be sealed: is another process sealing the target?")

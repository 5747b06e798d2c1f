"""The chain auditor: replays the ledger from genesis and reports every problem it finds.

Unlike validators, which raise the first error, the auditor collects all problems in chain
order (first one first), because whoever audits wants the whole picture. It trusts nothing it
reads: it re-parses every stored record, recomputes every id, leaf hash, Merkle root, block
hash and log root, re-verifies every signature (and with ``independent=True`` again with a
second, pure-Python ECDSA implementation), re-applies every transaction to a fresh state, and
compares the result with the balances and supply the database claims (and the compute pool's
tables: ``ledger.audit.pool_compare``). Memory stays flat: rows are streamed, and used nonces and
what each settle credited (for the refunds that may name it) live in scratch files on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger import merkle
from ledger.audit.disk_set import DiskMap, DiskSet
from ledger.audit.pool_compare import compare_pool
from ledger.audit.precheck import Precheck, prechecked, second_opinion
from ledger.blocks import chain_commitment, check_block_signature, frontier_append, frontier_root
from ledger.errors import InferpayError
from ledger.pool_state import PoolBook, SettleCredits
from ledger.state import LedgerState
from ledger.storage.base import LedgerStore, RawTx
from ledger.types import (
    Allowance,
    Authorization,
    ChainInfo,
    Charge,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SignedBlock,
    SplitSettlement,
    Transaction,
    used_nonce,
)

Checked = tuple[RawTx, Precheck]


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    block_height: int | None = None
    seq: int | None = None
    tx_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "blockHeight": self.block_height,
            "seq": self.seq,
            "txId": self.tx_id,
        }

    def __str__(self) -> str:
        where = []
        if self.block_height is not None:
            where.append(f"block {self.block_height}")
        if self.seq is not None:
            where.append(f"tx #{self.seq}")
        if self.tx_id:
            where.append(self.tx_id[:18] + "…")
        return f"{', '.join(where) or 'ledger'}: {self.message} [{self.code}]"


@dataclass
class AuditReport:
    problems: list[Problem] = field(default_factory=list)
    blocks: int = 0
    transactions: int = 0
    head: SignedBlock | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blocks": self.blocks,
            "transactions": self.transactions,
            "head": self.head.to_dict() if self.head else None,
            "problems": [p.to_dict() for p in self.problems],
        }


class _Auditor:
    def __init__(self, chain: ChainInfo, independent: bool, progress: Callable[[int], None] | None) -> None:
        self.chain = chain
        self.independent = independent
        self.progress = progress
        self.report = AuditReport()
        # What each settle credited (for the refunds that may name it), on disk: memory stays flat.
        self.settles = DiskMap(SettleCredits.to_json, SettleCredits.from_json)
        self.state = LedgerState(pool=PoolBook(settles=self.settles))
        self.seen = DiskSet()
        self.expected_seq = 1
        self.log_size = 0  # leaves replayed into the log tree so far
        self.postings = 0  # (address, seq) pairs the history index should hold
        self.nonces = 0  # (signer, nonce) pairs history used; the store's nonce table must match

    def problem(self, code: str, message: str, height: int | None = None, raw: RawTx | None = None) -> None:
        self.report.problems.append(
            Problem(code, message, height, raw.seq if raw else None, raw.tx_id if raw else None)
        )

    def check_tx(self, raw: RawTx, pre: Precheck, height: int | None) -> bytes | None:
        """Replay one stored transaction, checked on its own already (``pre``); return its
        recomputed leaf hash."""
        self.report.transactions += 1
        if raw.seq != self.expected_seq:
            self.problem(
                "sequence_gap",
                f"expected transaction #{self.expected_seq}, found #{raw.seq} (rows deleted or reordered)",
                height,
                raw,
            )
        self.expected_seq = raw.seq + 1
        tx, leaf, computed_id = pre.tx, pre.leaf, pre.tx_id
        if tx is None or leaf is None or computed_id is None:
            self.problem("malformed_record", f"record does not parse: {pre.parse_error}", height, raw)
            return None
        if leaf != raw.leaf_hash:
            self.problem("leaf_mismatch", "stored leaf hash does not match the record (edited?)", height, raw)
        if computed_id != raw.tx_id:
            self.problem("id_mismatch", f"record hashes to id {computed_id}, stored as {raw.tx_id}", height, raw)
        if not self.seen.add("id:" + computed_id):
            self.problem("duplicate_transaction", "the same transaction appears twice", height, raw)
        if pre.invalid is not None:
            self.problem(pre.invalid[0], pre.invalid[1], height, raw)
            return leaf
        if self.independent and not pre.independent_ok:
            self.problem("independent_check_failed", "the independent verifier rejects the signature", height, raw)
        nonce = used_nonce(tx.message)  # a Permit2's under "permit2:", apart from bytes32 nonces
        if nonce is not None and not self.seen.add(f"nonce:{tx.signer}:{nonce}"):
            self.problem("nonce_reused", f"nonce {nonce} of {tx.signer} used twice", height, raw)
            return leaf
        if nonce is not None:
            self.nonces += 1
        touched = self.touched(tx)
        try:
            self.state.apply(tx, computed_id)
        except InferpayError as exc:
            self.problem(exc.code, f"replay refuses it: {exc}", height, raw)
            return leaf
        for address in touched:  # the account-history index must list exactly these
            self.seen.add(f"post:{address}:{raw.seq}")
        self.postings += len(touched)
        return leaf

    def touched(self, tx: Transaction) -> set[str]:
        """The accounts whose history shows ``tx`` (taken before it is applied)."""
        m = tx.message
        if isinstance(m, Mint):
            return {m.to}
        if isinstance(m, Authorization | Permit2Authorization):
            return {m.from_, m.to}
        if isinstance(m, Allowance):
            return {m.owner}
        if isinstance(m, Charge):
            allowance = self.state.allowances.get(m.allowance_id)
            return {allowance.owner, allowance.spender} if allowance else set()
        if isinstance(m, ProviderRegistration | ProviderApproval):
            return {m.provider}
        if isinstance(m, PoolFee):
            return set()
        if isinstance(m, Redeem):
            return {m.from_}
        if isinstance(m, Refund):
            credits = self.state.pool.settles.get(m.settle_id)
            return {m.from_, credits.payer} if credits else set()
        hold = self.state.holds.get(m.hold_id)
        if hold is None:
            return set()
        return {hold.payer, hold.payee, m.provider} if isinstance(m, SplitSettlement) else {hold.payer, hold.payee}

    def check_block(
        self, block: SignedBlock, previous: SignedBlock | None, txs: list[Checked], frontier: list[bytes]
    ) -> None:
        header = block.header
        height = header.height
        try:
            check_block_signature(block, self.chain.sealer)
            if self.independent and not second_opinion(
                bytes.fromhex(block.block_hash[2:]), block.signature, self.chain.sealer
            ):
                self.problem("independent_check_failed", "the independent verifier rejects the block signature", height)
        except InferpayError as exc:
            self.problem("bad_block_signature", str(exc), height)
        if previous is None:
            if height != 0 or header.prev_hash != chain_commitment(self.chain):
                self.problem("bad_genesis", "genesis block does not commit to this chain's identity", height)
        else:
            if height != previous.header.height + 1:
                self.problem("height_gap", f"block {height} follows block {previous.header.height}", height)
            if header.prev_hash != previous.block_hash:
                self.problem("broken_link", f"prev_hash does not match block {previous.header.height}'s hash", height)
        leaves = []
        for raw, pre in txs:
            leaf = self.check_tx(raw, pre, height)
            leaves.append(leaf if leaf is not None else raw.leaf_hash)
        if len(txs) != header.tx_count:
            self.problem("tx_count_mismatch", f"header says {header.tx_count} transactions, found {len(txs)}", height)
        if "0x" + merkle.merkle_root(leaves).hex() != header.merkle_root:
            self.problem(
                "merkle_mismatch",
                "transactions do not hash to the block's merkle root (edited, deleted, added or reordered)",
                height,
            )
        # The log's size is what history replayed, never what a (possibly edited) header claims.
        for leaf in leaves:
            frontier_append(frontier, self.log_size, leaf)
            self.log_size += 1
        size = self.log_size
        if size != header.tree_size or "0x" + frontier_root(frontier).hex() != header.tree_root:
            self.problem("log_root_mismatch", "the log tree root in the header does not match history", height)
        self.report.blocks += 1


def _blocks(store: ChainSource, auditor: _Auditor) -> Iterator[SignedBlock]:
    for height, record in store.iter_raw_blocks():
        try:
            yield SignedBlock.from_dict(json.loads(record))
        except (ValueError, InferpayError) as exc:
            auditor.problem("malformed_block", f"block record does not parse: {exc}", height)


class ChainSource(Protocol):
    """What the auditor replays: the chain's identity, its blocks and its transactions, raw.
    A ``LedgerStore`` is one; so is a remote node read over HTTP (``gateway.client.ledger_api.RemoteChain``)."""

    def chain_info(self) -> ChainInfo: ...

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]: ...

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]: ...


def audit(
    store: ChainSource,
    *,
    independent: bool = False,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    expected_sealer: str | None = None,
) -> AuditReport:
    """Replay the whole ledger in ``store``; the report lists every problem, in chain order.

    When ``store`` is a ``LedgerStore``, the balances, supply, open holds and used nonces it
    keeps are compared with the replayed ones too; a remote chain has only its history.
    Signatures are checked in ``workers`` processes (default: one per core) once the chain is
    longer than a few thousand transactions (``ledger.audit.precheck``); ``workers=1``: in this one.

    A chain re-keyed from genesis (every block and resolution re-signed by another key, and the
    chain's identity rewritten to name it) is consistent with itself; only a sealer known from
    elsewhere (``expected_sealer``: the address the operator publishes, which every 402 offer
    names) tells it apart."""
    chain = store.chain_info()
    auditor = _Auditor(chain, independent, progress)
    report = auditor.report
    if expected_sealer is not None and expected_sealer.lower() != chain.sealer.lower():
        auditor.problem(
            "unexpected_sealer",
            f"the chain names sealer {chain.sealer}, not the expected {expected_sealer}: every block"
            " and resolution is signed by a key you did not expect (re-keyed or another ledger)",
        )
    try:
        txs = prechecked(chain, store.iter_raw_transactions(), independent=independent, workers=workers)
        pending: Checked | None = next(txs, None)
        previous: SignedBlock | None = None
        frontier: list[bytes] = []
        for block in _blocks(store, auditor):
            height = block.header.height
            group: list[Checked] = []
            while pending is not None and pending[0].block_height is not None and pending[0].block_height <= height:
                raw = pending[0]
                if raw.block_height is not None and raw.block_height < height:
                    auditor.problem(
                        "orphan_transaction",
                        f"transaction claims block {raw.block_height}, which is missing or out of order",
                        raw.block_height,
                        raw,
                    )
                    auditor.check_tx(raw, pending[1], None)
                else:
                    group.append(pending)
                pending = next(txs, None)
            auditor.check_block(block, previous, group, frontier)
            previous = block
            if progress:
                progress(len(group))
        report.head = previous
        if previous is None:
            auditor.problem("no_genesis", "the ledger has no blocks at all")
        unsealed = 0
        while pending is not None:
            raw = pending[0]
            if raw.block_height is not None:
                auditor.problem(
                    "orphan_transaction",
                    f"transaction claims block {raw.block_height}, which does not exist (blocks deleted?)",
                    raw.block_height,
                    raw,
                )
            unsealed += 1
            auditor.check_tx(raw, pending[1], None)
            pending = next(txs, None)
        if progress and unsealed:
            progress(unsealed)
        if isinstance(store, LedgerStore):
            _compare_state(store, auditor)
    finally:
        auditor.seen.close()
        auditor.settles.close()
    return report


def _compare_nonces(store: LedgerStore, auditor: _Auditor) -> None:
    """The nonce table is what stops replays: a row deleted from it would let a used payment in
    again, so every stored (signer, nonce) must come from history, and no more nor fewer."""
    stored = 0
    for signer, nonce in store.iter_nonces():
        stored += 1
        if auditor.seen.add(f"nonce:{signer}:{nonce}"):
            auditor.problem("nonces_mismatch", f"nonce {nonce} of {signer} is recorded but no transaction used it")
    if stored != auditor.nonces:
        auditor.problem(
            "nonces_mismatch", f"database records {stored} used nonces, history uses {auditor.nonces} (rows deleted?)"
        )


def _compare_index_and_allowances(store: LedgerStore, auditor: _Auditor) -> None:
    """The history index (what `history` shows) and the allowances (what API keys may still
    spend) are derived tables too: an edit there must not pass unnoticed."""
    stored = 0
    for address, seq in store.iter_postings():
        stored += 1
        if auditor.seen.add(f"post:{address}:{seq}"):
            auditor.problem(
                "postings_mismatch", f"history index lists tx #{seq} for {address}, which it does not touch"
            )
    if stored != auditor.postings:
        auditor.problem(
            "postings_mismatch", f"history index has {stored} entries, history gives {auditor.postings} (rows deleted?)"
        )
    replayed = {i: (a.owner, a.spender, a.cap, a.spent, a.valid_before) for i, a in auditor.state.allowances.items()}
    kept = {a.allowance_id: (a.owner, a.spender, a.cap, a.spent, a.valid_before) for a in store.iter_allowances()}
    for allowance_id in sorted(set(replayed) | set(kept)):
        if replayed.get(allowance_id) != kept.get(allowance_id):
            auditor.problem(
                "allowances_mismatch",
                f"allowance {allowance_id}: database says {kept.get(allowance_id)}, "
                f"history gives {replayed.get(allowance_id)}",
            )


def _compare_state(store: LedgerStore, auditor: _Auditor) -> None:
    _compare_nonces(store, auditor)
    _compare_index_and_allowances(store, auditor)
    compare_pool(store, auditor.state.pool, lambda code, message: auditor.problem(code, message))
    state = auditor.state
    stored_addresses = set()
    for account in store.accounts():
        stored_addresses.add(account.address)
        want = (state.available.get(account.address, 0), state.held.get(account.address, 0))
        if (account.available, account.held) != want:
            auditor.problem(
                "balance_mismatch",
                f"{account.address}: database says available {account.available}"
                f" held {account.held}, history gives {want[0]} and {want[1]}",
            )
    for address in set(state.available) | set(state.held):
        if address not in stored_addresses and (state.available.get(address) or state.held.get(address)):
            auditor.problem("balance_mismatch", f"{address}: history gives a balance the database lacks")
    if store.supply() != state.supply:
        auditor.problem("supply_mismatch", f"database says supply {store.supply()}, history gives {state.supply}")
    if state.total() != state.supply:
        auditor.problem("supply_not_conserved", f"balances and holds sum to {state.total()}, minted {state.supply}")
    stored_open = {h.hold_id: (h.payer, h.payee, h.amount, h.expires_at_s) for h in store.open_holds()}
    history_open = {i: (h.payer, h.payee, h.amount, h.expires_at_s) for i, h in state.holds.items()}
    if stored_open != history_open:
        auditor.problem(
            "holds_mismatch",
            f"database lists {len(stored_open)} open holds, history gives {len(state.holds)}",
        )

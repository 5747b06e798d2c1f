"""The ledger's money rules in SQL, written once for every SQL backend.

Each rule is a statement whose effect the database itself guarantees, so that no number of
threads, processes or hosts can break it: a debit is a conditional UPDATE (``available >=
amount``) whose row count says whether it held; a nonce is a unique key inserted with ON
CONFLICT DO NOTHING; a hold or allowance is read (locked, where the backend has row locks)
before it is resolved or charged; CHECK constraints are the last line. The decisions that need
more than one row (is the hold open, expired, above the capture; is the charge within the cap)
are ``ledger.state``'s, so the in-memory model, the auditor and both backends share one
implementation of them.

What differs between backends is only the ``Dialect``: the placeholder, whether rows can be
locked ``FOR UPDATE``, and how accounts are locked and in which order (nothing to do on SQLite,
which has one writer at a time; advisory locks in address order on PostgreSQL, whose lock order
is documented with its dialect in ``ledger.storage.postgres``). Every rule runs on an
``Executor``: a connection inside the backend's write transaction.

This module must never open a connection, begin or commit a transaction, or import a database
driver: the backends own their connections, transactions, retries and error translation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from ledger.amounts import MAX_AMOUNT
from ledger.clock import ms_to_s
from ledger.errors import IdempotencyConflict, InsufficientFunds, InvalidAmount, NonceReused, NotFound
from ledger.state import AllowanceState, LedgerState, OpenHold
from ledger.storage.base import AllowanceRow, BlockMaker, HoldRow, StoredTx
from ledger.storage.sql_pool import SqlPoolRules
from ledger.types import (
    Address,
    Allowance,
    Authorization,
    ChainInfo,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    SignedBlock,
    Transaction,
    TxId,
)


class Executor(Protocol):
    """A connection in the middle of a transaction (sqlite-utils' Database, psycopg's Connection)."""

    def execute(self, sql: Any, params: Any = ...) -> Any: ...


AccountLocker = Callable[[Executor, Sequence[Address]], None]


def _no_account_locks(executor: Executor, addresses: Sequence[Address]) -> None:
    """One writer at a time (SQLite): the write lock already orders every writer."""


@dataclass(frozen=True)
class Dialect:
    """What one SQL backend spells differently. SQL here is written with ``?`` placeholders."""

    placeholder: str = "?"
    row_lock: str = ""  # appended to a SELECT of the row a rule decides on, e.g. " FOR UPDATE"
    share_lock: str = ""  # appended to a SELECT of a row a rule reads but must not see change, " FOR SHARE"
    insertion_order: str = "rowid"  # the column that breaks ties in insertion order
    lock_accounts: AccountLocker = field(default=_no_account_locks)

    def sql(self, text: str) -> str:
        return _translate_placeholders(text, self.placeholder)


@lru_cache(maxsize=512)
def _translate_placeholders(text: str, placeholder: str) -> str:
    return text if placeholder == "?" else text.replace("?", placeholder)


TX_COLUMNS = "seq, tx_id, record, leaf_hash, block_height"
HOLD_COLUMNS = "hold_id, payer, payee, amount, expires_at, status, captured, resolution_tx, allowance_id"
ALLOWANCE_COLUMNS = "allowance_id, owner, spender, cap, spent, valid_before"


def stored_tx(row: Sequence[Any]) -> StoredTx:
    seq, tx_id, record, leaf, height = row
    return StoredTx(seq, tx_id, Transaction.from_dict(json.loads(record)), bytes(leaf), height)


def transaction_record(tx: Transaction) -> str:
    """The text a transaction is stored as (its parsed form is re-checked by the auditor)."""
    return json.dumps(tx.to_dict(), sort_keys=True)


class SqlRules:
    """The money-moving statements of every SQL store, over one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.pool = SqlPoolRules(self)

    def _run(self, ex: Executor, text: str, params: Sequence[Any] = ()) -> Any:
        return ex.execute(self.dialect.sql(text), list(params))

    # ---- reads a rule decides on (locked where the dialect can lock rows) ----

    def get(self, ex: Executor, tx_id: TxId) -> StoredTx | None:
        row = self._run(ex, f"SELECT {TX_COLUMNS} FROM transactions WHERE tx_id = ?", [tx_id]).fetchone()
        return stored_tx(row) if row else None

    def hold(self, ex: Executor, hold_id: TxId, *, lock: bool = False) -> HoldRow | None:
        lock_clause = self.dialect.row_lock if lock else ""
        row = self._run(ex, f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = ?{lock_clause}", [hold_id]).fetchone()
        return HoldRow(*row) if row else None

    def allowance(self, ex: Executor, allowance_id: TxId, *, lock: bool = False) -> AllowanceRow | None:
        lock_clause = self.dialect.row_lock if lock else ""
        row = self._run(
            ex, f"SELECT {ALLOWANCE_COLUMNS} FROM allowances WHERE allowance_id = ?{lock_clause}", [allowance_id]
        ).fetchone()
        return AllowanceRow(*row) if row else None

    # ---- the chain's identity and its blocks ----

    def initialize(self, ex: Executor, chain: ChainInfo, genesis: SignedBlock, location: str) -> None:
        inserted = self._run(
            ex,
            "INSERT INTO meta (key, value) VALUES ('chain', ?) ON CONFLICT DO NOTHING",
            [json.dumps(chain.to_dict())],
        )
        if inserted.rowcount != 1:
            raise IdempotencyConflict(f"a ledger already exists at {location}")
        self.insert_block(ex, genesis, [])

    def insert_block(self, ex: Executor, block: SignedBlock, frontier: list[str]) -> None:
        self._run(
            ex,
            "INSERT INTO blocks (height, record, block_hash, frontier) VALUES (?, ?, ?, ?)",
            [block.header.height, json.dumps(block.to_dict(), sort_keys=True), block.block_hash, json.dumps(frontier)],
        )

    def seal_next(self, ex: Executor, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        """Seal up to ``max_txs`` waiting transactions into the next block, in seq order. The
        caller holds the right to seal (SQLite's write lock, PostgreSQL's sealing lock)."""
        rows = self._run(
            ex, "SELECT seq, leaf_hash FROM transactions WHERE block_height IS NULL ORDER BY seq LIMIT ?", [max_txs]
        ).fetchall()
        if not rows:
            return None
        last = self._run(ex, "SELECT record, frontier FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        if last is None:  # pragma: no cover - initialize always writes genesis
            raise NotFound("the ledger has no genesis block")
        previous = SignedBlock.from_dict(json.loads(last[0]))
        block, frontier = make_block(previous, [bytes(r[1]) for r in rows], json.loads(last[1]))
        self.insert_block(ex, block, frontier)
        self._run(
            ex,
            "UPDATE transactions SET block_height = ? WHERE seq BETWEEN ? AND ? AND block_height IS NULL",
            [block.header.height, rows[0][0], rows[-1][0]],
        )
        return block

    # ---- applying one transaction's effects ----

    def apply(self, ex: Executor, tx: Transaction, tx_id: TxId) -> list[Address]:
        """Apply ``tx``'s effects, or raise the rule it breaks (the caller rolls back). Returns
        the addresses whose history it belongs to. Locks are taken in the order the PostgreSQL
        dialect documents: nonce, hold, allowance, the pool's provider and fee rows, supply, accounts
        (then the pool's running totals)."""
        message = tx.message
        if isinstance(message, Mint):
            self._use_nonce(ex, tx.signer, message.nonce, tx_id)
            cursor = self._run(
                ex,
                "UPDATE supply SET minted = minted + ? WHERE id = 1 AND minted <= ?",
                [message.value, MAX_AMOUNT - message.value],
            )
            if cursor.rowcount != 1:
                raise InvalidAmount("minting this would take total supply past 2**63-1")
            self.dialect.lock_accounts(ex, [message.to])
            self._credit(ex, message.to, message.value)
            return [message.to]
        if isinstance(message, Authorization):
            self._use_nonce(ex, message.from_, message.nonce, tx_id)
            if tx.kind == "transfer":
                self.dialect.lock_accounts(ex, [message.from_, message.to])
                self._debit(ex, message.from_, message.value, to_held=False)
                self._credit(ex, message.to, message.value)
            else:
                assert tx.hold_expires_at_s is not None
                self._hold(ex, tx_id, message.from_, message.to, message.value, tx.hold_expires_at_s)
            return [message.from_, message.to]
        if isinstance(message, Permit2Authorization):
            # Its nonce in a namespace of its own (``nonce_key``): never one of the payer's bytes32 nonces.
            self._use_nonce(ex, message.from_, message.nonce_key, tx_id)
            assert tx.hold_expires_at_s is not None
            self._hold(ex, tx_id, message.from_, message.to, message.amount, tx.hold_expires_at_s)
            return [message.from_, message.to]
        if isinstance(message, Allowance):
            self._use_nonce(ex, message.owner, message.nonce, tx_id)
            self._run(
                ex,
                "INSERT INTO allowances (allowance_id, owner, spender, cap, valid_before) VALUES (?, ?, ?, ?, ?)",
                [tx_id, message.owner, message.spender, message.cap, message.valid_before],
            )
            return [message.owner]
        if isinstance(message, Charge):
            assert tx.hold_expires_at_s is not None
            return self._charge(ex, message, tx_id, ms_to_s(tx.accepted_at_ms), tx.hold_expires_at_s)
        if not isinstance(message, HoldResolution):  # the compute pool's kinds (ledger.storage.sql_pool)
            return self.pool.apply(ex, tx, tx_id, ms_to_s(tx.accepted_at_ms))
        return self._resolve(ex, message, tx_id, ms_to_s(tx.accepted_at_ms))

    def _hold(self, ex: Executor, tx_id: TxId, payer: Address, payee: Address, amount: int, expires_at_s: int) -> None:
        self.dialect.lock_accounts(ex, [payer])
        self._debit(ex, payer, amount, to_held=True)
        self._run(
            ex,
            "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status) VALUES (?, ?, ?, ?, ?, 'open')",
            [tx_id, payer, payee, amount, expires_at_s],
        )

    def _use_nonce(self, ex: Executor, signer: Address, nonce: str, tx_id: TxId) -> None:
        cursor = self._run(
            ex,
            "INSERT INTO nonces (signer, nonce, tx_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [signer, nonce, tx_id],
        )
        if cursor.rowcount != 1:  # a concurrent inserter of the same nonce waited, then found it
            raise NonceReused(f"nonce {nonce} of {signer} was already used", signer=signer, nonce=nonce)

    def _debit(self, ex: Executor, address: Address, amount: int, *, to_held: bool) -> None:
        # Conditional: the database re-checks ``available >= amount`` on the newest committed row.
        if to_held:
            sql = "UPDATE accounts SET available = available - ?, held = held + ? WHERE address = ? AND available >= ?"
            params = [amount, amount, address, amount]
        else:
            sql = "UPDATE accounts SET available = available - ? WHERE address = ? AND available >= ?"
            params = [amount, address, amount]
        if self._run(ex, sql, params).rowcount != 1:
            row = self._run(ex, "SELECT available FROM accounts WHERE address = ?", [address]).fetchone()
            have = row[0] if row else 0
            raise InsufficientFunds(
                f"{address} has {have} available, needs {amount}",
                address=address,
                available=str(have),
                needed=str(amount),
            )

    def _credit(self, ex: Executor, address: Address, amount: int) -> None:
        self._run(
            ex,
            "INSERT INTO accounts (address, available) VALUES (?, ?) "
            "ON CONFLICT (address) DO UPDATE SET available = accounts.available + excluded.available",
            [address, amount],
        )

    # The same statements, for the pool's rules (ledger.storage.sql_pool).
    use_nonce = _use_nonce
    debit = _debit
    credit = _credit

    def _charge(self, ex: Executor, charge: Charge, tx_id: TxId, now_s: int, expires_at_s: int) -> list[Address]:
        # Locked: a concurrent charge or release of this allowance commits first, and we read it.
        allowance = self.allowance(ex, charge.allowance_id, lock=True)
        if allowance is None:
            raise NotFound(f"no allowance {charge.allowance_id}", allowance_id=charge.allowance_id)
        rules = LedgerState(
            available={allowance.owner: charge.amount},
            allowances={
                charge.allowance_id: AllowanceState(
                    allowance.owner, allowance.spender, allowance.cap, allowance.valid_before, allowance.spent
                )
            },
        )
        rules.charge(charge, now_s)  # raises if expired or past the cap
        cursor = self._run(
            ex,
            "UPDATE allowances SET spent = spent + ? WHERE allowance_id = ? AND spent + ? <= cap",
            [charge.amount, charge.allowance_id, charge.amount],
        )
        if cursor.rowcount != 1:  # pragma: no cover - the lock (or the one writer) makes the check exact
            raise InsufficientFunds("allowance exhausted")
        self.dialect.lock_accounts(ex, [allowance.owner])
        self._debit(ex, allowance.owner, charge.amount, to_held=True)
        self._run(
            ex,
            "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status, allowance_id) "
            "VALUES (?, ?, ?, ?, ?, 'open', ?)",
            [tx_id, allowance.owner, allowance.spender, charge.amount, expires_at_s, charge.allowance_id],
        )
        return [allowance.owner, allowance.spender]

    def _resolve(self, ex: Executor, res: HoldResolution, tx_id: TxId, now_s: int) -> list[Address]:
        # Locked: a concurrent settle/void/expire of this hold commits first, and we see it.
        hold = self.hold(ex, res.hold_id, lock=True)
        if hold is None:
            raise NotFound(f"no hold {res.hold_id}", hold_id=res.hold_id)
        if hold.status != "open":
            raise IdempotencyConflict(
                f"hold {hold.hold_id} was already resolved ({hold.status}, {hold.captured} captured)"
                f" by {hold.resolution_tx}",
                hold_id=hold.hold_id,
                resolution=hold.resolution_tx,
            )
        rules = LedgerState(
            available={hold.payer: 0, hold.payee: 0},
            held={hold.payer: hold.amount},
            holds={hold.hold_id: OpenHold(hold.hold_id, hold.payer, hold.payee, hold.amount, hold.expires_at_s)},
        )
        rules.resolve(res, now_s)  # raises if expired, not yet expired, or above the hold
        released = hold.amount - res.amount
        if hold.allowance_id is not None and self.dialect.row_lock:  # before the accounts: one lock order
            self._run(
                ex, f"SELECT 1 FROM allowances WHERE allowance_id = ?{self.dialect.row_lock}", [hold.allowance_id]
            )
        self.dialect.lock_accounts(ex, [hold.payer, hold.payee])
        self._run(
            ex,
            "UPDATE holds SET status = ?, captured = ?, resolution_tx = ? WHERE hold_id = ? AND status = 'open'",
            [res.outcome, res.amount, tx_id, hold.hold_id],
        )
        self._run(
            ex,
            "UPDATE accounts SET held = held - ?, available = available + ? WHERE address = ?",
            [hold.amount, released, hold.payer],
        )
        if res.amount:
            self._credit(ex, hold.payee, res.amount)
        if hold.allowance_id is not None:  # what is not captured goes back to the allowance too
            self._run(
                ex, "UPDATE allowances SET spent = spent - ? WHERE allowance_id = ?", [released, hold.allowance_id]
            )
        return [hold.payer, hold.payee]

"""What every SQL ledger store does the same way: the reads, the sealing step, the API keys
and the checkpoints.

``SqlLedgerStore`` implements the read half of ``LedgerStore`` (balances, history, holds, blocks,
the auditor's streams) once, in SQL both SQLite and PostgreSQL run, over three primitives a
backend provides: ``_row``/``_rows`` (one read statement, errors already translated into
``ledger.errors``) and ``_run_write`` (one write transaction, committed whole or not at all,
retried where the backend retries). The money rules are ``ledger.storage.sql_rules``'; what is
really a backend's own (connections, transactions, numbering, migrations, the sealing election)
stays in ``ledger.storage.sqlite`` and ``ledger.storage.postgres``.

Streams read in keyset pages, each page one short statement, so a slow consumer (the auditor)
neither holds a database snapshot open nor pins a pooled connection, and memory stays flat.
This module must never import a database driver.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ledger.amounts import INT64_MAX
from ledger.errors import LedgerNotInitialized
from ledger.storage.base import (
    AllowanceRow,
    ApiKeyRow,
    ApiKeyStore,
    CheckpointStore,
    HoldRow,
    LedgerStore,
    RawTx,
    StoredTx,
)
from ledger.storage.sql_facilitator import SqlFacilitatorRecords
from ledger.storage.sql_pool import PROVIDER_SELECT, earnings, fee_in_force, provider_record
from ledger.storage.sql_rules import (
    ALLOWANCE_COLUMNS,
    HOLD_COLUMNS,
    TX_COLUMNS,
    Dialect,
    Executor,
    SqlRules,
    stored_tx,
)
from ledger.types import (
    Account,
    Address,
    ChainInfo,
    PoolFeeInForce,
    ProviderEarnings,
    ProviderRecord,
    SignedBlock,
    TxId,
)

T = TypeVar("T")
_PAGE = 2000


class SqlLedgerStore(LedgerStore):
    rules: SqlRules
    location: str  # where the ledger lives, safe to print (no password)

    def __init__(self, dialect: Dialect) -> None:
        self.rules = SqlRules(dialect)
        self.api_keys = SqlApiKeys(self)
        self.checkpoints = SqlCheckpoints(self)
        self.facilitator = SqlFacilitatorRecords(self)

    # ---- what a backend provides ----

    @abstractmethod
    def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one read statement (``?`` placeholders), or None."""

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of one read statement (``?`` placeholders)."""

    @abstractmethod
    def _run_write(self, work: Callable[[Executor], T]) -> T:
        """Run ``work`` in one write transaction: all of it commits, or none of it."""

    def _sql(self, text: str) -> str:
        return self.rules.dialect.sql(text)

    # ---- chain identity ----

    def initialize(self, chain: ChainInfo, genesis: SignedBlock) -> None:
        self._run_write(lambda ex: self.rules.initialize(ex, chain, genesis, self.location))

    def chain_info(self) -> ChainInfo:
        row = self._row("SELECT value FROM meta WHERE key = 'chain'")
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.location}: run `inferpay init`")
        return ChainInfo.from_dict(json.loads(row[0]))

    # ---- balances, transactions, holds ----

    def account(self, address: Address) -> Account:
        row = self._row("SELECT available, held FROM accounts WHERE address = ?", [address])
        return Account(address, row[0], row[1]) if row else Account(address, 0, 0)

    def accounts(self) -> Iterator[Account]:
        after = ""
        while True:
            rows = self._rows(
                "SELECT address, available, held FROM accounts WHERE address > ? ORDER BY address LIMIT ?",
                [after, _PAGE],
            )
            if not rows:
                return
            for address, available, held in rows:
                yield Account(address, available, held)
            after = rows[-1][0]

    def supply(self) -> int:
        """In circulation: minted less redeemed."""
        row = self._row("SELECT minted - redeemed FROM supply WHERE id = 1")
        return int(row[0]) if row else 0

    # ---- the compute pool (ledger.storage.sql_pool) ----

    def provider(self, address: Address) -> ProviderRecord | None:
        row = self._row(f"{PROVIDER_SELECT} WHERE p.address = ?", [address])
        return provider_record(row) if row else None

    def providers(self) -> list[ProviderRecord]:
        return [provider_record(r) for r in self._rows(f"{PROVIDER_SELECT} ORDER BY p.registered_at, p.address")]

    def pool_fee(self) -> PoolFeeInForce:
        return fee_in_force(self._row("SELECT fee_bps, flat_fee, fee_id FROM pool_state WHERE id = 1"))

    def provider_earnings(self, address: Address) -> ProviderEarnings:
        return earnings(
            self._row("SELECT calls, earned, refunded, redeemed FROM pool_earnings WHERE address = ?", [address])
        )

    def operator_fees(self) -> int:
        row = self._row("SELECT sum(fees) FROM pool_operator_fees")
        return int(row[0]) if row and row[0] is not None else 0

    def pool_version(self) -> int:
        row = self._row("SELECT version FROM pool_state WHERE id = 1")
        return int(row[0]) if row else 0

    def provider_approvals(self) -> dict[Address, bool]:
        return {str(a): bool(ok) for a, ok in self._rows("SELECT address, approved FROM provider_approvals")}

    def all_provider_earnings(self) -> dict[Address, ProviderEarnings]:
        rows = self._rows("SELECT address, calls, earned, refunded, redeemed FROM pool_earnings")
        return {str(r[0]): earnings(r[1:]) for r in rows}

    def operator_fees_by_payee(self) -> dict[Address, int]:
        return {str(p): int(f) for p, f in self._rows("SELECT payee, fees FROM pool_operator_fees")}

    def refunds_by_settle(self) -> dict[tuple[TxId, Address], tuple[int, int]]:
        rows = self._rows("SELECT settle_id, address, credited, refunded FROM refunds_by_settle")
        return {(str(s), str(a)): (int(c), int(r)) for s, a, c, r in rows}

    def get(self, tx_id: TxId) -> StoredTx | None:
        row = self._row(f"SELECT {TX_COLUMNS} FROM transactions WHERE tx_id = ?", [tx_id])
        return stored_tx(row) if row else None

    def history(self, address: Address, limit: int, before_seq: int | None = None) -> list[StoredTx]:
        rows = self._rows(
            "SELECT t.seq, t.tx_id, t.record, t.leaf_hash, t.block_height FROM postings p "
            "JOIN transactions t ON t.seq = p.seq WHERE p.address = ? AND p.seq < ? "
            "ORDER BY p.seq DESC LIMIT ?",
            [address, before_seq if before_seq is not None else INT64_MAX, limit],
        )
        return [stored_tx(r) for r in rows]

    def hold(self, hold_id: TxId) -> HoldRow | None:
        row = self._row(f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = ?", [hold_id])
        return HoldRow(*row) if row else None

    def open_holds(self, address: Address | None = None) -> list[HoldRow]:
        where, params = ("AND payer = ?", [address]) if address is not None else ("", [])
        order = self.rules.dialect.insertion_order
        rows = self._rows(
            f"SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'open' {where} ORDER BY expires_at, {order}", params
        )
        return [HoldRow(*r) for r in rows]

    def expired_holds(self, now_seconds: int, limit: int) -> list[HoldRow]:
        order = self.rules.dialect.insertion_order
        rows = self._rows(
            f"SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'open' AND expires_at <= ? "
            f"ORDER BY expires_at, {order} LIMIT ?",
            [now_seconds, limit],
        )
        return [HoldRow(*r) for r in rows]

    def allowance(self, allowance_id: TxId) -> AllowanceRow | None:
        row = self._row(f"SELECT {ALLOWANCE_COLUMNS} FROM allowances WHERE allowance_id = ?", [allowance_id])
        return AllowanceRow(*row) if row else None

    # ---- blocks ----

    def unsealed(self) -> tuple[int, int | None]:
        row = self._row("SELECT count(*), min(accepted_at) FROM transactions WHERE block_height IS NULL")
        return (int(row[0]), row[1]) if row else (0, None)

    def head(self) -> SignedBlock:
        row = self._row("SELECT record FROM blocks ORDER BY height DESC LIMIT 1")
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.location}: run `inferpay init`")
        return SignedBlock.from_dict(json.loads(row[0]))

    def block(self, height: int) -> SignedBlock | None:
        row = self._row("SELECT record FROM blocks WHERE height = ?", [height])
        return SignedBlock.from_dict(json.loads(row[0])) if row else None

    def blocks(self, start: int, stop: int) -> list[SignedBlock]:
        rows = self._rows("SELECT record FROM blocks WHERE height >= ? AND height < ? ORDER BY height", [start, stop])
        return [SignedBlock.from_dict(json.loads(r[0])) for r in rows]

    def block_transactions(self, height: int) -> list[StoredTx]:
        rows = self._rows(f"SELECT {TX_COLUMNS} FROM transactions WHERE block_height = ? ORDER BY seq", [height])
        return [stored_tx(r) for r in rows]

    def leaf_hashes(self, tree_size: int) -> list[bytes]:
        rows = self._rows(
            "SELECT leaf_hash FROM transactions WHERE block_height IS NOT NULL ORDER BY seq LIMIT ?", [tree_size]
        )
        return [bytes(r[0]) for r in rows]

    # ---- the log by index ----

    def _log_rows(self, columns: str, start: int, stop: int) -> list[Any]:
        # Sealing takes waiting transactions in seq order, block after block, so the log is the
        # sealed transactions ordered by (block_height, seq). The block holding ``start`` is
        # found by binary search on the tree sizes the headers carry (O(log height) lookups).
        head = self.head()
        stop = min(stop, head.header.tree_size)
        if start < 0 or start >= stop:
            return []
        low, high = 1, head.header.height  # the lowest height whose tree_size exceeds start
        while low < high:
            middle = (low + high) // 2
            found = self.block(middle)
            if found is None or found.header.tree_size > start:
                high = middle
            else:
                low = middle + 1
        first = self.block(low)
        assert first is not None
        skip = start - (first.header.tree_size - first.header.tx_count)
        rows = self._rows(
            f"SELECT {columns} FROM transactions WHERE block_height >= ? ORDER BY block_height, seq LIMIT ?",
            [low, skip + stop - start],
        )
        return rows[skip:]

    def log_leaf_hashes(self, start: int, stop: int) -> list[bytes]:
        return [bytes(r[0]) for r in self._log_rows("leaf_hash", start, stop)]

    def log_records(self, start: int, stop: int) -> list[str]:
        return [str(r[0]) for r in self._log_rows("record", start, stop)]

    # ---- the auditor's streams ----

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = _PAGE) -> Iterator[RawTx]:
        while True:
            rows = self._rows(
                f"SELECT {TX_COLUMNS} FROM transactions WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, batch]
            )
            if not rows:
                return
            for seq, tx_id, record, leaf, height in rows:
                yield RawTx(seq, tx_id, record, bytes(leaf), height)
            after_seq = rows[-1][0]

    def iter_nonces(self) -> Iterator[tuple[str, str]]:
        after: Sequence[Any] = ("", "")
        while True:
            rows = self._rows(
                "SELECT signer, nonce FROM nonces WHERE (signer, nonce) > (?, ?) ORDER BY signer, nonce LIMIT 5000",
                list(after),
            )
            if not rows:
                return
            yield from ((str(a), str(b)) for a, b in rows)
            after = rows[-1]

    def iter_postings(self) -> Iterator[tuple[str, int]]:
        after: Sequence[Any] = ("", 0)
        while True:
            rows = self._rows(
                "SELECT address, seq FROM postings WHERE (address, seq) > (?, ?) ORDER BY address, seq LIMIT 5000",
                list(after),
            )
            if not rows:
                return
            yield from ((str(a), int(s)) for a, s in rows)
            after = rows[-1]

    def iter_allowances(self) -> Iterator[AllowanceRow]:
        for row in self._rows(f"SELECT {ALLOWANCE_COLUMNS} FROM allowances ORDER BY allowance_id"):
            yield AllowanceRow(*row)

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        after = -1
        while True:
            rows = self._rows("SELECT height, record FROM blocks WHERE height > ? ORDER BY height LIMIT 500", [after])
            if not rows:
                return
            yield from ((int(h), str(r)) for h, r in rows)
            after = rows[-1][0]


_API_KEY_SELECT = (
    "SELECT k.key_hash, k.key_prefix, k.label, k.created_at, k.revoked, "
    "a.allowance_id, a.owner, a.spender, a.cap, a.spent, a.valid_before "
    "FROM api_keys k JOIN allowances a ON a.allowance_id = k.allowance_id"
)


def _api_key_row(row: Sequence[Any]) -> ApiKeyRow:
    key_hash, prefix, label, created_ms, revoked, *allowance = row
    return ApiKeyRow(key_hash, prefix, label, created_ms, bool(revoked), AllowanceRow(*allowance))


class SqlCheckpoints(CheckpointStore):
    """Checkpoints in the ``checkpoints`` table of a SQL ledger store, on its connections."""

    def __init__(self, store: SqlLedgerStore) -> None:
        self._store = store

    def save_many(self, notes: Mapping[int, bytes], updated_at_ms: int) -> None:
        upsert = self._store._sql(
            "INSERT INTO checkpoints (tree_size, note, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (tree_size) DO UPDATE SET note = excluded.note, updated_at = excluded.updated_at"
        )
        prune = self._store._sql(
            "DELETE FROM checkpoints WHERE tree_size < "
            "(SELECT MIN(tree_size) FROM (SELECT tree_size FROM checkpoints ORDER BY tree_size DESC LIMIT ?) AS kept)"
        )

        def work(ex: Executor) -> None:
            for tree_size, note in sorted(notes.items()):
                ex.execute(upsert, [tree_size, note.decode(), updated_at_ms])
            ex.execute(prune, [self.KEEP])

        self._store._run_write(work)

    def latest(self) -> tuple[int, bytes] | None:
        row = self._store._row("SELECT tree_size, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
        return (int(row[0]), str(row[1]).encode()) if row else None

    def at(self, tree_size: int) -> bytes | None:
        row = self._store._row("SELECT note FROM checkpoints WHERE tree_size = ?", [tree_size])
        return str(row[0]).encode() if row else None


class SqlApiKeys(ApiKeyStore):
    """API keys in the ``api_keys`` table of a SQL ledger store, on its connections."""

    def __init__(self, store: SqlLedgerStore) -> None:
        self._store = store

    def register(self, key_hash: str, key_prefix: str, allowance_id: TxId, label: str, created_at_ms: int) -> None:
        sql = self._store._sql(
            "INSERT INTO api_keys (key_hash, key_prefix, allowance_id, label, created_at) VALUES (?, ?, ?, ?, ?)"
        )
        self._store._run_write(lambda ex: ex.execute(sql, [key_hash, key_prefix, allowance_id, label, created_at_ms]))

    def get(self, key_hash: str) -> ApiKeyRow | None:
        row = self._store._row(f"{_API_KEY_SELECT} WHERE k.key_hash = ?", [key_hash])
        return _api_key_row(row) if row else None

    def all(self) -> list[ApiKeyRow]:
        order = self._store.rules.dialect.insertion_order
        return [_api_key_row(r) for r in self._store._rows(f"{_API_KEY_SELECT} ORDER BY k.created_at, k.{order}")]

    def of_owner(self, owner: Address) -> list[ApiKeyRow]:
        order = self._store.rules.dialect.insertion_order
        rows = self._store._rows(f"{_API_KEY_SELECT} WHERE a.owner = ? ORDER BY k.created_at, k.{order}", [owner])
        return [_api_key_row(r) for r in rows]

    def revoke(self, key_prefix_or_allowance: str) -> int:
        sql = self._store._sql("UPDATE api_keys SET revoked = true WHERE key_prefix = ? OR allowance_id = ?")
        return int(self._store._run_write(lambda ex: ex.execute(sql, [key_prefix_or_allowance] * 2).rowcount))

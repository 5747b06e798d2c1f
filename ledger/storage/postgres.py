"""The PostgreSQL ledger backend: the only module that talks to PostgreSQL (and imports psycopg).

Same tables, same rules, same answers as ``ledger.storage.sqlite``; what differs is how many
writers run at once. SQLite has one writer at a time; here many processes on many hosts write
concurrently, so each rule is enforced by the database at write time, in one transaction per
operation (nothing half-written), never by a Python check on an earlier read.

Concurrency: READ COMMITTED, not SERIALIZABLE. Every money rule is one of
- a conditional UPDATE whose row count says whether it held (``available >= amount``,
  ``minted <= MAX - value``): READ COMMITTED re-evaluates the WHERE clause on the newest
  committed row after waiting for a concurrent writer, so two debits can never both see the
  same balance;
- a unique key (``nonces``) inserted with ON CONFLICT DO NOTHING: the second inserter waits for
  the first and then finds the conflict;
- a row read ``FOR UPDATE`` before deciding (a hold being resolved, an allowance being charged),
  which also waits for, and then reads, the newest committed row;
- CHECK constraints (``available >= 0``, ``captured <= amount``, ``spent <= cap``) as a last line.
That is exactly what the rules need, and it never aborts a payment because an unrelated one
touched the same pages (SERIALIZABLE's predicate locks would, and every caller would then need
retries). Locks are taken in one global order so payments do not deadlock: the transaction's
own id, its nonce, then the hold, the allowance, the supply row, the accounts (advisory locks
in address order, see ``_lock_accounts``) and last the sequence counter. Should the server
still report a deadlock or serialization failure, the whole operation is retried, which is
safe because it rolled back.

Order: ``seq`` is the ledger's single total order, and the sealer and auditor need it gap-free
and in commit order (a sealer must never see seq 7 committed while seq 6 is still in flight). A
PostgreSQL SEQUENCE gives neither (numbers are burnt by rollbacks and commits race), so seq comes
from ``UPDATE seq_counter ... RETURNING``: the row lock is taken as the transaction's last step
and held until commit, so commits are ordered by seq and a rollback gives its number back.
Idempotency: each append first takes a transaction-scoped advisory lock on its tx id, so the
same transaction submitted twice at once is applied once and the second caller gets it back.

Sealing: exactly one sealer at a time across all processes and hosts. The seal transaction takes
``pg_try_advisory_xact_lock(SEAL_LOCK, <this schema>)``; if another process holds it, ``seal``
returns None at once (it is sealing). The lock ends with the transaction, so a sealer that dies
mid-block leaves nothing behind: its transaction rolls back, the lock is released, and the next
tick of any other process seals the same transactions into the same next height.

Connections: a ``psycopg_pool.ConnectionPool`` per store, autocommit connections (reads are one
statement; writes use explicit transactions), ``search_path`` set on every connection by the
pool's ``configure`` callback, and every connection checked before it is handed out, so
connections broken by a server restart are discarded and replaced when the server returns.
Errors: unique nonce -> NonceReused, CHECK -> InsufficientFunds, a value out of BIGINT range ->
InvalidInput, anything connection-related -> StorageUnavailable (a client should retry the same
signed transaction: if the first attempt did commit, the retry is answered as a duplicate).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool

from ledger.amounts import MAX_AMOUNT
from ledger.errors import (
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    LedgerNotInitialized,
    NonceReused,
    NotFound,
    StorageUnavailable,
)
from ledger.storage.base import AllowanceRow, ApiKeyRow, BlockMaker, HoldRow, LedgerStore, RawTx, StoredTx
from ledger.storage.postgres_schema import MIGRATIONS, PostgresTarget, parse_postgres_url
from ledger.types import (
    Account,
    Address,
    Allowance,
    Authorization,
    ChainInfo,
    Charge,
    HoldResolution,
    Mint,
    SignedBlock,
    Transaction,
    TxId,
)

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

# Advisory lock classes (the two-int form; the second int is a hash of the schema, so ledgers in
# different schemas of one database never wait for each other). Arbitrary, fixed forever.
SEAL_LOCK = 0x1F5EA1  # one sealer at a time
MIGRATE_LOCK = 0x1F5EA2  # one migrator at a time
_WRITE_ATTEMPTS = 8  # retries of a whole write after a deadlock or serialization failure
_CONNECT_TIMEOUT = 5  # seconds, unless the URL sets connect_timeout

_TX_COLUMNS = "seq, tx_id, record, leaf_hash, block_height"
_HOLD_COLUMNS = "hold_id, payer, payee, amount, expires_at, status, captured, resolution_tx, allowance_id"
_API_KEY_SELECT = (
    "SELECT k.key_hash, k.key_prefix, k.label, k.created_at, k.revoked, "
    "a.allowance_id, a.owner, a.spender, a.cap, a.spent, a.valid_before "
    "FROM api_keys k JOIN allowances a ON a.allowance_id = k.allowance_id"
)


class _Contention(StorageUnavailable):
    """A deadlock or serialization failure: the transaction rolled back and may simply be retried."""


def _row_to_stored(row: tuple[Any, ...]) -> StoredTx:
    seq, tx_id, record, leaf, height = row
    return StoredTx(seq, tx_id, Transaction.from_dict(json.loads(record)), bytes(leaf), height)


def _api_key_row(row: tuple[Any, ...]) -> ApiKeyRow:
    key_hash, prefix, label, created, revoked, *allowance = row
    return ApiKeyRow(key_hash, prefix, label, created, bool(revoked), AllowanceRow(*allowance))


def _reason(exc: BaseException) -> str:
    """libpq's message in one line (it spreads hints and per-address attempts over several)."""
    text = str(exc).strip().removeprefix("connection failed:").strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


# Take the next sequence number and record the transaction and its history-index entries, in one
# statement. Data-modifying CTEs all run exactly once, whatever the final SELECT reads.
_NUMBER_AND_RECORD = """
WITH counter AS (
    UPDATE seq_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq
), recorded AS (
    INSERT INTO transactions (seq, tx_id, kind, record, leaf_hash, accepted_at)
    SELECT last_seq, %s, %s, %s, %s, %s FROM counter
    RETURNING seq
), indexed AS (
    INSERT INTO postings (address, seq)
    SELECT DISTINCT address, recorded.seq FROM recorded, unnest(%s::text[]) AS address
    ON CONFLICT DO NOTHING
)
SELECT seq FROM recorded
"""


class PostgresStore(LedgerStore):
    def __init__(self, url: str) -> None:
        self.target: PostgresTarget = parse_postgres_url(url)
        self.display = self.target.display
        kwargs: dict[str, Any] = {"autocommit": True}
        if not self.target.has_connect_timeout:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT
        # One direct connection first: its error (refused, unknown database, bad password) is the
        # clearest thing to show, and it runs the migrations before any pooled connection exists.
        try:
            first: Conn = psycopg.connect(self.target.conninfo, **kwargs)
        except psycopg.ProgrammingError as exc:  # libpq could not parse the URL
            raise InvalidInput(f"bad PostgreSQL URL {self.display}: {_reason(exc)}") from exc
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL at {self.display}: {_reason(exc)}") from exc
        try:
            with first:
                self._migrate(first)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            self.target.conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=self.target.pool_size,
            open=False,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=self.target.pool_timeout,
            name="inferpay-ledger",
        )
        try:
            self._pool.open(wait=True, timeout=max(self.target.pool_timeout, _CONNECT_TIMEOUT))
        except psycopg.Error as exc:
            self._pool.close()
            raise StorageUnavailable(f"cannot connect to PostgreSQL at {self.display}: {_reason(exc)}") from exc

    def __repr__(self) -> str:
        return f"PostgresStore({self.display!r})"

    # ---- connections, transactions, errors ----

    def _configure(self, conn: Conn) -> None:
        """Run by the pool on each new connection (and so on each reconnection)."""
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        self._set_search_path(conn)

    def _set_search_path(self, conn: Conn) -> None:
        if self.target.schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.target.schema)))

    def _migrate(self, conn: Conn) -> None:
        schema = self.target.schema
        with conn.transaction():
            # Lock first, keyed by the schema's name: CREATE SCHEMA IF NOT EXISTS itself races.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(%s, current_schema(), '')))",
                [MIGRATE_LOCK, schema],
            )
            if schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            self._set_search_path(conn)
            if conn.execute("SELECT current_schema()").fetchone() == (None,):
                raise InvalidInput(f"{self.display}: the search_path names no existing schema to create tables in")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, statements in MIGRATIONS:
                if name not in applied:
                    conn.execute(statements)  # several statements, no parameters
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", [name])

    def _translate(self, exc: psycopg.Error) -> InferpayError:
        if exc.sqlstate in ("40001", "40P01"):  # serialization failure, deadlock: rolled back
            return _Contention(f"the ledger database was too busy to commit ({_reason(exc)}); nothing was written")
        if isinstance(exc, pg_errors.CheckViolation):
            # Only reachable if a rule was bypassed: the CHECK constraints are the last line.
            return InsufficientFunds(f"refused by the ledger's constraints: {_reason(exc)}")
        if isinstance(exc, pg_errors.UniqueViolation):
            if exc.diag.table_name == "nonces":
                return NonceReused(f"nonce already used: {_reason(exc)}")
            return IdempotencyConflict(f"already recorded: {_reason(exc)}")
        if isinstance(exc, pg_errors.ForeignKeyViolation):
            return NotFound(f"refers to something the ledger does not have: {_reason(exc)}")
        if isinstance(exc, psycopg.DataError):
            return InvalidInput(f"a value the ledger cannot store (numbers at most 2**63-1): {_reason(exc)}")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StorageUnavailable(f"PostgreSQL at {self.display} is unavailable: {_reason(exc)}")
        return StorageUnavailable(f"ledger database error at {self.display}: {_reason(exc)}")

    @contextmanager
    def _connection(self) -> Iterator[Conn]:
        """A pooled connection; psycopg errors leave as ``ledger.errors``. The pool rolls back
        whatever the block left open and throws away a connection that broke."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def _write(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` in one transaction: all of it commits, or none of it."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._connection() as conn, conn.transaction():
                    return work(conn)
            except _Contention:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # let the other transaction finish
        raise AssertionError("unreachable")

    def _one(self, query: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._connection() as conn:
            return conn.execute(query, params).fetchone()

    def _all(self, query: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def close(self) -> None:
        self._pool.close(timeout=5)

    # ---- chain identity ----

    def initialize(self, chain: ChainInfo, genesis: SignedBlock) -> None:
        def work(conn: Conn) -> None:
            inserted = conn.execute(
                "INSERT INTO meta (key, value) VALUES ('chain', %s) ON CONFLICT DO NOTHING",
                [json.dumps(chain.to_dict())],
            )
            if inserted.rowcount != 1:
                raise IdempotencyConflict(f"a ledger already exists at {self.display}")
            self._insert_block(conn, genesis, [])

        self._write(work)

    def chain_info(self) -> ChainInfo:
        row = self._one("SELECT value FROM meta WHERE key = 'chain'")
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.display}: run `inferpay init`")
        return ChainInfo.from_dict(json.loads(row[0]))

    # ---- applying transactions ----

    def append(self, tx: Transaction, tx_id: TxId, leaf_hash: bytes) -> tuple[StoredTx, bool]:
        record = json.dumps(tx.to_dict(), sort_keys=True)  # before any lock is taken

        def work(conn: Conn) -> tuple[StoredTx, bool]:
            # The same transaction submitted twice at once: the second waits here, then finds it.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || %s, 0))", ["tx:" + tx_id])
            existing = self._get(conn, tx_id)
            if existing is not None:
                return existing, False
            touched = self._apply(conn, tx, tx_id)
            # Last, and held until commit: commits happen in seq order, without gaps. Every writer
            # of every gateway queues on this row, so what happens under its lock is one statement
            # (one round trip) and the commit.
            numbered = conn.execute(_NUMBER_AND_RECORD, [tx_id, tx.kind, record, leaf_hash, tx.accepted_at_ms, touched])
            return StoredTx(int(_fetch(numbered)[0]), tx_id, tx, leaf_hash, None), True

        return self._write(work)

    def _use_nonce(self, conn: Conn, signer: Address, nonce: str, tx_id: TxId) -> None:
        cursor = conn.execute(
            "INSERT INTO nonces (signer, nonce, tx_id) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [signer, nonce, tx_id],
        )
        if cursor.rowcount != 1:
            raise NonceReused(f"nonce {nonce} of {signer} was already used", signer=signer, nonce=nonce)

    def _lock_accounts(self, conn: Conn, *addresses: Address) -> None:
        """Take the accounts' transaction-scoped advisory locks, in address order, before touching
        their rows. Row locks alone cannot be taken in order: a row another writer is creating is
        invisible to a READ COMMITTED snapshot until it commits, so it would be locked later and
        out of order (A->B and B->A payments then deadlock). Advisory locks exist before rows do."""
        ordered = sorted(set(addresses))
        locks = ", ".join(["pg_advisory_xact_lock(hashtextextended(current_schema() || %s, 0))"] * len(ordered))
        conn.execute(f"SELECT {locks}", ["account:" + a for a in ordered])

    def _debit(self, conn: Conn, address: Address, amount: int, *, to_held: bool) -> None:
        cursor = conn.execute(
            f"UPDATE accounts SET available = available - %s{', held = held + %s' if to_held else ''} "
            "WHERE address = %s AND available >= %s",
            [amount, amount, address, amount] if to_held else [amount, address, amount],
        )
        if cursor.rowcount != 1:
            row = conn.execute("SELECT available FROM accounts WHERE address = %s", [address]).fetchone()
            have = row[0] if row else 0
            raise InsufficientFunds(
                f"{address} has {have} available, needs {amount}",
                address=address,
                available=str(have),
                needed=str(amount),
            )

    def _credit(self, conn: Conn, address: Address, amount: int) -> None:
        conn.execute(
            "INSERT INTO accounts (address, available) VALUES (%s, %s) "
            "ON CONFLICT (address) DO UPDATE SET available = accounts.available + excluded.available",
            [address, amount],
        )

    def _apply(self, conn: Conn, tx: Transaction, tx_id: TxId) -> list[Address]:
        message = tx.message
        if isinstance(message, Mint):
            self._use_nonce(conn, tx.signer, message.nonce, tx_id)
            cursor = conn.execute(
                "UPDATE supply SET minted = minted + %s WHERE id = 1 AND minted <= %s",
                [message.value, MAX_AMOUNT - message.value],
            )
            if cursor.rowcount != 1:
                raise InvalidAmount("minting this would take total supply past 2**63-1")
            self._lock_accounts(conn, message.to)
            self._credit(conn, message.to, message.value)
            return [message.to]
        if isinstance(message, Authorization):
            self._use_nonce(conn, message.from_, message.nonce, tx_id)
            if tx.kind == "transfer":
                self._lock_accounts(conn, message.from_, message.to)
                self._debit(conn, message.from_, message.value, to_held=False)
                self._credit(conn, message.to, message.value)
            else:
                assert tx.hold_expires_at_s is not None
                self._lock_accounts(conn, message.from_)
                self._debit(conn, message.from_, message.value, to_held=True)
                conn.execute(
                    "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status) "
                    "VALUES (%s, %s, %s, %s, %s, 'open')",
                    [tx_id, message.from_, message.to, message.value, tx.hold_expires_at_s],
                )
            return [message.from_, message.to]
        if isinstance(message, Allowance):
            self._use_nonce(conn, message.owner, message.nonce, tx_id)
            conn.execute(
                "INSERT INTO allowances (allowance_id, owner, spender, cap, valid_before) VALUES (%s, %s, %s, %s, %s)",
                [tx_id, message.owner, message.spender, message.cap, message.valid_before],
            )
            return [message.owner]
        if isinstance(message, Charge):
            assert tx.hold_expires_at_s is not None
            return self._charge(conn, message, tx_id, tx.accepted_at_ms // 1000, tx.hold_expires_at_s)
        assert isinstance(message, HoldResolution)
        return self._resolve(conn, message, tx_id, tx.accepted_at_ms // 1000)

    def _charge(self, conn: Conn, charge: Charge, tx_id: TxId, now: int, expires_at_s: int) -> list[Address]:
        from ledger.state import AllowanceState, LedgerState  # the rules live in one place

        # FOR UPDATE: wait for a concurrent charge or release of this allowance, then read its result.
        allowance = self._allowance(conn, charge.allowance_id, lock=True)
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
        rules.charge(charge, now)  # raises if expired or past the cap
        cursor = conn.execute(
            "UPDATE allowances SET spent = spent + %s WHERE allowance_id = %s AND spent + %s <= cap",
            [charge.amount, charge.allowance_id, charge.amount],
        )
        if cursor.rowcount != 1:  # pragma: no cover - the row lock makes the check above exact
            raise InsufficientFunds("allowance exhausted")
        self._lock_accounts(conn, allowance.owner)
        self._debit(conn, allowance.owner, charge.amount, to_held=True)
        conn.execute(
            "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status, allowance_id) "
            "VALUES (%s, %s, %s, %s, %s, 'open', %s)",
            [tx_id, allowance.owner, allowance.spender, charge.amount, expires_at_s, charge.allowance_id],
        )
        return [allowance.owner, allowance.spender]

    def _allowance(self, conn: Conn, allowance_id: TxId, *, lock: bool = False) -> AllowanceRow | None:
        row = conn.execute(
            "SELECT allowance_id, owner, spender, cap, spent, valid_before FROM allowances WHERE allowance_id = %s"
            + (" FOR UPDATE" if lock else ""),
            [allowance_id],
        ).fetchone()
        return AllowanceRow(*row) if row else None

    def _resolve(self, conn: Conn, res: HoldResolution, tx_id: TxId, now: int) -> list[Address]:
        from ledger.state import LedgerState, OpenHold  # the rules live in one place

        # FOR UPDATE: a concurrent settle/void/expire of this hold commits first, and we see it.
        hold = self._hold(conn, res.hold_id, lock=True)
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
        rules.resolve(res, now)  # raises if expired, not yet expired, or above the hold
        released = hold.amount - res.amount
        if hold.allowance_id is not None:  # locked before the accounts: one lock order everywhere
            conn.execute("SELECT 1 FROM allowances WHERE allowance_id = %s FOR UPDATE", [hold.allowance_id])
        self._lock_accounts(conn, hold.payer, hold.payee)
        conn.execute(
            "UPDATE holds SET status = %s, captured = %s, resolution_tx = %s WHERE hold_id = %s AND status = 'open'",
            [res.outcome, res.amount, tx_id, hold.hold_id],
        )
        conn.execute(
            "UPDATE accounts SET held = held - %s, available = available + %s WHERE address = %s",
            [hold.amount, released, hold.payer],
        )
        if res.amount:
            self._credit(conn, hold.payee, res.amount)
        if hold.allowance_id is not None:  # what is not captured goes back to the allowance too
            conn.execute(
                "UPDATE allowances SET spent = spent - %s WHERE allowance_id = %s", [released, hold.allowance_id]
            )
        return [hold.payer, hold.payee]

    # ---- API keys: bearer secrets standing for an allowance (stored as hashes only) ----

    def allowance(self, allowance_id: TxId) -> AllowanceRow | None:
        with self._connection() as conn:
            return self._allowance(conn, allowance_id)

    def register_api_key(
        self, key_hash: str, key_prefix: str, allowance_id: TxId, label: str, created_at_ms: int
    ) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO api_keys (key_hash, key_prefix, allowance_id, label, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [key_hash, key_prefix, allowance_id, label, created_at_ms],
            )

        self._write(work)

    def api_key(self, key_hash: str) -> ApiKeyRow | None:
        row = self._one(f"{_API_KEY_SELECT} WHERE k.key_hash = %s", [key_hash])
        return _api_key_row(row) if row else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [_api_key_row(r) for r in self._all(f"{_API_KEY_SELECT} ORDER BY k.created_at, k.row_id")]

    def revoke_api_key(self, key_prefix_or_allowance: str) -> int:
        def work(conn: Conn) -> int:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked = true WHERE key_prefix = %s OR allowance_id = %s",
                [key_prefix_or_allowance, key_prefix_or_allowance],
            )
            return int(cursor.rowcount)

        return self._write(work)

    # ---- reads ----

    def account(self, address: Address) -> Account:
        row = self._one("SELECT available, held FROM accounts WHERE address = %s", [address])
        return Account(address, row[0], row[1]) if row else Account(address, 0, 0)

    def accounts(self) -> Iterator[Account]:
        after = ""
        while True:  # in pages, so a large ledger streams in constant memory
            rows = self._all(
                "SELECT address, available, held FROM accounts WHERE address > %s ORDER BY address LIMIT 2000",
                [after],
            )
            if not rows:
                return
            for address, available, held in rows:
                yield Account(address, available, held)
            after = rows[-1][0]

    def supply(self) -> int:
        row = self._one("SELECT minted FROM supply WHERE id = 1")
        return int(row[0]) if row else 0

    def _get(self, conn: Conn, tx_id: TxId) -> StoredTx | None:
        row = conn.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE tx_id = %s", [tx_id]).fetchone()
        return _row_to_stored(row) if row else None

    def get(self, tx_id: TxId) -> StoredTx | None:
        with self._connection() as conn:
            return self._get(conn, tx_id)

    def history(self, address: Address, limit: int, before_seq: int | None = None) -> list[StoredTx]:
        rows = self._all(
            "SELECT t.seq, t.tx_id, t.record, t.leaf_hash, t.block_height FROM postings p "
            "JOIN transactions t ON t.seq = p.seq WHERE p.address = %s AND p.seq < %s "
            "ORDER BY p.seq DESC LIMIT %s",
            [address, before_seq if before_seq is not None else 2**63 - 1, limit],
        )
        return [_row_to_stored(r) for r in rows]

    def _hold(self, conn: Conn, hold_id: TxId, *, lock: bool = False) -> HoldRow | None:
        row = conn.execute(
            f"SELECT {_HOLD_COLUMNS} FROM holds WHERE hold_id = %s{' FOR UPDATE' if lock else ''}", [hold_id]
        ).fetchone()
        return HoldRow(*row) if row else None

    def hold(self, hold_id: TxId) -> HoldRow | None:
        with self._connection() as conn:
            return self._hold(conn, hold_id)

    def open_holds(self, address: Address | None = None) -> list[HoldRow]:
        where, params = ("AND payer = %s", [address]) if address is not None else ("", [])
        rows = self._all(
            f"SELECT {_HOLD_COLUMNS} FROM holds WHERE status = 'open' {where} ORDER BY expires_at, row_id", params
        )
        return [HoldRow(*r) for r in rows]

    def expired_holds(self, now_seconds: int, limit: int) -> list[HoldRow]:
        rows = self._all(
            f"SELECT {_HOLD_COLUMNS} FROM holds WHERE status = 'open' AND expires_at <= %s "
            "ORDER BY expires_at, row_id LIMIT %s",
            [now_seconds, limit],
        )
        return [HoldRow(*r) for r in rows]

    # ---- blocks ----

    def unsealed(self) -> tuple[int, int | None]:
        row = self._one("SELECT count(*), min(accepted_at) FROM transactions WHERE block_height IS NULL")
        assert row is not None
        return int(row[0]), row[1]

    def _insert_block(self, conn: Conn, block: SignedBlock, frontier: list[str]) -> None:
        conn.execute(
            "INSERT INTO blocks (height, record, block_hash, frontier) VALUES (%s, %s, %s, %s)",
            [
                block.header.height,
                json.dumps(block.to_dict(), sort_keys=True),
                block.block_hash,
                json.dumps(frontier),
            ],
        )

    def seal(self, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        def work(conn: Conn) -> SignedBlock | None:
            locked = _fetch(
                conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema()))", [SEAL_LOCK])
            )[0]
            if not locked:
                return None  # another process is sealing; it will seal these too
            # Read only after taking the lock, so the previous sealer's block is visible.
            rows = conn.execute(
                "SELECT seq, leaf_hash FROM transactions WHERE block_height IS NULL ORDER BY seq LIMIT %s",
                [max_txs],
            ).fetchall()
            if not rows:
                return None
            record, frontier_text = _fetch(
                conn.execute("SELECT record, frontier FROM blocks ORDER BY height DESC LIMIT 1")
            )
            previous = SignedBlock.from_dict(json.loads(record))
            block, frontier = make_block(previous, [bytes(r[1]) for r in rows], json.loads(frontier_text))
            self._insert_block(conn, block, frontier)
            conn.execute(
                "UPDATE transactions SET block_height = %s WHERE seq BETWEEN %s AND %s AND block_height IS NULL",
                [block.header.height, rows[0][0], rows[-1][0]],
            )
            return block

        return self._write(work)

    def head(self) -> SignedBlock:
        row = self._one("SELECT record FROM blocks ORDER BY height DESC LIMIT 1")
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.display}: run `inferpay init`")
        return SignedBlock.from_dict(json.loads(row[0]))

    def block(self, height: int) -> SignedBlock | None:
        row = self._one("SELECT record FROM blocks WHERE height = %s", [height])
        return SignedBlock.from_dict(json.loads(row[0])) if row else None

    def blocks(self, start: int, stop: int) -> list[SignedBlock]:
        rows = self._all("SELECT record FROM blocks WHERE height >= %s AND height < %s ORDER BY height", [start, stop])
        return [SignedBlock.from_dict(json.loads(r[0])) for r in rows]

    def block_transactions(self, height: int) -> list[StoredTx]:
        rows = self._all(f"SELECT {_TX_COLUMNS} FROM transactions WHERE block_height = %s ORDER BY seq", [height])
        return [_row_to_stored(r) for r in rows]

    def leaf_hashes(self, tree_size: int) -> list[bytes]:
        rows = self._all(
            "SELECT leaf_hash FROM transactions WHERE block_height IS NOT NULL ORDER BY seq LIMIT %s", [tree_size]
        )
        return [bytes(r[0]) for r in rows]

    # Raw iterators: keyset pages, each read on a connection taken for that page only, so a slow
    # consumer (the auditor) never pins a pooled connection.

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]:
        while True:
            rows = self._all(
                f"SELECT {_TX_COLUMNS} FROM transactions WHERE seq > %s ORDER BY seq LIMIT %s", [after_seq, batch]
            )
            if not rows:
                return
            for seq, tx_id, record, leaf, height in rows:
                yield RawTx(seq, tx_id, record, bytes(leaf), height)
            after_seq = rows[-1][0]

    def iter_nonces(self) -> Iterator[tuple[str, str]]:
        after: tuple[Any, ...] = ("", "")
        while True:
            rows = self._all(
                "SELECT signer, nonce FROM nonces WHERE (signer, nonce) > (%s, %s) ORDER BY signer, nonce LIMIT 5000",
                list(after),
            )
            if not rows:
                return
            yield from ((str(a), str(b)) for a, b in rows)
            after = rows[-1]

    def iter_postings(self) -> Iterator[tuple[str, int]]:
        after: tuple[Any, ...] = ("", 0)
        while True:
            rows = self._all(
                "SELECT address, seq FROM postings WHERE (address, seq) > (%s, %s) ORDER BY address, seq LIMIT 5000",
                list(after),
            )
            if not rows:
                return
            yield from ((str(a), int(s)) for a, s in rows)
            after = rows[-1]

    def iter_allowances(self) -> Iterator[AllowanceRow]:
        rows = self._all(
            "SELECT allowance_id, owner, spender, cap, spent, valid_before FROM allowances ORDER BY allowance_id"
        )
        for row in rows:
            yield AllowanceRow(*row)

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        after = -1
        while True:
            rows = self._all("SELECT height, record FROM blocks WHERE height > %s ORDER BY height LIMIT 500", [after])
            if not rows:
                return
            yield from ((int(h), str(r)) for h, r in rows)
            after = rows[-1][0]


def _fetch(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - the schema always has these rows
        raise LedgerNotInitialized("the ledger database is missing a row it always has")
    return row

"""The PostgreSQL ledger backend: the only module that talks to PostgreSQL (and imports psycopg).

Same tables, same rules (``ledger.storage.sql_rules``), same answers as ``ledger.storage.sqlite``;
what differs is how many writers run at once. SQLite has one writer at a time; here many processes on many hosts write
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
retries). Locks are taken in one global order so payments do not deadlock: it is written down once, at
``POSTGRES`` below (the dialect the shared rules run with). Should the server still report a
deadlock or serialization failure, the whole operation is retried, which is safe because it
rolled back.

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

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from ledger.errors import (
    CommitOutcomeUnknown,
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidInput,
    LedgerNotInitialized,
    NonceReused,
    NotFound,
    StorageUnavailable,
)
from ledger.storage.base import BlockMaker, StoredTx
from ledger.storage.postgres_schema import MIGRATIONS, PostgresTarget, parse_postgres_url
from ledger.storage.sql_rules import Dialect, Executor, transaction_record
from ledger.storage.sql_store import SqlLedgerStore
from ledger.types import Address, SignedBlock, Transaction, TxId

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

# Advisory lock classes (the two-int form; the second int is a hash of the schema, so ledgers in
# different schemas of one database never wait for each other). Arbitrary, fixed forever.
SEAL_LOCK = 0x1F5EA1  # one sealer at a time
MIGRATE_LOCK = 0x1F5EA2  # one migrator at a time
_WRITE_ATTEMPTS = 8  # retries of a whole write after a deadlock or serialization failure
_CONNECT_TIMEOUT = 5  # seconds, unless the URL sets connect_timeout
# After a connection broke under an append, how long (in pool timeouts, at least
# _COMMIT_FATE_MIN_S) the store keeps asking whether it committed before giving up.
_COMMIT_FATE_POOL_TIMEOUTS = 2
_COMMIT_FATE_MIN_S = 5.0


# psycopg_pool reconnects after an outage with a doubling delay (1, 2, 4, 8 s, ...): a database
# back after 3 s is found only at 7, and every call meanwhile times out. Ours retries at a steady
# pace instead, so the ledger serves again within about this long of the database's return.
_RECONNECT_EVERY_S = 0.5


class _SteadyReconnect(AttemptWithBackoff):
    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, _RECONNECT_EVERY_S)


class _Pool(ConnectionPool[Conn]):
    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _SteadyReconnect(timeout=self.reconnect_timeout), growing)


class _Contention(StorageUnavailable):
    """A deadlock or serialization failure: the transaction rolled back and may simply be retried."""


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


def _lock_accounts(conn: Executor, addresses: Sequence[Address]) -> None:
    """Take the accounts' transaction-scoped advisory locks, in address order, before touching
    their rows. Row locks alone cannot be taken in order: a row another writer is creating is
    invisible to a READ COMMITTED snapshot until it commits, so it would be locked later and
    out of order (A->B and B->A payments then deadlock). Advisory locks exist before rows do."""
    ordered = sorted(set(addresses))
    locks = ", ".join(["pg_advisory_xact_lock(hashtextextended(current_schema() || %s, 0))"] * len(ordered))
    conn.execute(f"SELECT {locks}", ["account:" + a for a in ordered])


# The PostgreSQL dialect of the shared money rules, and the one place their lock order is written.
# Every write takes its locks in this order, so no two writers wait for each other in a cycle:
#   1. the transaction's own id      (advisory, ``append``: the same transaction submitted twice
#                                      at once is applied once)
#   2. its nonce                      (the unique key's row, by the INSERT ... ON CONFLICT)
#   3. the hold it resolves           (SELECT ... FOR UPDATE, ``SqlRules._resolve``)
#   4. the allowance it charges or    (SELECT ... FOR UPDATE, ``SqlRules._charge``/``_resolve``)
#      releases
#   5. the pool's provider row, then  (FOR SHARE by a split, which must be priced by the registration
#      its fee row                     and fee in force at its place in the log; written by a
#                                      registration, approval or fee; ``ledger.storage.sql_pool``)
#   6. the supply row                 (the conditional UPDATE of a mint; a redeem's UPDATE)
#   7. the accounts, in address order (advisory locks, ``_lock_accounts``: a row another writer
#                                      is creating is invisible to READ COMMITTED until it
#                                      commits, so row locks alone could not be taken in order)
#   8. the pool's running totals     (earnings, operator fees: after the accounts)
#   9. the sequence counter, last     (``_NUMBER_AND_RECORD``: held until commit, so commits
#                                      happen in seq order without gaps)
POSTGRES = Dialect(
    placeholder="%s",
    row_lock=" FOR UPDATE",
    share_lock=" FOR SHARE",
    insertion_order="row_id",
    lock_accounts=_lock_accounts,
)


class PostgresStore(SqlLedgerStore):
    def __init__(self, url: str) -> None:
        super().__init__(POSTGRES)
        self.target: PostgresTarget = parse_postgres_url(url)
        self.display = self.target.display
        self.location = self.display
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
        self._pool: ConnectionPool[Conn] = _Pool(
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

    def _run_write(self, work: Callable[[Executor], T]) -> T:
        return self._write(work)

    def _once_more_if_cut(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, and once more if the connection broke under it (the server killed or
        restarted, the network reset): only for work that may safely run twice, a read or an
        append (idempotent by tx id). Not after a pool timeout: the pool has already waited its
        whole ``pool_timeout`` for the database to come back."""
        try:
            return attempt()
        except _Contention:
            raise
        except StorageUnavailable as exc:
            if not _cut(exc):
                raise
            return attempt()

    def _until_known(self, attempt: Callable[[], T], tx_id: TxId) -> T:
        """``attempt()`` for an append (idempotent by tx id). If the connection broke under it,
        its commit may have landed with only the acknowledgement lost, and nobody can tell
        until the database answers again: answering ``StorageUnavailable`` then would tell a
        caller "not done" of a settle the ledger holds (a paid call answered 503 and charged).
        So ask again, each try waiting up to ``pool_timeout`` for a connection (the pool
        reconnects every ``_RECONNECT_EVERY_S``), until the database answers or
        ``_COMMIT_FATE_POOL_TIMEOUTS`` pool timeouts (at least ``_COMMIT_FATE_MIN_S``) have
        passed; only then is the fate reported unknown
        (``CommitOutcomeUnknown``, never the plain "unavailable" that means nothing was done)."""
        try:
            return attempt()
        except _Contention:
            raise
        except StorageUnavailable as exc:
            if not _cut(exc):
                raise
        deadline = time.monotonic() + max(_COMMIT_FATE_MIN_S, _COMMIT_FATE_POOL_TIMEOUTS * self.target.pool_timeout)
        while True:
            try:
                return attempt()
            except _Contention:
                raise
            except StorageUnavailable as exc:
                if not (_cut(exc) or isinstance(exc.__cause__, PoolTimeout)):
                    raise
                if time.monotonic() >= deadline:  # the first try's commit may have landed: say so
                    raise CommitOutcomeUnknown(
                        f"the database went away while transaction {tx_id} was being committed and has "
                        f"not come back: whether it committed is unknown until it does ({exc.message})",
                        txId=tx_id,
                    ) from exc
                time.sleep(0.1)  # a refused connection fails at once: do not spin

    def _row(self, query: str, params: Sequence[Any] = ()) -> Any:
        def attempt() -> Any:
            with self._connection() as conn:
                return conn.execute(self._sql(query), list(params)).fetchone()

        return self._once_more_if_cut(attempt)

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        def attempt() -> list[Any]:
            with self._connection() as conn:
                return conn.execute(self._sql(query), list(params)).fetchall()

        return self._once_more_if_cut(attempt)

    def close(self) -> None:
        self._pool.close(timeout=5)

    # ---- applying transactions (numbering is this backend's own) ----

    def append(self, tx: Transaction, tx_id: TxId, leaf_hash: bytes) -> tuple[StoredTx, bool]:
        """Record ``tx``, or find it recorded. A commit whose acknowledgement was lost (the
        connection broke after the server committed) is found by the second attempt and
        answered as this call's own: the caller is never told "unavailable" for a transaction
        the ledger holds, nor can it be applied twice."""
        record = transaction_record(tx)  # before any lock is taken
        attempts: list[int] = []

        def work(conn: Conn) -> tuple[StoredTx, bool]:
            # The same transaction submitted twice at once: the second waits here, then finds it.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || %s, 0))", ["tx:" + tx_id])
            existing = self.rules.get(conn, tx_id)
            if existing is not None:
                return existing, len(attempts) > 1  # found by the retry: our own lost commit
            touched = self.rules.apply(conn, tx, tx_id)
            # Last, and held until commit: commits happen in seq order, without gaps. Every writer
            # of every gateway queues on this row, so what happens under its lock is one statement
            # (one round trip) and the commit.
            numbered = conn.execute(_NUMBER_AND_RECORD, [tx_id, tx.kind, record, leaf_hash, tx.accepted_at_ms, touched])
            return StoredTx(int(_fetch(numbered)[0]), tx_id, tx, leaf_hash, None), True

        def attempt() -> tuple[StoredTx, bool]:
            attempts.append(1)
            return self._write(work)

        return self._until_known(attempt, tx_id)

    # ---- blocks ----

    def seal(self, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        def work(conn: Conn) -> SignedBlock | None:
            locked = _fetch(
                conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema()))", [SEAL_LOCK])
            )[0]
            if not locked:
                return None  # another process is sealing; it will seal these too
            # Read only after taking the lock, so the previous sealer's block is visible.
            return self.rules.seal_next(conn, make_block, max_txs)

        return self._write(work)


def _fetch(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - the schema always has these rows
        raise LedgerNotInitialized("the ledger database is missing a row it always has")
    return row


def _cut(exc: StorageUnavailable) -> bool:
    """The connection broke under the work (the server killed or restarted, the network reset),
    as opposed to a pool timeout, which has already waited its whole ``pool_timeout``."""
    cause = exc.__cause__
    return not isinstance(cause, PoolTimeout) and isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError)

"""The SQLite ledger backend: the only module that talks SQL to SQLite.

Durability: WAL with synchronous=FULL, so a transaction is on disk before it is acknowledged.
Concurrency: every write runs in ``BEGIN IMMEDIATE``, which takes SQLite's single write lock
up front (sqlite-utils' ``atomic()`` begins DEFERRED, and a deferred transaction that read
before writing can fail with SQLITE_BUSY instead of waiting). Debits are conditional UPDATEs
(``available >= amount``) and the accounts table CHECKs ``available >= 0`` as a last line, so
no interleaving of threads or processes can overspend. One connection per thread. Writers
queue on ``<database>.lock`` (flock) before asking SQLite for its lock: see ``__init__``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from sqlite_utils import Migrations

from ledger.errors import IdempotencyConflict, InferpayError, InsufficientFunds, NonceReused, StorageUnavailable
from ledger.storage.base import BlockMaker, StoredTx
from ledger.storage.sql_rules import Dialect, Executor, transaction_record
from ledger.storage.sql_store import SqlLedgerStore
from ledger.types import HOLD_KINDS, SignedBlock, Transaction, TxId

T = TypeVar("T")
# One writer at a time: no account or row locks to take; ties in insertion order by rowid.
SQLITE = Dialect(placeholder="?", row_lock="", insertion_order="rowid")

migrations = Migrations("inferpay.ledger")


@migrations()
def m001_schema(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
        CREATE TABLE supply (id INTEGER PRIMARY KEY CHECK (id = 1), minted INTEGER NOT NULL
            CHECK (minted >= 0)) STRICT;
        CREATE TABLE accounts (
            address TEXT PRIMARY KEY,
            available INTEGER NOT NULL DEFAULT 0 CHECK (available >= 0),
            held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0)
        ) STRICT;
        CREATE TABLE transactions (
            seq INTEGER PRIMARY KEY,
            tx_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            record TEXT NOT NULL,
            leaf_hash BLOB NOT NULL,
            block_height INTEGER,
            accepted_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX transactions_by_block ON transactions (block_height, seq);
        CREATE TABLE nonces (
            signer TEXT NOT NULL, nonce TEXT NOT NULL, tx_id TEXT NOT NULL,
            PRIMARY KEY (signer, nonce)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE postings (
            address TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (address, seq)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE holds (
            hold_id TEXT PRIMARY KEY,
            payer TEXT NOT NULL,
            payee TEXT NOT NULL,
            amount INTEGER NOT NULL CHECK (amount > 0),
            expires_at INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'settle', 'void', 'expire')),
            captured INTEGER NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
            resolution_tx TEXT
        ) STRICT;
        CREATE INDEX holds_open ON holds (status, expires_at);
        CREATE TABLE blocks (
            height INTEGER PRIMARY KEY,
            record TEXT NOT NULL,
            block_hash TEXT NOT NULL UNIQUE,
            frontier TEXT NOT NULL
        ) STRICT;
        INSERT INTO supply (id, minted) VALUES (1, 0);
        """
    )


@migrations()
def m002_allowances(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE allowances (
            allowance_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            spender TEXT NOT NULL,
            cap INTEGER NOT NULL CHECK (cap > 0),
            spent INTEGER NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent <= cap),
            valid_before INTEGER NOT NULL
        ) STRICT;
        ALTER TABLE holds ADD COLUMN allowance_id TEXT;
        CREATE TABLE api_keys (
            key_hash TEXT PRIMARY KEY,
            key_prefix TEXT NOT NULL,
            allowance_id TEXT NOT NULL REFERENCES allowances (allowance_id),
            label TEXT NOT NULL DEFAULT '',
            created_at INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
        ) STRICT;
        """
    )


@migrations()
def m003_accounts_without_rowid(db: sqlite_utils.Database) -> None:
    # A balance lookup then walks one B-tree (keyed by address) instead of an index and then the
    # table: with 100k accounts, a lookup costs 8.9 instead of 10.6 µs here, close to the 7.5 µs
    # of a ledger with 100 accounts (a balance must not get slower as the ledger grows).
    db.executescript(
        """
        CREATE TABLE accounts_by_address (
            address TEXT PRIMARY KEY,
            available INTEGER NOT NULL DEFAULT 0 CHECK (available >= 0),
            held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0)
        ) STRICT, WITHOUT ROWID;
        INSERT INTO accounts_by_address (address, available, held) SELECT address, available, held FROM accounts;
        DROP TABLE accounts;
        ALTER TABLE accounts_by_address RENAME TO accounts;
        """
    )


@migrations()
def m004_checkpoints(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE checkpoints (
            tree_size INTEGER PRIMARY KEY CHECK (tree_size >= 0),
            note TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT;
        """
    )


@migrations()
def m005_facilitator_records(db: sqlite_utils.Database) -> None:
    # What an x402 facilitator remembers (ledger.storage.sql_facilitator), here rather than in a
    # file of its own so that every host of a ledger agrees on it.
    db.executescript(
        """
        CREATE TABLE facilitator_holds (
            payer TEXT NOT NULL,
            nonce TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('placing', 'placed', 'foreign')),
            hold_id TEXT,
            claimed_at INTEGER NOT NULL,
            PRIMARY KEY (payer, nonce)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX facilitator_holds_by_age ON facilitator_holds (claimed_at);
        CREATE TABLE facilitator_payment_ids (
            payment_id TEXT NOT NULL,
            operation TEXT NOT NULL CHECK (operation IN ('verify', 'settle')),
            request_digest TEXT NOT NULL,
            answer TEXT,
            claimed_at INTEGER NOT NULL,
            PRIMARY KEY (payment_id, operation)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX facilitator_payment_ids_by_age ON facilitator_payment_ids (claimed_at);
        """
    )


@migrations()
def m006_pool(db: sqlite_utils.Database) -> None:
    # The compute pool (ledger.storage.sql_pool): providers in force, approvals, the fee in force,
    # running totals, refunds per settle; and redeems, which take tokens out of circulation.
    db.executescript(
        """
        ALTER TABLE supply ADD COLUMN redeemed INTEGER NOT NULL DEFAULT 0 CHECK (redeemed >= 0);
        CREATE TABLE providers (
            address TEXT PRIMARY KEY,
            registration_id TEXT NOT NULL,
            record TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'withdrawn')),
            registered_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE provider_approvals (
            address TEXT PRIMARY KEY,
            approved INTEGER NOT NULL CHECK (approved IN (0, 1)),
            approval_tx TEXT NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE pool_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            fee_bps INTEGER NOT NULL CHECK (fee_bps >= 0 AND fee_bps <= 10000),
            flat_fee INTEGER NOT NULL CHECK (flat_fee >= 0),
            fee_id TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 0)
        ) STRICT;
        INSERT INTO pool_state (id, fee_bps, flat_fee, fee_id, version)
            VALUES (1, 0, 0, '0x0000000000000000000000000000000000000000000000000000000000000000', 0);
        CREATE TABLE pool_earnings (
            address TEXT PRIMARY KEY,
            calls INTEGER NOT NULL CHECK (calls >= 0),
            earned INTEGER NOT NULL CHECK (earned >= 0),
            refunded INTEGER NOT NULL CHECK (refunded >= 0),
            redeemed INTEGER NOT NULL CHECK (redeemed >= 0)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE pool_operator_fees (
            payee TEXT PRIMARY KEY,
            fees INTEGER NOT NULL CHECK (fees >= 0)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE refunds_by_settle (
            settle_id TEXT NOT NULL,
            address TEXT NOT NULL,
            credited INTEGER NOT NULL CHECK (credited > 0),
            refunded INTEGER NOT NULL CHECK (refunded > 0 AND refunded <= credited),
            PRIMARY KEY (settle_id, address)
        ) STRICT, WITHOUT ROWID;
        """
    )


class SQLiteStore(SqlLedgerStore):
    commits_batches_at_once = True

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 60_000) -> None:
        super().__init__(SQLITE)
        self.path = Path(path)
        self.location = str(self.path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite_utils.Database] = []
        self._lock_fds: list[int] = []
        self._lock = threading.Lock()
        # Writers queue on a lock file beside the database before they ask SQLite for its write
        # lock. SQLite's busy handler polls with sleeps of up to 100 ms, so writers of several
        # processes (gunicorn workers, sealers) that meet on its lock wait far longer than the
        # lock is held (p99 of a paid call near 1 s at 16 clients); a blocked flock() is woken by
        # the kernel the moment the holder lets go, and is released if the holder dies.
        # Several workers may also open a new file at once: switching it to WAL and migrating both
        # need exclusive access, which the busy handler does not always wait for; they run under
        # the same lock and are no-ops for every opener after the first.
        self.lock_path = Path(f"{self.path}.lock")
        with self._write_lock(), self._translating():
            db = self._db()
            if migrations.pending(db):
                migrations.apply(db)

    # ---- connections and transactions ----

    def _db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_ms / 1000, check_same_thread=False)
            db = sqlite_utils.Database(conn, execute_plugins=False, strict=True)
            db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # 8 MiB of page cache per connection (SQLite's default is 2): with 100k accounts, a
            # balance lookup that follows a history page otherwise finds the accounts B-tree
            # evicted (P4: 1M-transaction ledger ÷ 1k, 1.46 -> 1.25; 16 MiB buys nothing more).
            db.execute("PRAGMA cache_size=-8192")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """This thread's turn to write, across threads and processes (see ``__init__``). A
        program that opens the database without this class still meets SQLite's own lock."""
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._local.lock_fd = fd
            with self._lock:
                self._lock_fds.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        with self._write_lock(), self._transaction() as db:
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite_utils.Database]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"ledger database is busy: {exc}") from exc
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.rollback()
            raise
        try:
            db.conn.commit()
        except sqlite3.OperationalError as exc:
            db.conn.rollback()
            raise StorageUnavailable(f"could not commit to the ledger database: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        self._local = threading.local()

    def _translating(self) -> Any:
        return _translated(self.location)

    def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._translating():
            return self._db().execute(sql, list(params)).fetchone()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._translating():
            return self._db().execute(sql, list(params)).fetchall()

    def _run_write(self, work: Callable[[Executor], T]) -> T:
        with self._translating(), self._write() as db:
            return work(db)

    # ---- applying transactions ----

    def append(self, tx: Transaction, tx_id: TxId, leaf_hash: bytes) -> tuple[StoredTx, bool]:
        result = self.append_many([(tx, tx_id, leaf_hash)], durable=tx.kind not in HOLD_KINDS)[0]
        if isinstance(result, InferpayError):
            raise result
        return result

    def append_many(
        self, items: list[tuple[Transaction, TxId, bytes]], *, durable: bool = True
    ) -> list[tuple[StoredTx, bool] | InferpayError]:
        """Apply several transactions with one commit (group commit). Each runs in its own
        savepoint, so a refused one is rolled back alone and reported in its slot; the others
        are committed together, and none is acknowledged before that commit returns.

        ``durable=False`` is for holds only: their commit skips the fsync (WAL, synchronous=
        NORMAL), which survives a process crash but not a power cut. Nothing is acknowledged on a
        hold alone: the settle or void that follows commits with FULL, and its fsync makes every
        earlier WAL frame (the hold included) durable with it, in order. A hold lost to a power
        cut released nothing that was ever promised to anyone."""
        results: list[tuple[StoredTx, bool] | InferpayError] = []
        with self._translating():
            db = self._db()
            wanted = "FULL" if durable else "NORMAL"
            if getattr(self._local, "synchronous", "FULL") != wanted:
                db.execute(f"PRAGMA synchronous={wanted}")
                self._local.synchronous = wanted
            if len(items) == 1:  # alone: no savepoint, a refusal rolls the whole transaction back
                try:
                    with self._write() as db:
                        return [self._append_one(db.conn, *items[0])]
                except InferpayError as exc:
                    return [exc]
                except sqlite3.IntegrityError as exc:
                    return [_refusal(exc)]
            with self._write() as db:
                conn = db.conn  # the driver's connection itself: sqlite-utils' wrapper costs per statement
                for tx, tx_id, leaf_hash in items:
                    # A savepoint per transaction, under one name: SQLite parses its text once
                    # (sqlite-utils' atomic() names each one afresh, a new statement every time).
                    conn.execute("SAVEPOINT entry")
                    try:
                        outcome: tuple[StoredTx, bool] | InferpayError = self._append_one(conn, tx, tx_id, leaf_hash)
                    except (InferpayError, sqlite3.IntegrityError) as exc:
                        outcome = exc if isinstance(exc, InferpayError) else _refusal(exc)
                        if conn.in_transaction:
                            conn.execute("ROLLBACK TO entry")
                    except BaseException:
                        if conn.in_transaction:  # the whole transaction rolls back: nothing to release
                            conn.execute("ROLLBACK TO entry")
                        raise
                    if conn.in_transaction:
                        conn.execute("RELEASE entry")
                    results.append(outcome)
        return results

    def _append_one(
        self, conn: sqlite3.Connection, tx: Transaction, tx_id: TxId, leaf_hash: bytes
    ) -> tuple[StoredTx, bool]:
        existing = self.rules.get(conn, tx_id)
        if existing is not None:
            return existing, False
        touched = self.rules.apply(conn, tx, tx_id)
        # Numbering: one writer at a time, so the rowid is the next seq, gap-free, in commit order.
        cursor = conn.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            [tx_id, tx.kind, transaction_record(tx), leaf_hash, tx.accepted_at_ms],
        )
        seq = int(cursor.lastrowid or 0)
        conn.executemany("INSERT OR IGNORE INTO postings (address, seq) VALUES (?, ?)", [(a, seq) for a in touched])
        return StoredTx(seq, tx_id, tx, leaf_hash, None), True

    # ---- blocks ----

    def seal(self, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        # The write lock is the right to seal: one sealer at a time, like every writer.
        return self._run_write(lambda db: self.rules.seal_next(db, make_block, max_txs))


def _refusal(exc: sqlite3.IntegrityError) -> InferpayError:
    """A constraint the money rules should have kept (they are the first line; these the last)."""
    text = str(exc)
    if "nonces" in text:
        return NonceReused(f"nonce already used: {text}")
    if "UNIQUE" in text or "PRIMARY KEY" in text:
        return IdempotencyConflict(f"already recorded: {text}")
    return InsufficientFunds(f"refused by the ledger's constraints: {text}")


@contextmanager
def _translated(location: str) -> Iterator[None]:
    """sqlite3's errors leave as ``ledger.errors``, so no caller ever catches a driver error."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise _refusal(exc) from exc
    except sqlite3.Error as exc:  # busy, locked, disk I/O, full, not a database, cannot open
        raise StorageUnavailable(f"ledger database {location}: {exc}") from exc

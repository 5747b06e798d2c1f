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
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils import Migrations

from ledger.amounts import MAX_AMOUNT
from ledger.errors import (
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    LedgerNotInitialized,
    NonceReused,
    NotFound,
    StorageUnavailable,
)
from ledger.storage.base import AllowanceRow, ApiKeyRow, BlockMaker, HoldRow, LedgerStore, RawTx, StoredTx
from ledger.types import (
    HOLD_KINDS,
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


def _row_to_stored(row: tuple[Any, ...]) -> StoredTx:
    seq, tx_id, record, leaf, height = row
    return StoredTx(seq, tx_id, Transaction.from_dict(json.loads(record)), bytes(leaf), height)


_TX_COLUMNS = "seq, tx_id, record, leaf_hash, block_height"
_API_KEY_SELECT = (
    "SELECT k.key_hash, k.key_prefix, k.label, k.created_at, k.revoked, "
    "a.allowance_id, a.owner, a.spender, a.cap, a.spent, a.valid_before "
    "FROM api_keys k JOIN allowances a ON a.allowance_id = k.allowance_id"
)


def _api_key_row(row: tuple[Any, ...]) -> ApiKeyRow:
    key_hash, prefix, label, created, revoked, *allowance = row
    return ApiKeyRow(key_hash, prefix, label, created, bool(revoked), AllowanceRow(*allowance))


def _refused_by_constraints(exc: sqlite3.IntegrityError) -> InferpayError:
    # Only reachable if a rule was bypassed: the CHECK constraints are the last line.
    return InsufficientFunds(f"refused by the ledger's constraints: {exc}")


class SQLiteStore(LedgerStore):
    commits_batches_at_once = True

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 60_000) -> None:
        self.path = Path(path)
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
        with self._write_lock():
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

    # ---- chain identity ----

    def initialize(self, chain: ChainInfo, genesis: SignedBlock) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'chain'").fetchone():
                raise IdempotencyConflict(f"a ledger already exists at {self.path}")
            db.execute("INSERT INTO meta (key, value) VALUES ('chain', ?)", [json.dumps(chain.to_dict())])
            self._insert_block(db, genesis, [])

    def chain_info(self) -> ChainInfo:
        row = self._db().execute("SELECT value FROM meta WHERE key = 'chain'").fetchone()
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.path}: run `inferpay init`")
        return ChainInfo.from_dict(json.loads(row[0]))

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
        db = self._db()
        wanted = "FULL" if durable else "NORMAL"
        if getattr(self._local, "synchronous", "FULL") != wanted:
            db.execute(f"PRAGMA synchronous={wanted}")
            self._local.synchronous = wanted
        if len(items) == 1:  # alone: no savepoint, a refusal rolls the whole transaction back
            try:
                with self._write() as db:
                    return [self._append_one(db, *items[0])]
            except InferpayError as exc:
                return [exc]
            except sqlite3.IntegrityError as exc:
                return [_refused_by_constraints(exc)]
        with self._write() as db:
            for tx, tx_id, leaf_hash in items:
                try:
                    with db.atomic():  # a savepoint per transaction
                        results.append(self._append_one(db, tx, tx_id, leaf_hash))
                except InferpayError as exc:
                    results.append(exc)
                except sqlite3.IntegrityError as exc:
                    results.append(_refused_by_constraints(exc))
        return results

    def _append_one(
        self, db: sqlite_utils.Database, tx: Transaction, tx_id: TxId, leaf_hash: bytes
    ) -> tuple[StoredTx, bool]:
        existing = self._get(db, tx_id)
        if existing is not None:
            return existing, False
        touched = self._apply(db, tx, tx_id)
        cursor = db.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            [tx_id, tx.kind, json.dumps(tx.to_dict(), sort_keys=True), leaf_hash, tx.accepted_at_ms],
        )
        seq = int(cursor.lastrowid or 0)
        db.conn.executemany("INSERT OR IGNORE INTO postings (address, seq) VALUES (?, ?)", [(a, seq) for a in touched])
        return StoredTx(seq, tx_id, tx, leaf_hash, None), True

    def _use_nonce(self, db: sqlite_utils.Database, signer: Address, nonce: str, tx_id: TxId) -> None:
        cursor = db.execute(
            "INSERT INTO nonces (signer, nonce, tx_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [signer, nonce, tx_id],
        )
        if cursor.rowcount != 1:
            raise NonceReused(f"nonce {nonce} of {signer} was already used", signer=signer, nonce=nonce)

    def _debit(self, db: sqlite_utils.Database, address: Address, amount: int, *, to_held: bool) -> None:
        cursor = db.execute(
            f"UPDATE accounts SET available = available - ?{', held = held + ?' if to_held else ''} "
            "WHERE address = ? AND available >= ?",
            [amount, amount, address, amount] if to_held else [amount, address, amount],
        )
        if cursor.rowcount != 1:
            row = db.execute("SELECT available FROM accounts WHERE address = ?", [address]).fetchone()
            have = row[0] if row else 0
            raise InsufficientFunds(
                f"{address} has {have} available, needs {amount}",
                address=address,
                available=str(have),
                needed=str(amount),
            )

    def _credit(self, db: sqlite_utils.Database, address: Address, amount: int) -> None:
        db.execute(
            "INSERT INTO accounts (address, available) VALUES (?, ?) "
            "ON CONFLICT (address) DO UPDATE SET available = available + excluded.available",
            [address, amount],
        )

    def _apply(self, db: sqlite_utils.Database, tx: Transaction, tx_id: TxId) -> list[Address]:
        message = tx.message
        if isinstance(message, Mint):
            self._use_nonce(db, tx.signer, message.nonce, tx_id)
            cursor = db.execute(
                "UPDATE supply SET minted = minted + ? WHERE id = 1 AND minted <= ?",
                [message.value, MAX_AMOUNT - message.value],
            )
            if cursor.rowcount != 1:
                raise InvalidAmount("minting this would take total supply past 2**63-1")
            self._credit(db, message.to, message.value)
            return [message.to]
        if isinstance(message, Authorization):
            self._use_nonce(db, message.from_, message.nonce, tx_id)
            if tx.kind == "transfer":
                self._debit(db, message.from_, message.value, to_held=False)
                self._credit(db, message.to, message.value)
            else:
                assert tx.hold_expires_at_s is not None
                self._debit(db, message.from_, message.value, to_held=True)
                db.execute(
                    "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status) "
                    "VALUES (?, ?, ?, ?, ?, 'open')",
                    [tx_id, message.from_, message.to, message.value, tx.hold_expires_at_s],
                )
            return [message.from_, message.to]
        if isinstance(message, Allowance):
            self._use_nonce(db, message.owner, message.nonce, tx_id)
            db.execute(
                "INSERT INTO allowances (allowance_id, owner, spender, cap, valid_before) VALUES (?, ?, ?, ?, ?)",
                [tx_id, message.owner, message.spender, message.cap, message.valid_before],
            )
            return [message.owner]
        if isinstance(message, Charge):
            assert tx.hold_expires_at_s is not None
            return self._charge(db, message, tx_id, tx.accepted_at_ms // 1000, tx.hold_expires_at_s)
        assert isinstance(message, HoldResolution)
        return self._resolve(db, message, tx_id, tx.accepted_at_ms // 1000)

    def _charge(
        self, db: sqlite_utils.Database, charge: Charge, tx_id: TxId, now: int, expires_at_s: int
    ) -> list[Address]:
        from ledger.state import AllowanceState, LedgerState  # the rules live in one place

        allowance = self._allowance(db, charge.allowance_id)
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
        cursor = db.execute(
            "UPDATE allowances SET spent = spent + ? WHERE allowance_id = ? AND spent + ? <= cap",
            [charge.amount, charge.allowance_id, charge.amount],
        )
        if cursor.rowcount != 1:  # pragma: no cover - the write lock makes the check above exact
            raise InsufficientFunds("allowance exhausted")
        self._debit(db, allowance.owner, charge.amount, to_held=True)
        db.execute(
            "INSERT INTO holds (hold_id, payer, payee, amount, expires_at, status, allowance_id) "
            "VALUES (?, ?, ?, ?, ?, 'open', ?)",
            [tx_id, allowance.owner, allowance.spender, charge.amount, expires_at_s, charge.allowance_id],
        )
        return [allowance.owner, allowance.spender]

    def _allowance(self, db: sqlite_utils.Database, allowance_id: TxId) -> AllowanceRow | None:
        row = db.execute(
            "SELECT allowance_id, owner, spender, cap, spent, valid_before FROM allowances WHERE allowance_id = ?",
            [allowance_id],
        ).fetchone()
        return AllowanceRow(*row) if row else None

    def _resolve(self, db: sqlite_utils.Database, res: HoldResolution, tx_id: TxId, now: int) -> list[Address]:
        from ledger.state import LedgerState, OpenHold  # the rules live in one place

        hold = self._hold(db, res.hold_id)
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
        db.execute(
            "UPDATE holds SET status = ?, captured = ?, resolution_tx = ? WHERE hold_id = ? AND status = 'open'",
            [res.outcome, res.amount, tx_id, hold.hold_id],
        )
        db.execute(
            "UPDATE accounts SET held = held - ?, available = available + ? WHERE address = ?",
            [hold.amount, released, hold.payer],
        )
        if res.amount:
            self._credit(db, hold.payee, res.amount)
        if hold.allowance_id is not None:  # what is not captured goes back to the allowance too
            db.execute("UPDATE allowances SET spent = spent - ? WHERE allowance_id = ?", [released, hold.allowance_id])
        return [hold.payer, hold.payee]

    # ---- API keys: bearer secrets standing for an allowance (stored as hashes only) ----

    def allowance(self, allowance_id: TxId) -> AllowanceRow | None:
        return self._allowance(self._db(), allowance_id)

    def register_api_key(
        self, key_hash: str, key_prefix: str, allowance_id: TxId, label: str, created_at_ms: int
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO api_keys (key_hash, key_prefix, allowance_id, label, created_at) VALUES (?, ?, ?, ?, ?)",
                [key_hash, key_prefix, allowance_id, label, created_at_ms],
            )

    def api_key(self, key_hash: str) -> ApiKeyRow | None:
        row = self._db().execute(f"{_API_KEY_SELECT} WHERE k.key_hash = ?", [key_hash]).fetchone()
        return _api_key_row(row) if row else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [_api_key_row(r) for r in self._db().execute(f"{_API_KEY_SELECT} ORDER BY k.created_at")]

    def revoke_api_key(self, key_prefix_or_allowance: str) -> int:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked = 1 WHERE key_prefix = ? OR allowance_id = ?",
                [key_prefix_or_allowance, key_prefix_or_allowance],
            )
            return int(cursor.rowcount)

    # ---- reads ----

    def account(self, address: Address) -> Account:
        row = self._db().execute("SELECT available, held FROM accounts WHERE address = ?", [address]).fetchone()
        return Account(address, row[0], row[1]) if row else Account(address, 0, 0)

    def accounts(self) -> Iterator[Account]:
        for address, available, held in self._db().execute(
            "SELECT address, available, held FROM accounts ORDER BY address"
        ):
            yield Account(address, available, held)

    def supply(self) -> int:
        return int(self._db().execute("SELECT minted FROM supply WHERE id = 1").fetchone()[0])

    def _get(self, db: sqlite_utils.Database, tx_id: TxId) -> StoredTx | None:
        row = db.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE tx_id = ?", [tx_id]).fetchone()
        return _row_to_stored(row) if row else None

    def get(self, tx_id: TxId) -> StoredTx | None:
        return self._get(self._db(), tx_id)

    def history(self, address: Address, limit: int, before_seq: int | None = None) -> list[StoredTx]:
        rows = (
            self._db()
            .execute(
                f"SELECT {', '.join('t.' + c.strip() for c in _TX_COLUMNS.split(','))} FROM postings p "
                "JOIN transactions t ON t.seq = p.seq WHERE p.address = ? AND p.seq < ? "
                "ORDER BY p.seq DESC LIMIT ?",
                [address, before_seq if before_seq is not None else 2**63 - 1, limit],
            )
            .fetchall()
        )
        return [_row_to_stored(r) for r in rows]

    def _hold(self, db: sqlite_utils.Database, hold_id: TxId) -> HoldRow | None:
        row = db.execute(
            "SELECT hold_id, payer, payee, amount, expires_at, status, captured, resolution_tx, allowance_id "
            "FROM holds WHERE hold_id = ?",
            [hold_id],
        ).fetchone()
        return HoldRow(*row) if row else None

    def hold(self, hold_id: TxId) -> HoldRow | None:
        return self._hold(self._db(), hold_id)

    def open_holds(self, address: Address | None = None) -> list[HoldRow]:
        sql = (
            "SELECT hold_id, payer, payee, amount, expires_at, status, captured, resolution_tx, allowance_id "
            "FROM holds WHERE status = 'open'"
        )
        params: list[Any] = []
        if address is not None:
            sql += " AND payer = ?"
            params.append(address)
        return [HoldRow(*r) for r in self._db().execute(sql + " ORDER BY expires_at", params)]

    def expired_holds(self, now_seconds: int, limit: int) -> list[HoldRow]:
        rows = self._db().execute(
            "SELECT hold_id, payer, payee, amount, expires_at, status, captured, resolution_tx, allowance_id "
            "FROM holds WHERE status = 'open' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            [now_seconds, limit],
        )
        return [HoldRow(*r) for r in rows]

    # ---- blocks ----

    def unsealed(self) -> tuple[int, int | None]:
        count, oldest = (
            self._db()
            .execute("SELECT count(*), min(accepted_at) FROM transactions WHERE block_height IS NULL")
            .fetchone()
        )
        return int(count), oldest

    def _insert_block(self, db: sqlite_utils.Database, block: SignedBlock, frontier: list[str]) -> None:
        db.execute(
            "INSERT INTO blocks (height, record, block_hash, frontier) VALUES (?, ?, ?, ?)",
            [
                block.header.height,
                json.dumps(block.to_dict(), sort_keys=True),
                block.block_hash,
                json.dumps(frontier),
            ],
        )

    def seal(self, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        with self._write() as db:
            rows = db.execute(
                "SELECT seq, leaf_hash FROM transactions WHERE block_height IS NULL ORDER BY seq LIMIT ?",
                [max_txs],
            ).fetchall()
            if not rows:
                return None
            record, frontier_text = db.execute(
                "SELECT record, frontier FROM blocks ORDER BY height DESC LIMIT 1"
            ).fetchone()
            previous = SignedBlock.from_dict(json.loads(record))
            block, frontier = make_block(previous, [bytes(r[1]) for r in rows], json.loads(frontier_text))
            self._insert_block(db, block, frontier)
            db.execute(
                "UPDATE transactions SET block_height = ? WHERE seq BETWEEN ? AND ? AND block_height IS NULL",
                [block.header.height, rows[0][0], rows[-1][0]],
            )
            return block

    def head(self) -> SignedBlock:
        row = self._db().execute("SELECT record FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        if row is None:
            raise LedgerNotInitialized(f"no ledger at {self.path}: run `inferpay init`")
        return SignedBlock.from_dict(json.loads(row[0]))

    def block(self, height: int) -> SignedBlock | None:
        row = self._db().execute("SELECT record FROM blocks WHERE height = ?", [height]).fetchone()
        return SignedBlock.from_dict(json.loads(row[0])) if row else None

    def blocks(self, start: int, stop: int) -> list[SignedBlock]:
        rows = self._db().execute(
            "SELECT record FROM blocks WHERE height >= ? AND height < ? ORDER BY height", [start, stop]
        )
        return [SignedBlock.from_dict(json.loads(r[0])) for r in rows]

    def block_transactions(self, height: int) -> list[StoredTx]:
        rows = self._db().execute(
            f"SELECT {_TX_COLUMNS} FROM transactions WHERE block_height = ? ORDER BY seq", [height]
        )
        return [_row_to_stored(r) for r in rows]

    def leaf_hashes(self, tree_size: int) -> list[bytes]:
        rows = self._db().execute(
            "SELECT leaf_hash FROM transactions WHERE block_height IS NOT NULL ORDER BY seq LIMIT ?",
            [tree_size],
        )
        return [bytes(r[0]) for r in rows]

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]:
        db = self._db()
        while True:
            rows = db.execute(
                f"SELECT {_TX_COLUMNS} FROM transactions WHERE seq > ? ORDER BY seq LIMIT ?",
                [after_seq, batch],
            ).fetchall()
            if not rows:
                return
            for seq, tx_id, record, leaf, height in rows:
                yield RawTx(seq, tx_id, record, bytes(leaf), height)
            after_seq = rows[-1][0]

    def iter_nonces(self) -> Iterator[tuple[str, str]]:
        db = self._db()
        after = ("", "")
        while True:
            rows = db.execute(
                "SELECT signer, nonce FROM nonces WHERE (signer, nonce) > (?, ?) ORDER BY signer, nonce LIMIT 5000",
                list(after),
            ).fetchall()
            if not rows:
                return
            yield from ((str(a), str(b)) for a, b in rows)
            after = rows[-1]

    def iter_postings(self) -> Iterator[tuple[str, int]]:
        db = self._db()
        after: tuple[str, int] = ("", 0)
        while True:
            rows = db.execute(
                "SELECT address, seq FROM postings WHERE (address, seq) > (?, ?) ORDER BY address, seq LIMIT 5000",
                list(after),
            ).fetchall()
            if not rows:
                return
            yield from ((str(a), int(s)) for a, s in rows)
            after = rows[-1]

    def iter_allowances(self) -> Iterator[AllowanceRow]:
        rows = self._db().execute(
            "SELECT allowance_id, owner, spender, cap, spent, valid_before FROM allowances ORDER BY allowance_id"
        )
        for row in rows:
            yield AllowanceRow(*row)

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        db = self._db()
        after = -1
        while True:
            rows = db.execute(
                "SELECT height, record FROM blocks WHERE height > ? ORDER BY height LIMIT 500", [after]
            ).fetchall()
            if not rows:
                return
            yield from ((int(h), str(r)) for h, r in rows)
            after = rows[-1][0]

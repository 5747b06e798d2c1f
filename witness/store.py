"""The witness's state: the latest checkpoint it cosigned for each log, in its own SQLite file.
The only module of the witness that talks SQL, and the only one that imports sqlite-utils.

Table ``logs``: origin (key), the log's vkey, tree size, root hash, and the signed note it
cosigned last (NULL until the first). Table ``evidence``: pairs of notes a log signed that
cannot both be true (same size, two roots), kept for whoever audits the log.

Durability and concurrency: WAL, ``synchronous=FULL`` (a state change is on disk before the
cosignature for it is made), ``BEGIN IMMEDIATE`` for every write, one connection per thread,
several processes through the file. ``advance`` is a compare-and-set: the row moves to the new
checkpoint only if it still holds exactly the size and root the caller verified the
consistency proof against, in one statement of one transaction. Two requests racing from one
state cannot both win, so the witness can never cosign two checkpoints that disagree, whatever
the interleaving and whenever it is killed. Must never decide a tlog rule itself: ``core`` does.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from ledger.errors import StorageUnavailable
from ledger.merkle import EMPTY_ROOT

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    vkey TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    note BLOB,
    updated_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    held_note BLOB,
    new_note BLOB NOT NULL,
    recorded_at_ms INTEGER NOT NULL
) STRICT;
"""


@dataclass(frozen=True)
class HeldCheckpoint:
    """What the witness holds for a log: the size and root it cosigned last (0 and the empty root before any)."""

    origin: str
    vkey: str
    size: int
    root: bytes
    note: bytes | None


class WitnessStore:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite_utils.Database] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            self._db().executescript(SCHEMA)  # idempotent: every process opening the file may run it

    def _db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_ms / 1000, check_same_thread=False)
            conn.isolation_level = None  # transactions only where this module begins them
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"witness database {self.path} ({what}): {exc}") from exc

    def ensure_logs(self, logs: Sequence[tuple[str, str]], now_ms: int) -> None:
        """A row per configured (origin, vkey): new ones start at size 0; a changed vkey is recorded."""
        with self._errors("configure logs"), self._write() as db:
            for origin, vkey in logs:
                db.execute(
                    "INSERT INTO logs (origin, vkey, size, root, note, updated_at_ms) VALUES (?, ?, 0, ?, NULL, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET vkey = excluded.vkey",
                    [origin, vkey, EMPTY_ROOT, now_ms],
                )

    def held(self, origin: str) -> HeldCheckpoint | None:
        with self._errors("read"):
            query = "SELECT origin, vkey, size, root, note FROM logs WHERE origin = ?"
            row = self._db().execute(query, [origin]).fetchone()
        if row is None:
            return None
        return HeldCheckpoint(row[0], row[1], row[2], bytes(row[3]), None if row[4] is None else bytes(row[4]))

    def advance(self, held: HeldCheckpoint, size: int, root: bytes, note: bytes, now_ms: int) -> bool:
        """Move the log from exactly ``held`` to (size, root, note), durably; False if it no longer holds ``held``."""
        with self._errors("advance"), self._write() as db:
            cursor = db.execute(
                "UPDATE logs SET size = ?, root = ?, note = ?, updated_at_ms = ? "
                "WHERE origin = ? AND size = ? AND root = ?",
                [size, root, note, now_ms, held.origin, held.size, held.root],
            )
            return cursor.rowcount == 1

    def record_evidence(self, origin: str, held_note: bytes | None, new_note: bytes, now_ms: int) -> None:
        with self._errors("record evidence"), self._write() as db:
            db.execute(
                "INSERT INTO evidence (origin, held_note, new_note, recorded_at_ms) VALUES (?, ?, ?, ?)",
                [origin, held_note, new_note, now_ms],
            )

    def evidence(self, origin: str) -> list[tuple[bytes | None, bytes]]:
        with self._errors("read"):
            rows = (
                self._db()
                .execute("SELECT held_note, new_note FROM evidence WHERE origin = ? ORDER BY id", [origin])
                .fetchall()
            )
        return [(None if a is None else bytes(a), bytes(b)) for a, b in rows]

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.conn.close()
            self._all.clear()
        self._local = threading.local()

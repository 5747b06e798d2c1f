"""A set of keys kept on disk, so the chain auditor's memory does not grow with the chain.

The auditor must prove every (signer, nonce) and transaction id was used once across the
whole history; a Python set of them would grow without bound. This keeps them in a private
temporary SQLite file (no fsync: it is scratch, deleted on close). It is not the ledger's
storage and never sees the ledger's database.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from types import TracebackType
from typing import TypeVar

V = TypeVar("V")


class DiskSet:
    def __init__(self) -> None:
        handle, self._path = tempfile.mkstemp(prefix="inferpay-audit-", suffix=".db")
        os.close(handle)
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        self._conn.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8000;"
            "CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID;"
        )
        self._conn.execute("BEGIN")

    def add(self, key: str) -> bool:
        """Add ``key``; False if it was already there."""
        cursor = self._conn.execute("INSERT OR IGNORE INTO seen (key) VALUES (?)", (key,))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._conn.close()
        os.unlink(self._path)

    def __enter__(self) -> DiskSet:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


class DiskMap(MutableMapping[str, V]):
    """A mapping kept on disk, for what the auditor must remember per entry of history (what each
    settle credited, for the refunds that may name it): values are stored as the text ``encode``
    makes and read back with ``decode``. Scratch, like ``DiskSet``: deleted on close."""

    def __init__(self, encode: Callable[[V], str], decode: Callable[[str], V]) -> None:
        handle, self._path = tempfile.mkstemp(prefix="inferpay-audit-map-", suffix=".db")
        os.close(handle)
        self._encode, self._decode = encode, decode
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        self._conn.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8000;"
            "CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        )
        self._conn.execute("BEGIN")

    def __getitem__(self, key: str) -> V:
        row = self._conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return self._decode(row[0])

    def __setitem__(self, key: str, value: V) -> None:
        self._conn.execute("INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)", (key, self._encode(value)))

    def __delitem__(self, key: str) -> None:
        if self._conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount != 1:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([row[0] for row in self._conn.execute("SELECT key FROM entries ORDER BY key")])

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
        os.unlink(self._path)

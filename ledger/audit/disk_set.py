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
from types import TracebackType


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

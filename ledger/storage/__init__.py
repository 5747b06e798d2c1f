"""Open a ledger store from where it lives: a ``postgresql://`` URL or a SQLite file path.

The one place that chooses a backend, so callers (wallets' Home, the CLI, the gateway) name a
location and never a class. PostgreSQL support is imported only when a URL asks for it.
"""

from __future__ import annotations

from pathlib import Path

from ledger.errors import InvalidInput, StorageUnavailable
from ledger.storage.base import LedgerStore
from ledger.storage.postgres_schema import is_postgres_url

__all__ = ["describe", "is_postgres_url", "open_store"]


def open_store(target: str | Path) -> LedgerStore:
    """A ``postgresql://``/``postgres://`` URL opens a ``PostgresStore`` (creating its tables, and
    its ``?schema=`` if missing); anything else is a SQLite file, created if missing. A bad URL
    raises ``InvalidInput`` and an unreachable server ``StorageUnavailable``, each in one line."""
    if is_postgres_url(target):
        try:
            from ledger.storage.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise StorageUnavailable(f"PostgreSQL support needs psycopg 3 and psycopg-pool: {exc}") from exc
        return PostgresStore(str(target))
    text = str(target)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidInput(f"unsupported database URL scheme {scheme!r}: use postgresql://... or a SQLite file path")
    from ledger.storage.sqlite import SQLiteStore

    return SQLiteStore(Path(text).expanduser())


def describe(target: str | Path) -> str:
    """The location as it is safe to print (a URL without its password)."""
    if is_postgres_url(target):
        from ledger.storage.postgres_schema import parse_postgres_url

        try:
            return parse_postgres_url(str(target)).display
        except InvalidInput:
            return "postgresql://(unreadable URL)"
    return str(target)

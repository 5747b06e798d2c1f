"""Rate-limit counters: how many calls and base units each (limit, subject) was admitted in a
fixed window, shared by every worker (and every gateway) that counts together. The gateway
decides what a limit is (``gateway.server.rate_limits``); this module only counts, atomically.

Where the counts live: a SQLite file of their own next to a SQLite ledger (WAL, ``BEGIN
IMMEDIATE``: one admission at a time on this host; ``synchronous=NORMAL``, since a power cut
forgetting the last counts at worst lets a few calls more through and no money rule depends
on them, and the ledger's own durable writes must not queue behind them); or, when the ledger
is in PostgreSQL, a ``gateway_rate_counts`` table beside the ledger's (same database and
``?schema=``), so gateways on several hosts share one count: an admission locks the counter
rows it reads (``FOR UPDATE``, in the caller's sorted order) at READ COMMITTED. The SQL is
written once, over a two-line dialect. Driver errors become ``StorageUnavailable``. Never
touches the ledger's tables and never moves money.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import StorageUnavailable
from ledger.storage.postgres_schema import is_postgres_url, parse_postgres_url

TABLE = "gateway_rate_counts"
_CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    limit_name TEXT NOT NULL,
    subject TEXT NOT NULL,
    window_start_s BIGINT NOT NULL,
    expires_at_s BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    base_units BIGINT NOT NULL,
    PRIMARY KEY (limit_name, subject, window_start_s)
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (expires_at_s)",
)
_PRUNE_EVERY = 64  # admissions between two deletions of ended windows (on average)
_KEY = "limit_name = ? AND subject = ? AND window_start_s = ?"


@dataclass(frozen=True)
class Counter:
    """One limit's count for one subject in one window, and what it may reach."""

    limit_name: str
    subject: str
    window_start_s: int
    window_seconds: int
    max_requests: int | None
    max_spend: int | None  # base units


@dataclass(frozen=True)
class _Dialect:
    placeholder: str
    begin: str  # the statement that starts an admission's transaction
    row_lock: str  # appended to the SELECT of a counter row


SQLITE = _Dialect("?", "BEGIN IMMEDIATE", "")  # the write lock first: no two workers read one count
POSTGRES = _Dialect("%s", "BEGIN", " FOR UPDATE")  # each counter row locked as it is read


class RateCounts:
    def __init__(self, location: str | Path) -> None:
        """``location``: a SQLite file, or the PostgreSQL ledger's URL."""
        self._postgres = None
        if is_postgres_url(location):
            target = parse_postgres_url(str(location))
            self._postgres = (target.conninfo, target.schema)
        self._path = location
        self.dialect = POSTGRES if self._postgres else SQLITE
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self._created = False

    def admit(self, counters: Sequence[Counter], amount: int, now_s: int) -> list[Counter]:
        """Count one call of ``amount`` base units against every counter, in one transaction;
        unless one would go over: then count nothing and return those that refused."""
        if not self._created:
            self._create_table()
        with self._transaction() as run:
            refused: list[Counter] = []
            for counter in counters:
                key = (counter.limit_name, counter.subject, counter.window_start_s)
                ends = counter.window_start_s + counter.window_seconds
                run(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT DO NOTHING", (*key, ends))
                requests, units = run(
                    f"SELECT requests, base_units FROM {TABLE} WHERE {_KEY}{self.dialect.row_lock}", key
                ).fetchone()
                if (counter.max_requests is not None and requests + 1 > counter.max_requests) or (
                    counter.max_spend is not None and units + amount > counter.max_spend
                ):
                    refused.append(counter)
            if refused:
                run("ROLLBACK", ())  # nothing counted
                return refused
            for counter in counters:
                key = (counter.limit_name, counter.subject, counter.window_start_s)
                run(
                    f"UPDATE {TABLE} SET requests = requests + 1, base_units = base_units + ? WHERE {_KEY}",
                    (amount, *key),
                )
            if secrets.randbelow(_PRUNE_EVERY) == 0:
                run(f"DELETE FROM {TABLE} WHERE expires_at_s <= ?", (now_s,))
        return []

    def close(self) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()
        self._local = threading.local()

    # ---- the database ----

    def _create_table(self) -> None:
        with self._transaction() as run:
            if self._postgres:  # two processes creating it at once would collide in the catalog
                run("SELECT pg_advisory_xact_lock(hashtext(?))", (TABLE,))
            for statement in _CREATE:
                run(statement, ())
        self._created = True

    @contextmanager
    def _transaction(self) -> Iterator[Callable[[str, tuple[Any, ...]], Any]]:
        connection = self._connection()
        placeholder = self.dialect.placeholder
        finished = False

        def run(sql: str, params: tuple[Any, ...]) -> Any:
            nonlocal finished
            if sql == "ROLLBACK":
                finished = True
            return connection.execute(sql.replace("?", placeholder), params)

        try:
            connection.execute(self.dialect.begin)
            try:
                yield run
            except BaseException:
                if not finished:
                    connection.execute("ROLLBACK")
                raise
            if not finished:
                connection.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, psycopg.Error: never a 500, never a URL
            if not _is_driver_error(exc):
                raise
            self._discard(connection)
            raise StorageUnavailable(f"the rate limits' counts cannot be read: {type(exc).__name__}") from exc

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _connect(self) -> Any:
        connection: Any
        if self._postgres is None:
            connection = sqlite3.connect(self._path, timeout=10, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection
        import psycopg
        from psycopg import sql

        conninfo, schema = self._postgres
        try:
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
            if schema is not None:
                connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        except psycopg.Error as exc:
            raise StorageUnavailable(f"the rate limits' counts cannot be read: {type(exc).__name__}") from exc
        return connection

    def _discard(self, connection: Any) -> None:
        self._local.connection = None
        with self._lock:
            if connection in self._opened:
                self._opened.remove(connection)
        with suppress(Exception):
            connection.close()


def _is_driver_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    module = type(exc).__module__ or ""
    return module.startswith("psycopg")

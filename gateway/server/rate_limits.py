"""Rate limits (``[[rate_limits]]`` in the gateway TOML): calls and spend per window, per payer,
per API key or per route, decided before anything is held.

A paid call is admitted, or refused with ``RateLimited`` (429, ``Retry-After``), after its payment
is checked and before the ledger holds anything: a refused call moves no money and uses no
nonce. Every limit that applies is checked and counted in one database transaction, so a call
refused by one limit counts against none. Windows are fixed (``now // window_seconds``);
``Retry-After`` is the time left in the window that refused. ``max_spend`` counts what admitted
calls may hold (the flat price, a metered route's ``max_amount``, or an API key's charge), not
what they are finally charged: it bounds the money a payer can put in flight, decided up front.

Who is counted: per payer, the authorization's signer, whose signature is checked first (else
anyone could spend a victim's allowance of calls by naming them); per API key, the key's
allowance id (never the key); per route, the route. Refused and failed calls still count once
admitted.

Where the counts live, shared by every worker (and every gateway) that counts together:
``<home>/rate-limits.db`` next to a SQLite ledger (SQLite, WAL, ``BEGIN IMMEDIATE``: one
admission at a time on this host; ``synchronous=NORMAL``, since a power cut forgetting the last
counts at worst lets a few calls more through and no money rule depends on them); or, when the
ledger is in PostgreSQL, a ``gateway_rate_counts`` table beside the ledger's (same database and
``?schema=``), so gateways on several hosts share one count: each admission locks the counter
rows it reads (``FOR UPDATE``, in one sorted order) at READ COMMITTED. The SQL is written once,
over a two-line dialect. This module never moves money and never touches the ledger's tables.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.server.config import RateLimit, Route
from gateway.wire.errors import RateLimited
from ledger import is_postgres_url, postgres_connection
from ledger.amounts import format_amount
from ledger.errors import StorageUnavailable
from ledger.types import Address, Authorization, ChainInfo, Permit2Authorization, SignatureHex, Transaction, TxKind
from ledger.validation import check_signature

FILE_NAME = "rate-limits.db"
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


@dataclass(frozen=True)
class _Dialect:
    placeholder: str
    begin: str  # the statement that starts an admission's transaction
    row_lock: str  # appended to the SELECT of a counter row


SQLITE = _Dialect("?", "BEGIN IMMEDIATE", "")  # the write lock first: no two workers read one count
POSTGRES = _Dialect("%s", "BEGIN", " FOR UPDATE")  # each counter row locked as it is read


class RateLimiter:
    def __init__(self, location: str | Path, limits: tuple[RateLimit, ...], *, clock_s: Callable[[], int]) -> None:
        """``location``: a SQLite file, or the PostgreSQL ledger's URL."""
        self.limits = limits
        self.clock_s = clock_s
        self._postgres = postgres_connection(str(location)) if is_postgres_url(location) else None
        self._path = location
        self.dialect = POSTGRES if self._postgres else SQLITE
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        if limits:
            self._create_table()

    def needs_payer_check(self, route: Route) -> bool:
        """Whether a per-payer limit applies here (the payer's signature must be checked first)."""
        return any(limit.per == "payer" and limit.route in (None, route.path) for limit in self.limits)

    def admit(self, route: Route, *, payer: Address, api_key: str | None, amount: int) -> None:
        """Count one call of ``amount`` base units, or raise ``RateLimited`` and count nothing."""
        applicable = sorted(
            (
                (limit, subject)
                for limit in self.limits
                if limit.route in (None, route.path)
                and (subject := {"payer": payer, "api_key": api_key, "route": route.path}[limit.per]) is not None
            ),
            key=lambda pair: (pair[0].name, pair[1]),  # one lock order for every admission
        )
        if not applicable:
            return
        now = self.clock_s()
        key = "limit_name = ? AND subject = ? AND window_start_s = ?"
        with self._transaction() as run:
            refusals: list[tuple[int, str]] = []
            for limit, subject in applicable:
                start = now - now % limit.window_seconds
                run(
                    f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT DO NOTHING",
                    (limit.name, subject, start, start + limit.window_seconds),
                )
                requests, units = run(
                    f"SELECT requests, base_units FROM {TABLE} WHERE {key}{self.dialect.row_lock}",
                    (limit.name, subject, start),
                ).fetchone()
                retry = start + limit.window_seconds - now
                if limit.max_requests is not None and requests + 1 > limit.max_requests:
                    refusals.append((retry, f"{limit.max_requests} calls per {limit.window_seconds} s {_scope(limit)}"))
                elif limit.max_spend is not None and units + amount > limit.max_spend:
                    spend = format_amount(limit.max_spend)
                    refusals.append((retry, f"{spend} tokens per {limit.window_seconds} s {_scope(limit)}"))
            if refusals:  # the transaction rolls back: nothing counted
                retry, which = max(refusals)
                raise RateLimited(f"rate limit reached: {which}; retry in {retry} s", retry_after_s=max(1, retry))
            for limit, subject in applicable:
                start = now - now % limit.window_seconds
                run(
                    f"UPDATE {TABLE} SET requests = requests + 1, base_units = base_units + ? WHERE {key}",
                    (amount, limit.name, subject, start),
                )
            if secrets.randbelow(_PRUNE_EVERY) == 0:
                run(f"DELETE FROM {TABLE} WHERE expires_at_s <= ?", (now,))

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

    @contextmanager
    def _transaction(self) -> Iterator[Callable[[str, tuple[Any, ...]], Any]]:
        connection = self._connection()
        placeholder = self.dialect.placeholder

        def run(sql: str, params: tuple[Any, ...]) -> Any:
            return connection.execute(sql.replace("?", placeholder), params)

        try:
            connection.execute(self.dialect.begin)
            try:
                yield run
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except RateLimited:
            raise
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
    module = type(exc).__module__
    return module.startswith("psycopg")


def check_payer(chain: ChainInfo, auth: Authorization | Permit2Authorization, signature: SignatureHex) -> None:
    """The authorization (EIP-3009 or Permit2) is signed by its ``from``: only then may a call
    count against that payer. The ledger checks it again as it holds (with the window, the
    nonce and the funds)."""
    kind: TxKind = "transfer" if isinstance(auth, Authorization) else "permit2_hold"
    check_signature(chain, Transaction(kind, auth, auth.from_, signature))


def _scope(limit: RateLimit) -> str:
    where = f" on {limit.route}" if limit.route else ""
    return {"payer": "per payer", "api_key": "per API key", "route": "for the route"}[limit.per] + where

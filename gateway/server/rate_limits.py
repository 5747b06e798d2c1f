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

Counts live in ``<home>/rate-limits.db``, SQLite in WAL mode shared by every worker of this host
(``BEGIN IMMEDIATE``: one admission at a time), ``synchronous=NORMAL``: a power cut may forget
the last counts, which at worst lets a few calls more through; no money rule depends on it. With
the ledger in PostgreSQL and gateways on several hosts, each host counts its own calls (so a
limit is per host). This module never moves money and never talks to the ledger's database.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.server.config import RateLimit, Route
from gateway.wire.errors import RateLimited
from ledger.amounts import format_amount
from ledger.types import Address, Authorization, ChainInfo, SignatureHex, Transaction
from ledger.validation import check_signature

FILE_NAME = "rate-limits.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_counts (
    limit_name TEXT NOT NULL,
    subject TEXT NOT NULL,
    window_start_s INTEGER NOT NULL,
    expires_at_s INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    base_units INTEGER NOT NULL,
    PRIMARY KEY (limit_name, subject, window_start_s)
);
CREATE INDEX IF NOT EXISTS rate_counts_expiry ON rate_counts (expires_at_s);
"""


class RateLimiter:
    def __init__(self, path: Path, limits: tuple[RateLimit, ...], *, clock_s: Callable[[], int]) -> None:
        self.path = path
        self.limits = limits
        self.clock_s = clock_s
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if limits:
            self._db().executescript(_SCHEMA)

    def needs_payer_check(self, route: Route) -> bool:
        """Whether a per-payer limit applies here (the payer's signature must be checked first)."""
        return any(limit.per == "payer" and limit.route in (None, route.path) for limit in self.limits)

    def admit(self, route: Route, *, payer: Address, api_key: str | None, amount: int) -> None:
        """Count one call of ``amount`` base units, or raise ``RateLimited`` and count nothing."""
        applicable = [
            (limit, subject)
            for limit in self.limits
            if limit.route in (None, route.path)
            and (subject := {"payer": payer, "api_key": api_key, "route": route.path}[limit.per]) is not None
        ]
        if not applicable:
            return
        now = self.clock_s()
        with self._transaction() as db:
            refusals: list[tuple[int, str]] = []
            for limit, subject in applicable:
                start = now - now % limit.window_seconds
                row = db.execute(
                    "SELECT requests, base_units FROM rate_counts"
                    " WHERE limit_name = ? AND subject = ? AND window_start_s = ?",
                    (limit.name, subject, start),
                ).fetchone()
                requests, units = row if row is not None else (0, 0)
                retry = start + limit.window_seconds - now
                if limit.max_requests is not None and requests + 1 > limit.max_requests:
                    refusals.append((retry, f"{limit.max_requests} calls per {limit.window_seconds} s {_scope(limit)}"))
                elif limit.max_spend is not None and units + amount > limit.max_spend:
                    refusals.append(
                        (retry, f"{format_amount(limit.max_spend)} tokens per {limit.window_seconds} s {_scope(limit)}")
                    )
            if refusals:
                retry, which = max(refusals)
                raise RateLimited(f"rate limit reached: {which}; retry in {retry} s", retry_after_s=max(1, retry))
            for limit, subject in applicable:
                start = now - now % limit.window_seconds
                db.execute(
                    "INSERT INTO rate_counts VALUES (?, ?, ?, ?, 1, ?)"
                    " ON CONFLICT (limit_name, subject, window_start_s) DO UPDATE SET requests = requests + 1,"
                    " base_units = base_units + excluded.base_units",
                    (limit.name, subject, start, start + limit.window_seconds, amount),
                )
            db.execute("DELETE FROM rate_counts WHERE expires_at_s <= ?", (now,))

    def close(self) -> None:
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()
        self._local = threading.local()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")  # the write lock first: no two workers read the same count
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db


def check_payer(chain: ChainInfo, auth: Authorization, signature: SignatureHex) -> None:
    """The authorization is signed by its ``from``: only then may a call count against that payer.
    The ledger checks it again as it holds (with the window, the nonce and the funds)."""
    check_signature(chain, Transaction("transfer", auth, auth.from_, signature))


def _scope(limit: RateLimit) -> str:
    where = f" on {limit.route}" if limit.route else ""
    return {"payer": "per payer", "api_key": "per API key", "route": "for the route"}[limit.per] + where

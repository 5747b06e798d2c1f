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

The counts are kept by ``ledger.RateCounts`` (a SQLite file of their own beside a SQLite
ledger, or a table beside a PostgreSQL ledger's, so every worker and gateway counting together
shares them); this module decides what is counted and what a refusal says. It never moves money.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.server.config import RateLimit, Route
from gateway.wire.errors import RateLimited
from ledger import Counter, RateCounts
from ledger.amounts import format_amount
from ledger.types import Address, Authorization, ChainInfo, Permit2Authorization, SignatureHex, Transaction, TxKind
from ledger.validation import check_signature

FILE_NAME = "rate-limits.db"


class RateLimiter:
    def __init__(self, location: str | Path, limits: tuple[RateLimit, ...], *, clock_s: Callable[[], int]) -> None:
        """``location``: a SQLite file, or the PostgreSQL ledger's URL."""
        self.limits = limits
        self.clock_s = clock_s
        self._counts = RateCounts(location)

    def needs_payer_check(self, route: Route) -> bool:
        """Whether a per-payer limit applies here (the payer's signature must be checked first)."""
        return any(limit.per == "payer" and limit.route in (None, route.path) for limit in self.limits)

    def admit(self, route: Route, *, payer: Address, api_key: str | None, amount: int) -> None:
        """Count one call of ``amount`` base units, or raise ``RateLimited`` and count nothing."""
        now = self.clock_s()
        by_name: dict[str, RateLimit] = {}
        counters: list[Counter] = []
        for limit in self.limits:
            subject = {"payer": payer, "api_key": api_key, "route": route.path}[limit.per]
            if limit.route not in (None, route.path) or subject is None:
                continue
            by_name[limit.name] = limit
            start = now - now % limit.window_seconds
            counters.append(
                Counter(limit.name, subject, start, limit.window_seconds, limit.max_requests, limit.max_spend)
            )
        if not counters:
            return
        counters.sort(key=lambda c: (c.limit_name, c.subject))  # one lock order for every admission
        refused = self._counts.admit(counters, amount, now)
        if not refused:
            return
        reasons = []
        for counter in refused:
            limit = by_name[counter.limit_name]
            retry = counter.window_start_s + counter.window_seconds - now
            if limit.max_requests is not None and limit.max_spend is None:
                what = f"{limit.max_requests} calls"
            elif limit.max_requests is None:
                what = f"{format_amount(limit.max_spend or 0)} tokens"
            else:
                what = f"{limit.max_requests} calls or {format_amount(limit.max_spend or 0)} tokens"
            reasons.append((retry, f"{what} per {limit.window_seconds} s {_scope(limit)}"))
        retry, which = max(reasons)
        raise RateLimited(f"rate limit reached: {which}; retry in {retry} s", retry_after_s=max(1, retry))

    def close(self) -> None:
        self._counts.close()


def check_payer(chain: ChainInfo, auth: Authorization | Permit2Authorization, signature: SignatureHex) -> None:
    """The authorization (EIP-3009 or Permit2) is signed by its ``from``: only then may a call
    count against that payer. The ledger checks it again as it holds (with the window, the
    nonce and the funds)."""
    kind: TxKind = "transfer" if isinstance(auth, Authorization) else "permit2_hold"
    check_signature(chain, Transaction(kind, auth, auth.from_, signature))


def _scope(limit: RateLimit) -> str:
    where = f" on {limit.route}" if limit.route else ""
    return {"payer": "per payer", "api_key": "per API key", "route": "for the route"}[limit.per] + where

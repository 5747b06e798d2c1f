"""The providers a gateway may route to, as the ledger says now.

Reads ``Ledger.providers()`` and the pool fee in force, and reads them again only when
``Ledger.pool_version()`` moves (one cheap read, done at most once per ``refresh_ms``), so a
registration, update, withdrawal, approval or fee recorded by anyone reaches every worker within
one health interval. Routable: the registration in force is ``active`` and, under
``accept = "listed"``, the operator approved the provider. Never writes to the ledger.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from gateway.server.pool.health import monotonic_ms
from ledger.ledger import Ledger
from ledger.types import PoolFeeInForce, ProviderRecord


@dataclass(frozen=True)
class PoolView:
    """One consistent read: every provider in force, the fee in force, the version read with them."""

    version: int
    providers: tuple[ProviderRecord, ...]
    fee: PoolFeeInForce
    accept: str

    def routable(self) -> tuple[ProviderRecord, ...]:
        return tuple(
            p for p in self.providers if p.registration.status == "active" and (self.accept == "any" or p.approved)
        )


class ProviderDirectory:
    def __init__(self, ledger: Ledger, accept: str, refresh_ms: int) -> None:
        self.ledger = ledger
        self.accept = accept
        self.refresh_ms = refresh_ms
        self._lock = threading.Lock()
        self._view: PoolView | None = None
        self._checked_ms = 0

    def refresh(self) -> PoolView:
        """Re-read the ledger's pool if its version moved (always on the first call)."""
        version = self.ledger.pool_version()
        with self._lock:
            self._checked_ms = monotonic_ms()
            if self._view is not None and self._view.version == version:
                return self._view
        # Read the version first and the records after: a change landing in between is seen
        # now or, at worst, on the next refresh (the version will have moved again).
        view = PoolView(version, tuple(self.ledger.providers()), self.ledger.pool_fee_in_force(), self.accept)
        with self._lock:
            self._view = view
        return view

    def current(self) -> PoolView:
        """The view a request routes with: the checker keeps it fresh; if the checker is not
        running (or is late), the request re-reads the version itself once ``refresh_ms`` passed."""
        with self._lock:
            view, fresh = self._view, monotonic_ms() - self._checked_ms < self.refresh_ms
        if view is not None and fresh:
            return view
        return self.refresh()

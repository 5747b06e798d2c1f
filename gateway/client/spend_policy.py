"""The client's spending caps: per call and in total, in integer base units, shared by threads.

A payment reserves its whole authorized amount here before anything is signed, and gives back
what it did not spend once the outcome is known (see ``gateway.client``'s contract). This module
must never sign, parse or send anything: it only counts, and errs toward spending less.
"""

from __future__ import annotations

import threading

from gateway.wire.errors import SpendLimitExceeded

__all__ = ["SpendPolicy"]


class SpendPolicy:
    """Per-call and running-total caps in base units, shared safely by every thread."""

    def __init__(self, max_per_call: int | None = None, max_total: int | None = None) -> None:
        for name, value in (("max_per_call", max_per_call), ("max_total", max_total)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer of base units, got {value!r}")
        self.max_per_call = max_per_call
        self.max_total = max_total
        self._lock = threading.Lock()
        self._committed = 0

    @property
    def committed(self) -> int:
        """Charged so far plus what in-flight payments have authorized."""
        with self._lock:
            return self._committed

    def reserve(self, amount: int) -> None:
        if self.max_per_call is not None and amount > self.max_per_call:
            raise SpendLimitExceeded(
                f"the call asks {amount}, more than the per-call limit {self.max_per_call}",
                amount=str(amount),
                limit=str(self.max_per_call),
            )
        with self._lock:  # check and add in one step, or two threads could both fit under the cap
            if self.max_total is not None and self._committed + amount > self.max_total:
                raise SpendLimitExceeded(
                    f"paying {amount} would bring spending to {self._committed + amount}, "
                    f"past the limit {self.max_total}",
                    amount=str(amount),
                    committed=str(self._committed),
                    limit=str(self.max_total),
                )
            self._committed += amount

    def release(self, amount: int) -> None:
        with self._lock:
            self._committed -= amount

"""The ledger's one clock: integer milliseconds since the Unix epoch, and its two conversions.

Every time the ledger stores is an ``int`` whose name says its unit (``accepted_at_ms``,
``hold_expires_at_s``). Rules that compare against signed windows (EIP-3009 ``validAfter`` /
``validBefore``, hold expiries) work in whole seconds, taken from the millisecond clock by
``ms_to_s`` (floor: a window is open at second ``s`` from its first millisecond). No float ever
holds a stored time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MsClock = Callable[[], int]  # a source of "now" in integer milliseconds


def system_now_ms() -> int:
    """The machine's wall clock in integer milliseconds."""
    return time.time_ns() // 1_000_000


def ms_to_s(ms: int) -> int:
    """Whole seconds of a millisecond time (floor)."""
    return ms // 1000


def s_to_ms(seconds: int) -> int:
    """The first millisecond of a whole second."""
    return seconds * 1000

"""Shift this process's wall clock by the offset in ``$INFERPAY_RELIABILITY_CLOCK_FILE``.

Loaded by the reliability suite into the gateway it starts (``PYTHONPATH`` puts this folder
first, so Python imports it at start-up, before the ledger binds ``time.time`` as its clock).
The file holds a signed number of seconds (``-90``, ``+45``) and is re-read at most every
0.2 s, so the clock can be stepped while the gateway runs, as an NTP step would step it.
Only the wall clock moves (``time.time``, ``time.time_ns``); ``time.monotonic`` never does,
exactly like a real clock step. Never import this outside the reliability suite.
"""

from __future__ import annotations

import os
import time

_PATH = os.environ.get("INFERPAY_RELIABILITY_CLOCK_FILE")

if _PATH:
    _real_time, _real_time_ns, _monotonic = time.time, time.time_ns, time.monotonic
    _cache = {"offset": 0.0, "read_at": -1e9}

    def _offset() -> float:
        now = _monotonic()
        if now - _cache["read_at"] >= 0.2:
            _cache["read_at"] = now
            try:
                with open(_PATH) as handle:
                    _cache["offset"] = float(handle.read().strip() or 0)
            except (OSError, ValueError):
                pass  # keep the last offset: the file is being replaced
        return _cache["offset"]

    def _time() -> float:
        return _real_time() + _offset()

    def _time_ns() -> int:
        return _real_time_ns() + int(_offset() * 1_000_000_000)

    time.time = _time
    time.time_ns = _time_ns

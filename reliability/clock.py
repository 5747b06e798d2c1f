"""The machine's wall clock, moved back and forward for the gateway and for the clients.

The ledger takes its clock from ``time.time_ns``; the machine's own clock cannot be changed here,
so the suite shifts it per process instead: the gateway (and its gunicorn workers) load
``reliability/clockshim/sitecustomize.py``, which adds the offset written in one file to
``time.time``; the suite's own process (the clients that sign payments) shifts its
``time.time`` by the same offset, so every party sees the same moved clock, as they would on
one machine whose clock was stepped. ``time.monotonic`` never moves, as with a real step.

libfaketime was tried first (Debian's ``faketime`` 0.9.10): with
``FAKETIME_DONT_FAKE_MONOTONIC=1`` every ``time.sleep`` in Python fails with EINVAL, and
without it ``CLOCK_MONOTONIC`` jumps backwards together with the wall clock, which no real
clock step does (timed waits would stall for the size of the step). Hence the shim.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "clockshim"
CLOCK_FILE_ENV = "INFERPAY_RELIABILITY_CLOCK_FILE"
_real_time, _real_time_ns = time.time, time.time_ns


class ClockControl:
    """One offset (seconds) for the whole simulated machine: the file the gateway reads, and
    this process's ``time.time``."""

    mechanism = "python-shim (reliability/clockshim/sitecustomize.py)"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "clock_offset"
        self.offset = 0.0
        self.steps: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._write(0.0)

    def child_env(self) -> dict[str, str]:
        """Environment for a server process that must see this clock."""
        return {"PYTHONPATH": str(SHIM_DIR), CLOCK_FILE_ENV: str(self.path)}

    def set(self, offset: float) -> None:
        """Step the machine's clock to real time + ``offset`` seconds (for everyone at once)."""
        with self._lock:
            self.steps.append({"from": self.offset, "to": offset, "at": _real_time()})
            self.offset = offset
            self._write(offset)
        # Both wall clocks, as the shim does in the gateway: the ledger's clock reads ``time.time_ns``.
        time.time = self._shifted if offset else _real_time
        time.time_ns = self._shifted_ns if offset else _real_time_ns

    def now(self) -> float:
        """The simulated machine's wall clock, in seconds."""
        return _real_time() + self.offset

    def now_ms(self) -> int:
        """The simulated machine's wall clock in integer milliseconds (the ledger's clock)."""
        return (_real_time_ns() + int(self.offset * 1_000_000_000)) // 1_000_000

    def reset(self) -> None:
        if self.offset:
            self.set(0.0)

    def _shifted(self) -> float:
        return _real_time() + self.offset

    def _shifted_ns(self) -> int:
        return _real_time_ns() + int(self.offset * 1_000_000_000)

    def _write(self, offset: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+.3f}\n")
        os.replace(tmp, self.path)

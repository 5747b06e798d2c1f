"""Automatic sealing for long-running processes: every N ms, release expired holds and seal
waiting transactions once M of them wait or the oldest has waited N ms.

Several processes may each run one against the same database: sealing is a single write
transaction, so two sealers never produce the same block; the second finds less (or nothing)
to seal. Processes of one host can elect one of them with a lock file (``lock_path``). Errors
are logged and retried on the next tick; they never stop the thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ledger.ledger import Ledger

log = logging.getLogger("inferpay.sealer")


class AutoSealer:
    """``lock_path``: a file that elects one sealer among the processes of one host (gunicorn
    workers): only the process holding its flock ticks, the others stand by and take over
    within one interval if it exits or dies (the kernel drops a dead holder's lock). Without
    it, every process seals, which is correct (see above) but repeats the polling."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        interval_ms: int = 200,
        max_txs: int = 1000,
        lock_path: Path | None = None,
        after_tick: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.after_tick = after_tick  # runs in the elected process after each tick (checkpoints)
        self.interval_ms = interval_ms
        self.max_txs = max_txs
        self.lock_path = lock_path
        self._lock_fd: int | None = None
        self._elected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferpay-sealer", daemon=True)

    def start(self) -> AutoSealer:
        self._thread.start()
        return self

    def elected(self) -> bool:
        """Whether this process is the one that seals (always, without a lock file)."""
        if self.lock_path is None or self._elected:
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another process seals; asked again next tick
        self._elected = True  # held for this process's life
        return True

    def tick(self) -> None:
        if not self.elected():
            return
        self.ledger.expire_holds()
        self.ledger.maybe_seal(max_age_ms=self.interval_ms, max_txs=self.max_txs)
        if self.after_tick is not None:
            self.after_tick()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_ms / 1000):
            try:
                self.tick()
            except Exception:  # keep sealing after a transient failure (e.g. database busy)
                log.exception("sealing failed; retrying next tick")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # another process's sealer takes over on its next tick
            self._lock_fd, self._elected = None, False

"""Automatic sealing for long-running processes: every N ms, release expired holds and seal
waiting transactions once M of them wait or the oldest has waited N ms.

Several processes may each run one against the same database: sealing is a single write
transaction, so two sealers never produce the same block; the second finds less (or nothing)
to seal. Errors are logged and retried on the next tick; they never stop the thread.
"""

from __future__ import annotations

import logging
import threading

from ledger.ledger import Ledger

log = logging.getLogger("inferpay.sealer")


class AutoSealer:
    def __init__(self, ledger: Ledger, *, interval_ms: int = 200, max_txs: int = 1000) -> None:
        self.ledger = ledger
        self.interval_ms = interval_ms
        self.max_txs = max_txs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferpay-sealer", daemon=True)

    def start(self) -> AutoSealer:
        self._thread.start()
        return self

    def tick(self) -> None:
        self.ledger.expire_holds()
        self.ledger.maybe_seal(max_age_ms=self.interval_ms, max_txs=self.max_txs)

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

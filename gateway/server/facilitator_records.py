"""What the facilitator remembers beyond the ledger: which holds it placed itself, and the
answers it gave under an x402 ``payment-identifier``. Both live in the ledger's own database
(``LedgerStore.facilitator``, tables ``facilitator_holds`` and ``facilitator_payment_ids``), so
every worker and every host of one ledger agrees: a payment verified on one host settles on any.

1. Whose hold: one record per (payer, nonce) the facilitator tried to hold. The first
   facilitator request for a nonce *claims* it (``placing``) before it asks the ledger for the
   hold; only when the ledger answers that it created the hold just then is the record
   ``placed`` with that hold's id. If the ledger answers that the nonce or the very hold was
   already there, someone else placed it (the gateway's paid proxy, holding it while its
   upstream call runs; a ledger API client) and the record is ``foreign``: the facilitator never
   captures it. That is exact where matching a hold's expiry, payee or value is not (the
   proxy's hold can carry the same expiry, payee and value as ours). Other facilitator
   requests for the same nonce wait for the claim to resolve, then use its answer.
2. Payment identifiers: (payment id, verify|settle) -> (request digest, answer). The first
   request with an id claims it; the same id with the same request returns the answer stored
   for it (a concurrent twin waits for it); the same id with another request is an
   ``IdempotencyConflict``, in verify and in settle alike.

Records older than ``KEEP_MS`` are pruned (at most once an hour, by whichever request comes):
a hold expires long before, and a payment identifier is an idempotency key for retries, not
forever. Must never decide a money rule: the ledger enforces those.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ledger import FacilitatorRecordStore
from ledger.errors import IdempotencyConflict

WAIT_FOR_CLAIM_MS = 10_000  # how long a twin waits for the request that claimed first
STALE_CLAIM_MS = 60_000  # a claim unresolved this long was left by a worker that died
KEEP_MS = 7 * 86_400_000  # records are kept a week (a hold lasts at most a day)
PRUNE_EVERY_MS = 3_600_000

T = TypeVar("T")


@dataclass(frozen=True)
class NonceClaim:
    """``mine``: this request holds the claim and must resolve it; ``placed``: the facilitator
    holds ``hold_id`` for it; ``foreign``: the nonce was used by someone else."""

    state: Literal["mine", "placed", "foreign"]
    hold_id: str | None = None


class FacilitatorRecords:
    def __init__(self, store: FacilitatorRecordStore, *, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self._pruned_at_ms = 0
        self._prune_lock = threading.Lock()

    # ---- 1. whose hold ----

    def claim_nonce(self, payer: str, nonce: str) -> NonceClaim:
        payer, nonce = payer.lower(), nonce.lower()
        self._maybe_prune()
        now = self.clock_ms()
        if self.store.claim_nonce(payer, nonce, now, now - STALE_CLAIM_MS):
            return NonceClaim("mine")

        def resolved() -> NonceClaim | None:
            found = self.store.nonce_state(payer, nonce)
            if found is None or found[0] == "placing":
                return None
            state: Literal["placed", "foreign"] = "placed" if found[0] == "placed" else "foreign"
            return NonceClaim(state, found[1])

        # Still being placed past the wait: treated as not ours, the safe side.
        return self._wait(resolved) or NonceClaim("foreign")

    def nonce_held(self, payer: str, nonce: str, hold_id: str) -> None:
        """The ledger created ``hold_id`` for this request's claim: the facilitator's own."""
        self.store.resolve_nonce(payer.lower(), nonce.lower(), "placed", hold_id)

    def nonce_foreign(self, payer: str, nonce: str) -> None:
        """The ledger had the nonce (or the very hold) before this claim: never ours to capture."""
        self.store.resolve_nonce(payer.lower(), nonce.lower(), "foreign", None)

    def release_nonce(self, payer: str, nonce: str) -> None:
        """The ledger refused the hold (funds, signature, window): the nonce is not used."""
        self.store.release_nonce(payer.lower(), nonce.lower())

    # ---- 2. payment identifiers ----

    def claim_payment_id(self, payment_id: str, operation: str, digest: str) -> dict[str, Any] | None:
        """None: this request claimed ``payment_id`` and must answer it (``answered``) or give
        it back (``release_payment_id``). Otherwise the answer given first for the same request.
        Raises ``IdempotencyConflict`` when the id was used for another request."""
        now = self.clock_ms()
        if self.store.claim_payment_id(payment_id, operation, digest, now, now - STALE_CLAIM_MS):
            return None

        def answer() -> dict[str, Any] | None:
            text = self.store.payment_answer(payment_id, operation)
            if text is None:
                return None
            stored: dict[str, Any] = json.loads(text)
            return stored

        first = self._wait(answer)
        if first is None:
            raise IdempotencyConflict(
                "a request with this payment identifier is still being answered; retry later", payment_id=payment_id
            )
        return first

    def answered(self, payment_id: str, operation: str, answer: dict[str, Any]) -> None:
        self.store.answer_payment_id(payment_id, operation, json.dumps(answer, separators=(",", ":")))

    def release_payment_id(self, payment_id: str, operation: str) -> None:
        """No answer was given (a 5xx): the next request with the id is answered afresh."""
        self.store.release_payment_id(payment_id, operation)

    # ---- waiting and pruning ----

    def _wait(self, poll: Callable[[], T | None]) -> T | None:
        deadline = time.monotonic() + WAIT_FOR_CLAIM_MS / 1000
        pause_s = 0.002
        while True:
            found = poll()
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)

    def _maybe_prune(self) -> None:
        now = self.clock_ms()
        with self._prune_lock:
            if now - self._pruned_at_ms < PRUNE_EVERY_MS:
                return
            self._pruned_at_ms = now
        self.store.prune(now - KEEP_MS)

"""What the facilitator remembers beyond the ledger: which holds it placed itself, and the
answers it gave under an x402 ``payment-identifier``. Both live in ``<home>/facilitator-ids.db``.

1. ``facilitator_holds``: one row per (payer, nonce) the facilitator tried to hold. The first
   facilitator request for a nonce *claims* it (``placing``) before it asks the ledger for the
   hold; only when the ledger answers that it created the hold just then is the row
   ``placed`` with that hold's id. If the ledger answers that the nonce or the very hold was
   already there, someone else placed it (the gateway's paid proxy, holding it while its
   upstream call runs; a ledger API client) and the row is ``foreign``: the facilitator never
   captures it. That is exact where matching a hold's expiry, payee or value is not (the
   proxy's hold can carry the same expiry, payee and value as ours). Other facilitator
   requests for the same nonce wait for the claim to resolve, then use its answer.
2. ``facilitator_payment_ids``: (payment id, verify|settle) -> (request digest, answer). The
   first request with an id claims it; the same id with the same request returns the answer
   stored for it (a concurrent twin waits for it); the same id with another request is an
   ``IdempotencyConflict``, in verify and in settle alike.

Durability and concurrency: SQLite in WAL mode, ``synchronous=FULL`` (an answer given is on
disk), one writer at a time (``BEGIN IMMEDIATE``), one connection per thread, shared by every
worker of this host through the file. The ledger itself may live in PostgreSQL and serve many
hosts; this file is shared only per host. Deployed on several hosts, a payment's verify and
settle must reach the same host (sticky routing), or the other host refuses the settle as
``nonce already used``: no money moves wrongly, the hold expires by itself. It lives in its
own file, not in the ledger's database, so that the ledger's storage keeps a single owner.
Must never decide a money rule: the ledger enforces those.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ledger.errors import IdempotencyConflict

FILE_NAME = "facilitator-ids.db"
WAIT_FOR_CLAIM_MS = 10_000  # how long a twin waits for the request that claimed first
STALE_CLAIM_MS = 60_000  # a claim unresolved this long was left by a worker that died

# Migrations, in order; PRAGMA user_version says how many have run.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE facilitator_holds (
        payer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('placing', 'placed', 'foreign')),
        hold_id TEXT,
        claimed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (payer, nonce)
    );
    """,
    """
    CREATE TABLE facilitator_payment_ids (
        payment_id TEXT NOT NULL,
        operation TEXT NOT NULL CHECK (operation IN ('verify', 'settle')),
        request_digest TEXT NOT NULL,
        answer TEXT,
        claimed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (payment_id, operation)
    );
    """,
)

T = TypeVar("T")


@dataclass(frozen=True)
class NonceClaim:
    """``mine``: this request holds the claim and must resolve it; ``placed``: the facilitator
    holds ``hold_id`` for it; ``foreign``: the nonce was used by someone else."""

    state: Literal["mine", "placed", "foreign"]
    hold_id: str | None = None


class FacilitatorRecords:
    def __init__(self, path: Path, *, clock_ms: Callable[[], int]) -> None:
        self.path = path
        self.clock_ms = clock_ms
        self._local = threading.local()
        self._migrate()

    # ---- 1. whose hold ----

    def claim_nonce(self, payer: str, nonce: str) -> NonceClaim:
        key = (payer.lower(), nonce.lower())

        def claim(db: sqlite3.Connection, now_ms: int) -> bool:
            inserted = db.execute(
                "INSERT OR IGNORE INTO facilitator_holds VALUES (?, ?, 'placing', NULL, ?)", (*key, now_ms)
            ).rowcount
            if inserted:
                return True
            return bool(  # taken over from a worker that died between claim and hold
                db.execute(
                    "UPDATE facilitator_holds SET claimed_at_ms = ? WHERE payer = ? AND nonce = ?"
                    " AND state = 'placing' AND claimed_at_ms < ?",
                    (now_ms, *key, now_ms - STALE_CLAIM_MS),
                ).rowcount
            )

        def resolved() -> NonceClaim | None:
            row = (
                self._db()
                .execute("SELECT state, hold_id FROM facilitator_holds WHERE payer = ? AND nonce = ?", key)
                .fetchone()
            )
            if row is None or row[0] == "placing":
                return None
            return NonceClaim(row[0], row[1])

        if self._write(claim):
            return NonceClaim("mine")
        # Still being placed past the wait: treated as not ours, the safe side.
        return self._wait(resolved) or NonceClaim("foreign")

    def nonce_held(self, payer: str, nonce: str, hold_id: str) -> None:
        """The ledger created ``hold_id`` for this request's claim: the facilitator's own."""
        self._resolve_nonce(payer, nonce, "placed", hold_id)

    def nonce_foreign(self, payer: str, nonce: str) -> None:
        """The ledger had the nonce (or the very hold) before this claim: never ours to capture."""
        self._resolve_nonce(payer, nonce, "foreign", None)

    def release_nonce(self, payer: str, nonce: str) -> None:
        """The ledger refused the hold (funds, signature, window): the nonce is not used."""
        self._write(
            lambda db, _: db.execute(
                "DELETE FROM facilitator_holds WHERE payer = ? AND nonce = ? AND state = 'placing'",
                (payer.lower(), nonce.lower()),
            )
        )

    def _resolve_nonce(self, payer: str, nonce: str, state: str, hold_id: str | None) -> None:
        self._write(
            lambda db, _: db.execute(
                "UPDATE facilitator_holds SET state = ?, hold_id = ? WHERE payer = ? AND nonce = ?",
                (state, hold_id, payer.lower(), nonce.lower()),
            )
        )

    # ---- 2. payment identifiers ----

    def claim_payment_id(self, payment_id: str, operation: str, digest: str) -> dict[str, Any] | None:
        """None: this request claimed ``payment_id`` and must answer it (``answered``) or give
        it back (``release_payment_id``). Otherwise the answer given first for the same request.
        Raises ``IdempotencyConflict`` when the id was used for another request."""

        def claim(db: sqlite3.Connection, now_ms: int) -> bool:
            for (stored,) in db.execute(
                "SELECT request_digest FROM facilitator_payment_ids WHERE payment_id = ?", (payment_id,)
            ):
                if stored != digest:
                    raise IdempotencyConflict(
                        "this payment identifier was already used with another payment payload",
                        payment_id=payment_id,
                    )
            if db.execute(
                "INSERT OR IGNORE INTO facilitator_payment_ids VALUES (?, ?, ?, NULL, ?)",
                (payment_id, operation, digest, now_ms),
            ).rowcount:
                return True
            return bool(
                db.execute(
                    "UPDATE facilitator_payment_ids SET claimed_at_ms = ? WHERE payment_id = ? AND operation = ?"
                    " AND answer IS NULL AND claimed_at_ms < ?",
                    (now_ms, payment_id, operation, now_ms - STALE_CLAIM_MS),
                ).rowcount
            )

        def answer() -> dict[str, Any] | None:
            row = (
                self._db()
                .execute(
                    "SELECT answer FROM facilitator_payment_ids WHERE payment_id = ? AND operation = ?",
                    (payment_id, operation),
                )
                .fetchone()
            )
            if row is None or row[0] is None:
                return None
            stored: dict[str, Any] = json.loads(row[0])
            return stored

        if self._write(claim):
            return None
        first = self._wait(answer)
        if first is None:
            raise IdempotencyConflict(
                "a request with this payment identifier is still being answered; retry later", payment_id=payment_id
            )
        return first

    def answered(self, payment_id: str, operation: str, answer: dict[str, Any]) -> None:
        text = json.dumps(answer, separators=(",", ":"))
        self._write(
            lambda db, _: db.execute(
                "UPDATE facilitator_payment_ids SET answer = ? WHERE payment_id = ? AND operation = ?",
                (text, payment_id, operation),
            )
        )

    def release_payment_id(self, payment_id: str, operation: str) -> None:
        """No answer was given (a 5xx): the next request with the id is answered afresh."""
        self._write(
            lambda db, _: db.execute(
                "DELETE FROM facilitator_payment_ids WHERE payment_id = ? AND operation = ? AND answer IS NULL",
                (payment_id, operation),
            )
        )

    # ---- SQLite ----

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def _write(self, work: Callable[[sqlite3.Connection, int], T]) -> T:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db, self.clock_ms())
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _wait(self, poll: Callable[[], T | None]) -> T | None:
        deadline = time.monotonic() + WAIT_FOR_CLAIM_MS / 1000
        pause_s = 0.002
        while True:
            found = poll()
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)

    def _migrate(self) -> None:
        def run(db: sqlite3.Connection, _: int) -> None:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

        self._write(run)

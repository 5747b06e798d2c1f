"""The facilitator's records (``FacilitatorRecordStore``) in the ledger's SQL database, on the
store's own connections: the same statements on SQLite and PostgreSQL (``ON CONFLICT DO
NOTHING`` for first-writer-wins claims), each call one short write transaction.

A concurrent twin of a claim either inserts nothing (the row exists: PostgreSQL waits for the
first writer's commit, SQLite's writers are serialized) or takes over a stale claim; a request
digest is compared after the insert, so two different requests racing for one payment id can
never both be answered from one claim. This module must never import a database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.errors import IdempotencyConflict
from ledger.storage.base import FacilitatorRecordStore
from ledger.storage.sql_rules import Executor

if TYPE_CHECKING:
    from ledger.storage.sql_store import SqlLedgerStore


class SqlFacilitatorRecords(FacilitatorRecordStore):
    def __init__(self, store: SqlLedgerStore) -> None:
        self._store = store

    def _write(self, sql: str, params: list[object]) -> int:
        statement = self._store._sql(sql)
        return int(self._store._run_write(lambda ex: ex.execute(statement, params).rowcount))

    # ---- whose hold ----

    def claim_nonce(self, payer: str, nonce: str, now_ms: int, stale_before_ms: int) -> bool:
        insert = self._store._sql(
            "INSERT INTO facilitator_holds (payer, nonce, state, hold_id, claimed_at) "
            "VALUES (?, ?, 'placing', NULL, ?) ON CONFLICT (payer, nonce) DO NOTHING"
        )
        take_over = self._store._sql(
            "UPDATE facilitator_holds SET claimed_at = ? "
            "WHERE payer = ? AND nonce = ? AND state = 'placing' AND claimed_at < ?"
        )

        def work(ex: Executor) -> bool:
            if ex.execute(insert, [payer, nonce, now_ms]).rowcount:
                return True
            return bool(ex.execute(take_over, [now_ms, payer, nonce, stale_before_ms]).rowcount)

        return bool(self._store._run_write(work))

    def nonce_state(self, payer: str, nonce: str) -> tuple[str, str | None] | None:
        row = self._store._row(
            "SELECT state, hold_id FROM facilitator_holds WHERE payer = ? AND nonce = ?", [payer, nonce]
        )
        return (str(row[0]), row[1]) if row else None

    def resolve_nonce(self, payer: str, nonce: str, state: str, hold_id: str | None) -> None:
        self._write(
            "UPDATE facilitator_holds SET state = ?, hold_id = ? WHERE payer = ? AND nonce = ?",
            [state, hold_id, payer, nonce],
        )

    def release_nonce(self, payer: str, nonce: str) -> None:
        self._write("DELETE FROM facilitator_holds WHERE payer = ? AND nonce = ? AND state = 'placing'", [payer, nonce])

    # ---- payment identifiers ----

    def claim_payment_id(self, payment_id: str, operation: str, digest: str, now_ms: int, stale_before_ms: int) -> bool:
        insert = self._store._sql(
            "INSERT INTO facilitator_payment_ids (payment_id, operation, request_digest, answer, claimed_at) "
            "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (payment_id, operation) DO NOTHING"
        )
        digests = self._store._sql("SELECT request_digest FROM facilitator_payment_ids WHERE payment_id = ?")
        take_over = self._store._sql(
            "UPDATE facilitator_payment_ids SET claimed_at = ? WHERE payment_id = ? AND operation = ? "
            "AND answer IS NULL AND claimed_at < ?"
        )

        def work(ex: Executor) -> bool:
            inserted = bool(ex.execute(insert, [payment_id, operation, digest, now_ms]).rowcount)
            # After the insert: whatever won the row (and any other operation's row) is visible now.
            if any(row[0] != digest for row in ex.execute(digests, [payment_id]).fetchall()):
                raise IdempotencyConflict(
                    "this payment identifier was already used with another payment payload", payment_id=payment_id
                )
            if inserted:
                return True
            return bool(ex.execute(take_over, [now_ms, payment_id, operation, stale_before_ms]).rowcount)

        return bool(self._store._run_write(work))

    def payment_answer(self, payment_id: str, operation: str) -> str | None:
        row = self._store._row(
            "SELECT answer FROM facilitator_payment_ids WHERE payment_id = ? AND operation = ?", [payment_id, operation]
        )
        return str(row[0]) if row and row[0] is not None else None

    def answer_payment_id(self, payment_id: str, operation: str, answer: str) -> None:
        self._write(
            "UPDATE facilitator_payment_ids SET answer = ? WHERE payment_id = ? AND operation = ?",
            [answer, payment_id, operation],
        )

    def release_payment_id(self, payment_id: str, operation: str) -> None:
        self._write(
            "DELETE FROM facilitator_payment_ids WHERE payment_id = ? AND operation = ? AND answer IS NULL",
            [payment_id, operation],
        )

    def prune(self, claimed_before_ms: int) -> int:
        holds = self._store._sql("DELETE FROM facilitator_holds WHERE claimed_at < ? AND state <> 'placing'")
        ids = self._store._sql("DELETE FROM facilitator_payment_ids WHERE claimed_at < ? AND answer IS NOT NULL")

        def work(ex: Executor) -> int:
            return int(ex.execute(holds, [claimed_before_ms]).rowcount) + int(
                ex.execute(ids, [claimed_before_ms]).rowcount
            )

        return int(self._store._run_write(work))

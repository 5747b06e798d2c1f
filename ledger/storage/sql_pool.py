"""The compute pool's rules in SQL, written once for every SQL backend (``ledger.storage.sql_rules``
calls these for the pool's kinds, inside the same write transaction and under the same lock
order, which ``ledger.storage.postgres`` documents).

What a rule decides (is the registration in force and active, is the split priced by it and
by the fee in force, may this payee refund this much) is ``ledger.pool_state.PoolBook``'s: each
statement here reads the rows the rule needs (locked where the dialect can lock them), builds a
small book from them, asks it, and only then moves money with the same conditional statements
as every other kind. The tables (migration m006_pool / 0004_pool):

- ``providers``: each provider's registration in force (the newest in log order);
- ``provider_approvals``: the operator's newest word per provider;
- ``pool_state``: the fee in force and the pool version, one row;
- ``pool_earnings`` / ``pool_operator_fees``: running totals per provider and per fee payee;
- ``refunds_by_settle``: what each payee has refunded of each settle.

A hold closed by a split is recorded with status ``settle`` (it was captured) and the split's id
as its resolution, so every reader of holds sees it as settled.
This module must never open a connection, begin or commit, or import a database driver.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ledger.errors import IdempotencyConflict, NotFound
from ledger.pool_state import PoolBook, RegistrationInForce, SettleCredits
from ledger.pool_types import (
    PoolFee,
    PoolFeeInForce,
    ProviderApproval,
    ProviderEarnings,
    ProviderRecord,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
)
from ledger.state import LedgerState, OpenHold
from ledger.types import SETTLE_KINDS, Address, HoldResolution, Transaction, TxId

if TYPE_CHECKING:
    from ledger.storage.sql_rules import Executor, SqlRules

PROVIDER_COLUMNS = "p.address, p.registration_id, p.record, p.registered_at, p.updated_at, a.approved"
PROVIDER_SELECT = f"SELECT {PROVIDER_COLUMNS} FROM providers p LEFT JOIN provider_approvals a ON a.address = p.address"


def provider_record(row: Sequence[Any]) -> ProviderRecord:
    address, registration_id, record, registered_ms, updated_ms, approved = row
    return ProviderRecord(
        address,
        registration_id,
        ProviderRegistration.from_dict(json.loads(record)),
        bool(approved),
        int(registered_ms),
        int(updated_ms),
    )


def fee_in_force(row: Sequence[Any] | None) -> PoolFeeInForce:
    if row is None:  # pragma: no cover - the migration writes the one row
        raise NotFound("the ledger has no pool state row")
    return PoolFeeInForce(int(row[0]), int(row[1]), str(row[2]))


def earnings(row: Sequence[Any] | None) -> ProviderEarnings:
    return ProviderEarnings(*(int(v) for v in row)) if row else ProviderEarnings(0, 0, 0, 0)


class SqlPoolRules:
    def __init__(self, rules: SqlRules) -> None:
        self.rules = rules
        self.dialect = rules.dialect

    def _run(self, ex: Executor, text: str, params: Sequence[Any] = ()) -> Any:
        return ex.execute(self.dialect.sql(text), list(params))

    def apply(self, ex: Executor, tx: Transaction, tx_id: TxId, now_s: int) -> list[Address]:
        message = tx.message
        if isinstance(message, SplitSettlement):
            return self._split(ex, message, tx_id, now_s)
        if isinstance(message, ProviderRegistration):
            self.rules.use_nonce(ex, tx.signer, message.nonce, tx_id)
            self._register(ex, message, tx_id, tx.accepted_at_ms)
            return [message.provider]
        if isinstance(message, ProviderApproval):
            self.rules.use_nonce(ex, tx.signer, message.nonce, tx_id)
            self._run(
                ex,
                "INSERT INTO provider_approvals (address, approved, approval_tx) VALUES (?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET approved = excluded.approved, approval_tx = excluded.approval_tx",
                [message.provider, message.approved, tx_id],
            )
            self._bump_version(ex)
            return [message.provider]
        if isinstance(message, PoolFee):
            self.rules.use_nonce(ex, tx.signer, message.nonce, tx_id)
            self._run(
                ex,
                "UPDATE pool_state SET fee_bps = ?, flat_fee = ?, fee_id = ?, version = version + 1 WHERE id = 1",
                [message.fee_bps, message.flat_fee, tx_id],
            )
            return []
        if isinstance(message, Redeem):
            self.rules.use_nonce(ex, tx.signer, message.nonce, tx_id)
            return self._redeem(ex, message)
        assert isinstance(message, Refund)
        self.rules.use_nonce(ex, tx.signer, message.nonce, tx_id)
        return self._refund(ex, message)

    # ---- configuration ----

    def _bump_version(self, ex: Executor) -> None:
        self._run(ex, "UPDATE pool_state SET version = version + 1 WHERE id = 1")

    def _register(self, ex: Executor, reg: ProviderRegistration, tx_id: TxId, accepted_at_ms: int) -> None:
        self._run(
            ex,
            "INSERT INTO providers (address, registration_id, record, status, registered_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET registration_id = excluded.registration_id, "
            "record = excluded.record, status = excluded.status, updated_at = excluded.updated_at",
            [
                reg.provider,
                tx_id,
                json.dumps(reg.to_dict(), sort_keys=True),
                reg.status,
                accepted_at_ms,
                accepted_at_ms,
            ],
        )
        self._bump_version(ex)

    # ---- reads a rule decides on ----

    def registration(self, ex: Executor, provider: Address) -> RegistrationInForce | None:
        # Shared lock: a newer registration of this provider waits until this split commits, so
        # the split is priced by the registration in force at its place in the log.
        row = self._run(
            ex,
            f"SELECT registration_id, record, registered_at, updated_at FROM providers WHERE address = ?"
            f"{self.dialect.share_lock}",
            [provider],
        ).fetchone()
        if row is None:
            return None
        return RegistrationInForce(
            str(row[0]), ProviderRegistration.from_dict(json.loads(row[1])), int(row[2]), int(row[3])
        )

    def fee(self, ex: Executor) -> PoolFeeInForce:
        # Shared lock, for the same reason: a new pool fee waits for the splits priced by the old one.
        return fee_in_force(
            self._run(
                ex, f"SELECT fee_bps, flat_fee, fee_id FROM pool_state WHERE id = 1{self.dialect.share_lock}"
            ).fetchone()
        )

    # ---- money ----

    def _split(self, ex: Executor, split: SplitSettlement, tx_id: TxId, now_s: int) -> list[Address]:
        hold = self.rules.hold(ex, split.hold_id, lock=True)
        if hold is None:
            raise NotFound(f"no hold {split.hold_id}", hold_id=split.hold_id)
        if hold.status != "open":
            raise IdempotencyConflict(
                f"hold {hold.hold_id} was already resolved ({hold.status}, {hold.captured} captured)"
                f" by {hold.resolution_tx}",
                hold_id=hold.hold_id,
                resolution=hold.resolution_tx,
            )
        registration = self.registration(ex, split.provider)
        book = PoolBook(
            registrations={split.provider: registration} if registration is not None else {}, fee=self.fee(ex)
        )
        rules = LedgerState(
            held={hold.payer: hold.amount},
            holds={hold.hold_id: OpenHold(hold.hold_id, hold.payer, hold.payee, hold.amount, hold.expires_at_s)},
            pool=book,
        )
        rules.split_settle(split, now_s)  # raises: not in force, withdrawn, mispriced, expired, above the hold
        released = hold.amount - split.amount
        if hold.allowance_id is not None and self.dialect.row_lock:  # before the accounts: one lock order
            self._run(
                ex, f"SELECT 1 FROM allowances WHERE allowance_id = ?{self.dialect.row_lock}", [hold.allowance_id]
            )
        self.dialect.lock_accounts(ex, [hold.payer, hold.payee, split.provider])
        self._run(
            ex,
            "UPDATE holds SET status = 'settle', captured = ?, resolution_tx = ? WHERE hold_id = ? AND status = 'open'",
            [split.amount, tx_id, hold.hold_id],
        )
        self._run(
            ex,
            "UPDATE accounts SET held = held - ?, available = available + ? WHERE address = ?",
            [hold.amount, released, hold.payer],
        )
        if split.provider_amount:
            self.rules.credit(ex, split.provider, split.provider_amount)
        if split.fee:
            self.rules.credit(ex, hold.payee, split.fee)
        if hold.allowance_id is not None:
            self._run(
                ex, "UPDATE allowances SET spent = spent - ? WHERE allowance_id = ?", [released, hold.allowance_id]
            )
        self._add_earnings(ex, split.provider, calls=1, earned=split.provider_amount)
        if split.fee:
            self._run(
                ex,
                "INSERT INTO pool_operator_fees (payee, fees) VALUES (?, ?) "
                "ON CONFLICT (payee) DO UPDATE SET fees = pool_operator_fees.fees + excluded.fees",
                [hold.payee, split.fee],
            )
        return [hold.payer, hold.payee, split.provider]

    def _add_earnings(
        self, ex: Executor, address: Address, *, calls: int = 0, earned: int = 0, refunded: int = 0, redeemed: int = 0
    ) -> None:
        self._run(
            ex,
            "INSERT INTO pool_earnings (address, calls, earned, refunded, redeemed) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (address) DO UPDATE SET calls = pool_earnings.calls + excluded.calls, "
            "earned = pool_earnings.earned + excluded.earned, refunded = pool_earnings.refunded + excluded.refunded, "
            "redeemed = pool_earnings.redeemed + excluded.redeemed",
            [address, calls, earned, refunded, redeemed],
        )

    def _redeem(self, ex: Executor, redeem: Redeem) -> list[Address]:
        # Supply before accounts (the lock order); a redeem can never take redeemed past minted,
        # since no balance exceeds what is in circulation (and the CHECK says so last).
        self._run(ex, "UPDATE supply SET redeemed = redeemed + ? WHERE id = 1", [redeem.value])
        self.dialect.lock_accounts(ex, [redeem.from_])
        self.rules.debit(ex, redeem.from_, redeem.value, to_held=False)
        self._add_earnings(ex, redeem.from_, redeemed=redeem.value)
        return [redeem.from_]

    def settle_credits(self, ex: Executor, settle_id: TxId, refunder: Address) -> SettleCredits:
        """What the settle ``settle_id`` credited, from its record and its hold (locked: refunds of
        one settle take turns), with what ``refunder`` has refunded of it so far."""
        settle = self.rules.get(ex, settle_id)
        if settle is None or settle.tx.kind not in SETTLE_KINDS:
            raise NotFound(f"no settle {settle_id}", settle_id=settle_id)
        message = settle.tx.message
        assert isinstance(message, SplitSettlement | HoldResolution)
        hold = self.rules.hold(ex, message.hold_id, lock=True)
        if hold is None:  # pragma: no cover - a settle's hold row is never deleted
            raise NotFound(f"settle {settle_id} names a hold the ledger lacks", settle_id=settle_id)
        book = PoolBook()
        if isinstance(message, SplitSettlement):
            parts = [(message.provider, message.provider_amount), (hold.payee, message.fee)]
        else:
            parts = [(hold.payee, message.amount)]
        book.record_settle(settle_id, hold.payer, parts)
        row = self._run(
            ex, "SELECT refunded FROM refunds_by_settle WHERE settle_id = ? AND address = ?", [settle_id, refunder]
        ).fetchone()
        credits = book.settles[settle_id]
        return SettleCredits(credits.payer, credits.credited, {refunder: int(row[0])} if row else {})

    def _refund(self, ex: Executor, refund: Refund) -> list[Address]:
        credits = self.settle_credits(ex, refund.settle_id, refund.from_)
        PoolBook(settles={refund.settle_id: credits}).check_refund(refund)  # raises: not a payee, too much
        credited = credits.credited[refund.from_]
        self.dialect.lock_accounts(ex, [refund.from_, credits.payer])
        self.rules.debit(ex, refund.from_, refund.value, to_held=False)
        self.rules.credit(ex, credits.payer, refund.value)
        self._run(
            ex,
            "INSERT INTO refunds_by_settle (settle_id, address, credited, refunded) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (settle_id, address) DO UPDATE SET refunded = refunds_by_settle.refunded + excluded.refunded",
            [refund.settle_id, refund.from_, credited, refund.value],
        )
        self._add_earnings(ex, refund.from_, refunded=refund.value)
        return [refund.from_, credits.payer]

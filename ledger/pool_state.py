"""The compute pool's part of the ledger's state: who is registered, approved, at what fee, and
what each settle credited (for refunds), as a pure in-memory book.

``PoolBook`` decides the pool's stateful rules (the registration and fee a split must name and
be priced by; who may refund how much of a settle) and keeps the totals the ledger answers
(earnings, operator fees, the pool version). ``ledger.state.LedgerState`` holds one and moves
the money; the SQL stores build a small one from the rows a rule needs and ask it, so the
model, the auditor and both backends share one implementation of every rule.
This module must never perform I/O.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace

from ledger.errors import (
    FeeNotInForce,
    NotAPayee,
    NotFound,
    ProviderWithdrawn,
    RefundExceedsCredit,
    RegistrationNotInForce,
    SplitMispriced,
)
from ledger.pool import pool_fee_amount, provider_price
from ledger.pool_types import (
    NO_POOL_FEE,
    PoolFee,
    PoolFeeInForce,
    ProviderApproval,
    ProviderEarnings,
    ProviderRegistration,
    Refund,
    SplitSettlement,
)
from ledger.pool_validation import check_split
from ledger.types import Address, TxId


@dataclass(frozen=True)
class RegistrationInForce:
    registration_id: TxId
    registration: ProviderRegistration
    registered_at_ms: int  # the provider's first registration
    updated_at_ms: int  # this one


@dataclass(frozen=True)
class SettleCredits:
    """What one settle (or split settle) credited, to whom, and what each has refunded of it."""

    payer: Address
    credited: dict[Address, int]  # only payees credited more than 0
    refunded: dict[Address, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """Compact text, for the auditor's disk-backed book (``ledger.audit.disk_set.DiskMap``)."""
        return json.dumps([self.payer, self.credited, self.refunded], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SettleCredits:
        payer, credited, refunded = json.loads(text)
        return cls(payer, credited, refunded)


@dataclass
class Earnings:
    calls: int = 0
    earned: int = 0
    refunded: int = 0
    redeemed: int = 0

    def frozen(self) -> ProviderEarnings:
        return ProviderEarnings(self.calls, self.earned, self.refunded, self.redeemed)


def _settle_book() -> MutableMapping[TxId, SettleCredits]:
    return {}


@dataclass
class PoolBook:
    registrations: dict[Address, RegistrationInForce] = field(default_factory=dict)
    approvals: dict[Address, bool] = field(default_factory=dict)
    fee: PoolFeeInForce = NO_POOL_FEE
    # One entry per settle ever: the auditor passes a disk-backed mapping, so its memory stays flat.
    settles: MutableMapping[TxId, SettleCredits] = field(default_factory=_settle_book)
    earnings: dict[Address, Earnings] = field(default_factory=dict)
    operator_fees: int = 0
    fees_by_payee: dict[Address, int] = field(default_factory=dict)
    # (settle id, payee) -> (credited, refunded so far), for the settles someone refunded (few).
    refunds: dict[tuple[TxId, Address], tuple[int, int]] = field(default_factory=dict)
    version: int = 0  # changes with every registration, approval and fee (``Ledger.pool_version``)

    # ---- configuration entries ----

    def register(self, tx_id: TxId, reg: ProviderRegistration, accepted_at_ms: int) -> None:
        previous = self.registrations.get(reg.provider)
        first_ms = previous.registered_at_ms if previous is not None else accepted_at_ms
        self.registrations[reg.provider] = RegistrationInForce(tx_id, reg, first_ms, accepted_at_ms)
        self.version += 1

    def approve(self, approval: ProviderApproval) -> None:
        self.approvals[approval.provider] = approval.approved
        self.version += 1

    def set_fee(self, tx_id: TxId, fee: PoolFee) -> None:
        self.fee = PoolFeeInForce(fee.fee_bps, fee.flat_fee, tx_id)
        self.version += 1

    # ---- the rules ----

    def check_split(self, split: SplitSettlement) -> None:
        """A split names the provider's registration in force (active), is priced by it for the
        usage it records, and carries the fee in force on that price. Raises the first broken."""
        check_split(split)
        held = self.registrations.get(split.provider)
        if held is None:
            raise RegistrationNotInForce(
                f"{split.provider} has no registration", provider=split.provider, registration_id=split.registration_id
            )
        if held.registration_id != split.registration_id:
            raise RegistrationNotInForce(
                f"registration {split.registration_id} of {split.provider} is not in force ({held.registration_id} is)",
                provider=split.provider,
                registration_id=split.registration_id,
                in_force=held.registration_id,
            )
        if held.registration.status != "active":
            raise ProviderWithdrawn(
                f"{split.provider} withdrew its registration",
                provider=split.provider,
                registration_id=held.registration_id,
            )
        price = provider_price(held.registration, split.input_tokens, split.output_tokens)
        if split.provider_amount != price:
            raise SplitMispriced(
                f"the provider's price for {split.input_tokens} input and {split.output_tokens} output tokens"
                f" is {price}, the split pays {split.provider_amount}",
                expected=str(price),
                provider_amount=str(split.provider_amount),
            )
        if split.fee_id != self.fee.fee_id:
            raise FeeNotInForce(
                f"the split names pool fee {split.fee_id}, {self.fee.fee_id} is in force",
                fee_id=split.fee_id,
                in_force=self.fee.fee_id,
            )
        fee = pool_fee_amount(self.fee, split.provider_amount)
        if split.fee != fee:
            raise SplitMispriced(
                f"the pool fee on {split.provider_amount} is {fee}, the split takes {split.fee}",
                expected=str(fee),
                fee=str(split.fee),
            )

    def check_refund(self, refund: Refund) -> SettleCredits:
        """The settle it names exists and credited ``refund.from_``, who has not refunded more
        than that in total; returns the settle's credits."""
        credits = self.settles.get(refund.settle_id)
        if credits is None:
            raise NotFound(f"no settle {refund.settle_id}", settle_id=refund.settle_id)
        credited = credits.credited.get(refund.from_, 0)
        if credited == 0:
            raise NotAPayee(
                f"settle {refund.settle_id} credited nothing to {refund.from_}",
                settle_id=refund.settle_id,
                address=refund.from_,
            )
        already = credits.refunded.get(refund.from_, 0)
        if already + refund.value > credited:
            raise RefundExceedsCredit(
                f"settle {refund.settle_id} credited {refund.from_} {credited}, {already} refunded already;"
                f" {refund.value} more is too much",
                settle_id=refund.settle_id,
                credited=str(credited),
                refunded=str(already),
                requested=str(refund.value),
            )
        return credits

    # ---- what accepted entries record ----

    def record_settle(self, settle_id: TxId, payer: Address, credits: list[tuple[Address, int]]) -> None:
        credited: dict[Address, int] = {}
        for address, amount in credits:
            if amount:
                credited[address] = credited.get(address, 0) + amount
        self.settles[settle_id] = SettleCredits(payer, credited)

    def record_split(self, split: SplitSettlement, payee: Address) -> None:
        earnings = self.earnings.setdefault(split.provider, Earnings())
        earnings.calls += 1
        earnings.earned += split.provider_amount
        self.operator_fees += split.fee
        if split.fee:
            self.fees_by_payee[payee] = self.fees_by_payee.get(payee, 0) + split.fee

    def record_refund(self, refund: Refund, credits: SettleCredits) -> None:
        refunded = {**credits.refunded, refund.from_: credits.refunded.get(refund.from_, 0) + refund.value}
        self.settles[refund.settle_id] = replace(credits, refunded=refunded)
        self.refunds[(refund.settle_id, refund.from_)] = (credits.credited[refund.from_], refunded[refund.from_])
        self.earnings.setdefault(refund.from_, Earnings()).refunded += refund.value

    def record_redeem(self, address: Address, value: int) -> None:
        self.earnings.setdefault(address, Earnings()).redeemed += value

    def earnings_of(self, address: Address) -> ProviderEarnings:
        found = self.earnings.get(address)
        return found.frozen() if found is not None else ProviderEarnings(0, 0, 0, 0)

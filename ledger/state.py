"""The ledger's rules as a pure in-memory state machine.

``LedgerState.apply`` says what a valid transaction does to balances, holds and supply, and
raises when it may not happen (overspend, a hold resolved twice or above its amount). The
chain auditor replays history through it, and the Hypothesis model in the tests drives it next
to the real store; the store enforces the same rules in SQL. It holds open holds, not closed
ones, so memory follows the live state of the ledger, not the length of its history; the one
exception, what each settle credited (refunds may name any settle ever), lives in the pool's book
(``ledger.pool_state``), which the auditor keeps on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.clock import ms_to_s
from ledger.errors import (
    AllowanceExhausted,
    AllowanceExpired,
    HoldNotOpen,
    InsufficientFunds,
    NotFound,
    SettleExceedsHold,
)
from ledger.pool_state import PoolBook
from ledger.types import (
    Address,
    Allowance,
    Authorization,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
    Transaction,
    TxId,
)


@dataclass(frozen=True)
class OpenHold:
    hold_id: TxId
    payer: Address
    payee: Address
    amount: int
    expires_at_s: int  # seconds
    allowance_id: TxId | None = None  # set when an API-key charge (not a signed authorization) placed it


@dataclass
class AllowanceState:
    owner: Address
    spender: Address
    cap: int
    valid_before: int  # seconds
    spent: int = 0


@dataclass
class LedgerState:
    available: dict[Address, int] = field(default_factory=dict)
    held: dict[Address, int] = field(default_factory=dict)
    holds: dict[TxId, OpenHold] = field(default_factory=dict)
    allowances: dict[TxId, AllowanceState] = field(default_factory=dict)
    supply: int = 0  # in circulation: minted less redeemed
    pool: PoolBook = field(default_factory=PoolBook)  # providers, the fee, settles' credits (ledger.pool_state)

    def _debit(self, address: Address, amount: int) -> None:
        have = self.available.get(address, 0)
        if have < amount:
            raise InsufficientFunds(
                f"{address} has {have} available, needs {amount}",
                address=address,
                available=str(have),
                needed=str(amount),
            )
        self.available[address] = have - amount

    def _credit(self, address: Address, amount: int) -> None:
        self.available[address] = self.available.get(address, 0) + amount

    def apply(self, tx: Transaction, tx_id: TxId) -> None:
        """Apply an already-validated transaction; raise (changing nothing) if the rules forbid it."""
        message = tx.message
        if isinstance(message, Mint):
            self._credit(message.to, message.value)
            self.supply += message.value
        elif isinstance(message, Authorization) and tx.kind == "transfer":
            self._debit(message.from_, message.value)
            self._credit(message.to, message.value)
        elif isinstance(message, Authorization):  # hold
            assert tx.hold_expires_at_s is not None
            self._hold(tx_id, message.from_, message.to, message.value, tx.hold_expires_at_s)
        elif isinstance(message, Permit2Authorization):  # permit2_hold: up to the permitted amount
            assert tx.hold_expires_at_s is not None
            self._hold(tx_id, message.from_, message.to, message.amount, tx.hold_expires_at_s)
        elif isinstance(message, HoldResolution):
            self.resolve(message, ms_to_s(tx.accepted_at_ms), tx_id)
        elif isinstance(message, SplitSettlement):
            self.split_settle(message, ms_to_s(tx.accepted_at_ms), tx_id)
        elif isinstance(message, ProviderRegistration):
            self.pool.register(tx_id, message, tx.accepted_at_ms)
        elif isinstance(message, ProviderApproval):
            self.pool.approve(message)
        elif isinstance(message, PoolFee):
            self.pool.set_fee(tx_id, message)
        elif isinstance(message, Redeem):
            self.redeem(message)
        elif isinstance(message, Refund):
            self.refund(message)
        elif isinstance(message, Allowance):
            self.allowances[tx_id] = AllowanceState(message.owner, message.spender, message.cap, message.valid_before)
        elif isinstance(message, Charge):
            assert tx.hold_expires_at_s is not None
            allowance = self.charge(message, ms_to_s(tx.accepted_at_ms))
            self.held[allowance.owner] = self.held.get(allowance.owner, 0) + message.amount
            self.holds[tx_id] = OpenHold(
                tx_id, allowance.owner, allowance.spender, message.amount, tx.hold_expires_at_s, message.allowance_id
            )

    def _hold(self, tx_id: TxId, payer: Address, payee: Address, amount: int, expires_at_s: int) -> None:
        self._debit(payer, amount)
        self.held[payer] = self.held.get(payer, 0) + amount
        self.holds[tx_id] = OpenHold(tx_id, payer, payee, amount, expires_at_s)

    def charge(self, charge: Charge, now_seconds: int) -> AllowanceState:
        """Reserve ``charge.amount`` of an allowance and of its owner's balance (the caller records
        the hold): before the allowance's expiry, within its cap, within the owner's balance."""
        allowance = self.allowances.get(charge.allowance_id)
        if allowance is None:
            raise NotFound(f"no allowance {charge.allowance_id}", allowance_id=charge.allowance_id)
        if now_seconds >= allowance.valid_before:
            raise AllowanceExpired(
                f"allowance {charge.allowance_id} expired at {allowance.valid_before}",
                allowance_id=charge.allowance_id,
            )
        if allowance.spent + charge.amount > allowance.cap:
            raise AllowanceExhausted(
                f"allowance {charge.allowance_id} has {allowance.cap - allowance.spent} left, needs {charge.amount}",
                allowance_id=charge.allowance_id,
                remaining=str(allowance.cap - allowance.spent),
                needed=str(charge.amount),
            )
        self._debit(allowance.owner, charge.amount)
        allowance.spent += charge.amount
        return allowance

    def _closable(self, hold_id: TxId, outcome: str, amount: int, now_seconds: int) -> OpenHold:
        """The open hold ``hold_id``, if ``outcome`` may close it now capturing ``amount``."""
        hold = self.holds.get(hold_id)
        if hold is None:
            raise HoldNotOpen(f"hold {hold_id} is not open", hold_id=hold_id)
        expired = now_seconds >= hold.expires_at_s
        if outcome == "expire" and not expired:
            raise HoldNotOpen(f"hold {hold.hold_id} expires at {hold.expires_at_s}, not yet", hold_id=hold.hold_id)
        if outcome == "settle" and expired:
            raise HoldNotOpen(f"hold {hold.hold_id} expired at {hold.expires_at_s}", hold_id=hold.hold_id)
        if amount > hold.amount:
            raise SettleExceedsHold(
                f"cannot capture {amount} from a hold of {hold.amount}",
                hold_id=hold.hold_id,
                held=str(hold.amount),
                requested=str(amount),
            )
        return hold

    def _close(self, hold: OpenHold, captured: int) -> None:
        """Close ``hold``: what is not captured goes back to the payer (the caller credits the rest)."""
        del self.holds[hold.hold_id]
        if hold.allowance_id is not None:  # what is not captured goes back to the allowance too
            self.allowances[hold.allowance_id].spent -= hold.amount - captured
        self.held[hold.payer] -= hold.amount
        self._credit(hold.payer, hold.amount - captured)

    def resolve(self, resolution: HoldResolution, now_seconds: int, tx_id: TxId | None = None) -> None:
        """Settle, void or expire a hold. With ``tx_id`` (the resolution's id), a settle is
        remembered as refundable by its payee."""
        hold = self._closable(resolution.hold_id, resolution.outcome, resolution.amount, now_seconds)
        self._close(hold, resolution.amount)
        if resolution.amount:
            self._credit(hold.payee, resolution.amount)
        if tx_id is not None and resolution.outcome == "settle":
            self.pool.record_settle(tx_id, hold.payer, [(hold.payee, resolution.amount)])

    def split_settle(self, split: SplitSettlement, now_seconds: int, tx_id: TxId | None = None) -> OpenHold:
        """Settle a pool call's hold: the provider's price to the provider, the fee to the hold's
        payee (the operator), the rest back to the payer; the rules are ``PoolBook.check_split``'s.
        Returns the hold it closed."""
        self.pool.check_split(split)
        hold = self._closable(split.hold_id, "settle", split.amount, now_seconds)
        self._close(hold, split.amount)
        if split.provider_amount:
            self._credit(split.provider, split.provider_amount)
        if split.fee:
            self._credit(hold.payee, split.fee)
        self.pool.record_split(split, hold.payee)
        if tx_id is not None:
            self.pool.record_settle(
                tx_id, hold.payer, [(split.provider, split.provider_amount), (hold.payee, split.fee)]
            )
        return hold

    def redeem(self, redeem: Redeem) -> None:
        """Burn ``value`` of the holder's available balance: it leaves circulation."""
        self._debit(redeem.from_, redeem.value)
        self.supply -= redeem.value
        self.pool.record_redeem(redeem.from_, redeem.value)

    def refund(self, refund: Refund) -> None:
        """Give back (part of) what a settle credited ``from_`` to that settle's payer."""
        credits = self.pool.check_refund(refund)
        self._debit(refund.from_, refund.value)
        self._credit(credits.payer, refund.value)
        self.pool.record_refund(refund, credits)

    def total(self) -> int:
        return sum(self.available.values()) + sum(self.held.values())

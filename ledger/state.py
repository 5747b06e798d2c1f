"""The ledger's rules as a pure in-memory state machine.

``LedgerState.apply`` says what a valid transaction does to balances, holds and supply, and
raises when it may not happen (overspend, a hold resolved twice or above its amount). The
chain auditor replays history through it, and the Hypothesis model in the tests drives it next
to the real store; the store enforces the same rules in SQL. It holds open holds, not closed
ones, so memory follows the live state of the ledger, not the length of its history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.errors import HoldNotOpen, InsufficientFunds, SettleExceedsHold
from ledger.types import Address, Authorization, HoldResolution, Mint, Transaction, TxId


@dataclass(frozen=True)
class OpenHold:
    hold_id: TxId
    payer: Address
    payee: Address
    amount: int
    expires_at: int  # seconds


@dataclass
class LedgerState:
    available: dict[Address, int] = field(default_factory=dict)
    held: dict[Address, int] = field(default_factory=dict)
    holds: dict[TxId, OpenHold] = field(default_factory=dict)
    supply: int = 0

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
            assert tx.hold_expires_at is not None
            self._debit(message.from_, message.value)
            self.held[message.from_] = self.held.get(message.from_, 0) + message.value
            self.holds[tx_id] = OpenHold(tx_id, message.from_, message.to, message.value, tx.hold_expires_at)
        elif isinstance(message, HoldResolution):
            self.resolve(message, tx.accepted_at // 1000)

    def resolve(self, resolution: HoldResolution, now_seconds: int) -> None:
        hold = self.holds.get(resolution.hold_id)
        if hold is None:
            raise HoldNotOpen(f"hold {resolution.hold_id} is not open", hold_id=resolution.hold_id)
        expired = now_seconds >= hold.expires_at
        if resolution.outcome == "expire" and not expired:
            raise HoldNotOpen(
                f"hold {hold.hold_id} expires at {hold.expires_at}, not yet", hold_id=hold.hold_id
            )
        if resolution.outcome == "settle" and expired:
            raise HoldNotOpen(f"hold {hold.hold_id} expired at {hold.expires_at}", hold_id=hold.hold_id)
        if resolution.amount > hold.amount:
            raise SettleExceedsHold(
                f"cannot capture {resolution.amount} from a hold of {hold.amount}",
                hold_id=hold.hold_id,
                held=str(hold.amount),
                requested=str(resolution.amount),
            )
        del self.holds[hold.hold_id]
        self.held[hold.payer] -= hold.amount
        self._credit(hold.payer, hold.amount - resolution.amount)
        if resolution.amount:
            self._credit(hold.payee, resolution.amount)

    def total(self) -> int:
        return sum(self.available.values()) + sum(self.held.values())

"""A stateful Hypothesis model of the ledger: a real ``Ledger`` on SQLite next to ``LedgerState``.

Hypothesis drives random sequences of mints, transfers, holds (EIP-3009 and x402 upto's
Permit2), settles, voids, clock moves, expiries, seals, retries, reused nonces and forged
permits against the real ledger, and the compute pool's entries: provider registrations
(updates and withdrawals), approvals, pool fees, split settles, refunds and redeems. The test
predicts each outcome on its own (accepted, duplicate, or which error) and feeds every accepted transaction to the pure
``LedgerState`` model. After every step the stored balances must equal the model's, none may be
negative, available + held must sum to the supply and to everything minted less everything
redeemed, every hold must be resolved at most once, and the pool's records (providers in force,
earnings, operator fees) must equal the model's. A refused step must leave the database byte-for-byte unchanged, and
at the end the chain auditor, replaying everything from genesis, must find no problem.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.amounts import MAX_AMOUNT
from ledger.audit import audit
from ledger.clock import s_to_ms
from ledger.crypto import sign_digest
from ledger.encoding import signing_digest, transaction_id
from ledger.errors import (
    FeeNotInForce,
    HighSSignature,
    HoldNotOpen,
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    InvalidSignature,
    NonceReused,
    NotAPayee,
    NotFound,
    ProviderWithdrawn,
    RefundExceedsCredit,
    RegistrationNotInForce,
    SettleExceedsHold,
    WrongDomain,
)
from ledger.ledger import TxResult
from ledger.pool import split_amounts
from ledger.state import LedgerState
from ledger.types import Authorization, HoldResolution, Permit2Authorization, SplitSettlement, Transaction
from tests.support.ledger import UNIT, FakeClock, dump, make_ledger
from tests.support.pool import redeem, refund, register
from tests.support.signatures import high_s_twin

PARTIES = ("alice", "bob", "carol")
PROVIDERS = ("alice", "dave")  # a payer who is also a provider, and a provider who only earns
START = 1_700_000_000  # a whole second, so signed windows and the ledger's clock agree exactly

party_index = st.integers(0, len(PARTIES) - 1)
other_offset = st.integers(1, len(PARTIES) - 1)
pick = st.integers(0, 2**16)  # an index into a list that grows, taken modulo its length
# How much to move, relative to what the payer has: part of it, all of it, or more than it.
spend = st.tuples(st.sampled_from(["part", "all", "over"]), st.integers(1, 100))
# How much of a hold to capture: part of it (zero included), all of it, or more than it.
capture = st.tuples(st.sampled_from(["part", "all", "over"]), st.integers(0, 100))


@dataclass(frozen=True)
class HoldInfo:
    payer: str
    payee: str
    amount: int
    expires_at_s: int


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="inferpay-model-"))
        self.lf = make_ledger(self.directory, FakeClock(s_to_ms(START)))
        self.ledger = self.lf.ledger
        self.ledger.block_max_txs = 4  # so seals sometimes leave transactions waiting
        self.store = self.ledger.store
        self.addresses = [self.lf.party(name).address for name in PARTIES]
        self.model = LedgerState()
        self.minted = 0
        self.accepted: list[Transaction] = []
        self.holds: dict[str, HoldInfo] = {}
        self.resolutions: dict[str, tuple[str, int]] = {}  # hold id -> (outcome, captured)
        self.splits: dict[str, SplitSettlement] = {}  # hold id -> the split that settled it
        self.permit2_nonces: set[tuple[str, str]] = set()  # (payer, nonce key) used by a Permit2 hold
        self.redeemed = 0
        self.settles: list[str] = []  # ids of settles and split settles, for refunds to name
        self.old_registrations: dict[str, str] = {}  # provider -> an id no longer in force

    # ---- helpers ----

    def now(self) -> int:
        return self.ledger.now_s()

    def record(self, result: TxResult) -> Transaction:
        """A newly accepted transaction: check it, then apply exactly it to the model."""
        assert not result.duplicate
        stored = self.ledger.transaction(result.tx_id)
        assert stored.tx_id == transaction_id(stored.tx) == result.tx_id
        assert stored.seq == result.seq and stored.tx.kind == result.kind
        self.model.apply(stored.tx, result.tx_id)
        self.accepted.append(stored.tx)
        return stored.tx

    def refused(self, error: type[InferpayError], action: Callable[[], object]) -> InferpayError:
        before = dump(self.lf.path)
        with pytest.raises(error) as caught:
            action()
        assert dump(self.lf.path) == before
        return caught.value

    def amount_for(self, payer: str, how: tuple[str, int]) -> int:
        have = self.model.available.get(payer, 0)
        mode, percent = how
        if mode == "part":
            return max(1, have * percent // 100)
        if mode == "all":
            return max(1, have)
        return have + percent

    def choose_hold(self, which: int) -> str:
        """Mostly an open hold (where settle, void and expiry do something), sometimes any."""
        still_open = sorted(h for h in self.holds if h not in self.resolutions)
        pool = still_open if still_open and which % 4 else sorted(self.holds)
        return pool[(which // 4) % len(pool)]

    @staticmethod
    def payment_outcome(amount: int, have: int) -> str:
        if amount > MAX_AMOUNT:  # only after the supply reached the cap: refused before funds
            return "too large"
        return "accepted" if amount <= have else "insufficient"

    def parties(self, payer: int, offset: int) -> tuple[int, str]:
        return payer, self.addresses[(payer + offset) % len(self.addresses)]

    # ---- rules ----

    @initialize(values=st.lists(st.integers(1, 1000 * UNIT), min_size=len(PARTIES), max_size=len(PARTIES)))
    def fund_everyone(self, values: list[int]) -> None:
        # Start with money everywhere, and providers in the pool, so most steps do something
        # rather than bounce.
        for to, value in enumerate(values):
            self.mint(to, value)
        for name in PROVIDERS:
            self.record(register(self.lf, self.lf.party(name), price_per_call=100)[0])

    @rule(to=party_index, value=st.integers(1, 1000 * UNIT))
    def mint(self, to: int, value: int) -> None:
        if self.minted + value > MAX_AMOUNT:
            self.refused(InvalidAmount, lambda: self.lf.mint(self.addresses[to], value))
            return
        self.record(self.lf.mint(self.addresses[to], value))
        self.minted += value

    @precondition(lambda self: 0 < self.minted < MAX_AMOUNT)
    @rule(to=party_index, over=st.booleans())
    def mint_up_to_the_supply_cap(self, to: int, over: bool) -> None:
        # Exactly the room left is accepted; one base unit more is refused.
        room = MAX_AMOUNT - self.minted
        if over:
            self.refused(InvalidAmount, lambda: self.lf.mint(self.addresses[to], room + 1))
        else:
            self.mint(to, room)

    @rule(payer=party_index, offset=other_offset, how=spend)
    def transfer(self, payer: int, offset: int, how: tuple[str, int]) -> None:
        index, payee = self.parties(payer, offset)
        party, address = self.lf.party(PARTIES[index]), self.addresses[index]
        amount = self.amount_for(address, how)
        have = self.model.available.get(address, 0)
        outcome = self.payment_outcome(amount, have)
        event(f"transfer: {outcome}")
        if outcome == "accepted":
            self.record(self.lf.transfer(party, payee, amount))
        elif outcome == "too large":
            self.refused(InvalidAmount, lambda: self.lf.transfer(party, payee, amount))
        else:
            error = self.refused(InsufficientFunds, lambda: self.lf.transfer(party, payee, amount))
            assert error.details == {"address": address, "available": str(have), "needed": str(amount)}

    @rule(
        payer=party_index,
        offset=other_offset,
        how=spend,
        ttl=st.integers(1, 60),
        expires_in=st.none() | st.integers(1, 90),
    )
    def hold(self, payer: int, offset: int, how: tuple[str, int], ttl: int, expires_in: int | None) -> None:
        index, payee = self.parties(payer, offset)
        party, address = self.lf.party(PARTIES[index]), self.addresses[index]
        amount = self.amount_for(address, how)
        auth, signature = self.lf.authorization(party, payee, amount, ttl=ttl)
        expires_at_s = None if expires_in is None else self.now() + expires_in
        outcome = self.payment_outcome(amount, self.model.available.get(address, 0))
        event(f"hold: {outcome}")
        if outcome != "accepted":
            error = InvalidAmount if outcome == "too large" else InsufficientFunds
            self.refused(error, lambda: self.ledger.hold(auth, signature, expires_at_s=expires_at_s))
            return
        tx = self.record(self.ledger.hold(auth, signature, expires_at_s=expires_at_s))
        expected_expiry = auth.valid_before if expires_at_s is None else min(expires_at_s, auth.valid_before)
        assert tx.hold_expires_at_s == expected_expiry
        hold_id = transaction_id(tx)
        self.holds[hold_id] = HoldInfo(address, payee, amount, expected_expiry)

    @rule(
        payer=party_index,
        offset=other_offset,
        how=spend,
        ttl=st.integers(1, 60),
        expires_in=st.none() | st.integers(1, 90),
        nonce=st.integers(0, 2**256 - 1) | st.integers(0, 3),
    )
    def permit2_hold(
        self, payer: int, offset: int, how: tuple[str, int], ttl: int, expires_in: int | None, nonce: int
    ) -> None:
        """x402 upto: hold the permitted amount (settled, voided or expired like any hold)."""
        index, payee = self.parties(payer, offset)
        party, address = self.lf.party(PARTIES[index]), self.addresses[index]
        amount = self.amount_for(address, how)
        permit, signature = self.lf.permit2(party, payee, amount, ttl=ttl, nonce=nonce)
        expires_at_s = None if expires_in is None else self.now() + expires_in
        used = (address, permit.nonce_key) in self.permit2_nonces
        outcome = "reused" if used else self.payment_outcome(amount, self.model.available.get(address, 0))
        event(f"permit2_hold: {outcome}")
        if outcome != "accepted":
            error = {"reused": NonceReused, "too large": InvalidAmount, "insufficient": InsufficientFunds}[outcome]
            self.refused(error, lambda: self.ledger.hold(permit, signature, expires_at_s=expires_at_s))
            return
        tx = self.record(self.ledger.hold(permit, signature, expires_at_s=expires_at_s))
        self.permit2_nonces.add((address, permit.nonce_key))
        expected_expiry = permit.deadline if expires_at_s is None else min(expires_at_s, permit.deadline)
        assert tx.kind == "permit2_hold" and tx.hold_expires_at_s == expected_expiry
        self.holds[transaction_id(tx)] = HoldInfo(address, payee, amount, expected_expiry)

    @precondition(lambda self: any(isinstance(tx.message, Authorization) for tx in self.accepted))
    @rule(which=pick)
    def permit2_with_an_eip3009_nonces_number(self, which: int) -> None:
        """A Permit2 nonce equal, as a number, to an EIP-3009 nonce the payer used: another nonce."""
        paid = [tx.message for tx in self.accepted if isinstance(tx.message, Authorization)]
        old = paid[which % len(paid)]
        assert isinstance(old, Authorization)
        index = self.addresses.index(old.from_)
        payee = self.addresses[(index + 1) % len(self.addresses)]
        permit, signature = self.lf.permit2(self.lf.party(PARTIES[index]), payee, 1, nonce=int(old.nonce, 16))
        have = self.model.available.get(old.from_, 0)
        if (old.from_, permit.nonce_key) in self.permit2_nonces or have < 1:
            return  # drawn before (or nothing to hold): the other rules cover those outcomes
        tx = self.record(self.ledger.hold(permit, signature))
        self.permit2_nonces.add((old.from_, permit.nonce_key))
        self.holds[transaction_id(tx)] = HoldInfo(old.from_, payee, 1, permit.deadline)
        event("permit2 nonce = an EIP-3009 nonce's number: accepted")

    @rule(payer=party_index, how=st.sampled_from(["token", "spender", "facilitator", "chain", "high-s", "altered"]))
    def forged_permit2(self, payer: int, how: str) -> None:
        """A permit that is not this ledger's, or not as signed: refused, the database unchanged."""
        party = self.lf.party(PARTIES[payer])
        payee = self.addresses[(payer + 1) % len(self.addresses)]
        other = self.addresses[(payer + 2) % len(self.addresses)]
        chain = self.lf.chain
        fields: dict[str, object] = {
            "token": {"token": other},
            "spender": {"spender": other},
            "facilitator": {"facilitator": chain.operator},
            "chain": {"chain": type(chain)(**{**chain.__dict__, "chain_id": chain.chain_id + 1})},
        }.get(how, {})
        permit, signature = self.lf.permit2(party, payee, 1, **fields)  # type: ignore[arg-type]
        error: type[InferpayError] = WrongDomain if how in ("token", "spender", "facilitator") else InvalidSignature
        if how == "high-s":
            signature, error = high_s_twin(signature), HighSSignature
        elif how == "altered":
            permit = Permit2Authorization(**{**permit.__dict__, "amount": permit.amount + 1})
        self.refused(error, lambda: self.ledger.hold(permit, signature))

    @precondition(lambda self: self.holds)
    @rule(which=pick, how=capture)
    def settle(self, which: int, how: tuple[str, int]) -> None:
        hold_id = self.choose_hold(which)
        info = self.holds[hold_id]
        mode, percent = how
        if mode == "part":
            amount = info.amount * percent // 100
        elif mode == "all":
            amount = info.amount
        else:  # above the hold: often by exactly one base unit, the edge that matters
            amount = info.amount + (1 if percent < 50 else percent)
        prior = self.resolutions.get(hold_id)
        # The order the ledger decides in: the amount's range (checked before anything is
        # looked up), a known settlement, a resolved hold, expiry, the cap. (A hold a split
        # settled is resolved: a plain settle of it conflicts, whatever the amount.)
        if amount > MAX_AMOUNT:  # "over" a hold of nearly all the supply
            outcome = "invalid"
        elif prior == ("settle", amount):
            outcome = "duplicate"
        elif prior is not None:
            outcome = "conflict"
        elif self.now() >= info.expires_at_s:
            outcome = "expired"
        elif amount > info.amount:
            outcome = "exceeds"
        else:
            outcome = "accepted"
        event(f"settle: {outcome}")
        settle = lambda: self.ledger.settle(hold_id, amount)  # noqa: E731
        if outcome == "duplicate":
            self.expect_duplicate(settle)
        elif outcome == "accepted":
            result = settle()
            self.record(result)
            self.resolutions[hold_id] = ("settle", amount)
            self.settles.append(result.tx_id)
        else:
            refusal = {
                "invalid": InvalidAmount,
                "conflict": IdempotencyConflict,
                "expired": HoldNotOpen,
                "exceeds": SettleExceedsHold,
            }
            self.refused(refusal[outcome], settle)

    @precondition(lambda self: self.holds)
    @rule(which=pick)
    def void(self, which: int) -> None:
        hold_id = self.choose_hold(which)
        prior = self.resolutions.get(hold_id)
        if prior == ("void", 0):
            self.expect_duplicate(lambda: self.ledger.void(hold_id))
        elif prior is not None:
            self.refused(IdempotencyConflict, lambda: self.ledger.void(hold_id))
        else:  # a void is allowed even after expiry: it releases the same way
            self.record(self.ledger.void(hold_id))
            self.resolutions[hold_id] = ("void", 0)

    @rule(seconds=st.integers(0, 5) | st.integers(30, 120))
    def advance_clock(self, seconds: int) -> None:
        self.lf.clock.advance(seconds)

    @precondition(lambda self: self.holds)
    @rule(which=pick, early=st.booleans())
    def advance_to_an_expiry(self, which: int, early: bool) -> None:
        # Land on a hold's expiry second (or the one before): where settle flips to refused and
        # expire_holds to releasing, and where an off-by-one would hide.
        info = self.holds[self.choose_hold(which)]
        target = info.expires_at_s - 1 if early else info.expires_at_s
        if target > self.now():
            self.lf.clock.set_s(target)

    @rule()
    def expire_holds(self) -> None:
        now = self.now()
        due = {h for h, info in self.holds.items() if h not in self.resolutions and info.expires_at_s <= now}
        before = dump(self.lf.path)
        results = self.ledger.expire_holds()
        if not due:
            assert dump(self.lf.path) == before
        released = set()
        for result in results:
            tx = self.record(result)
            assert isinstance(tx.message, HoldResolution) and tx.kind == "expire"
            released.add(tx.message.hold_id)
            self.resolutions[tx.message.hold_id] = ("expire", 0)
        assert released == due and len(results) == len(due)
        event(f"expire_holds: {'released' if due else 'nothing due'}")

    @rule()
    def seal(self) -> None:
        waiting, _ = self.store.unsealed()
        head = self.ledger.head()
        block = self.ledger.seal()
        if not waiting:
            assert block is None
            return
        assert block is not None
        assert block.header.height == head.header.height + 1
        assert block.header.prev_hash == head.block_hash
        assert block.header.tx_count == min(waiting, self.ledger.block_max_txs)
        assert block.header.tree_size == head.header.tree_size + block.header.tx_count
        assert self.store.unsealed()[0] == waiting - block.header.tx_count

    @precondition(lambda self: self.accepted)
    @rule(which=pick)
    def retry(self, which: int) -> None:
        tx = self.accepted[which % len(self.accepted)]
        tx_id = transaction_id(tx)
        stored = self.ledger.transaction(tx_id)
        again = Transaction(tx.kind, tx.message, tx.signer, tx.signature, 0, tx.hold_expires_at_s)
        result = self.expect_duplicate(lambda: self.ledger.submit(again))
        assert (result.tx_id, result.seq, result.block_height) == (tx_id, stored.seq, stored.block_height)

    @precondition(lambda self: any(isinstance(tx.message, Authorization) for tx in self.accepted))
    @rule(which=pick, extra=st.integers(1, UNIT))
    def reuse_a_nonce(self, which: int, extra: int) -> None:
        paid = [tx for tx in self.accepted if isinstance(tx.message, Authorization)]
        old = paid[which % len(paid)].message
        assert isinstance(old, Authorization)
        now = self.now()
        auth = Authorization(old.from_, old.to, extra, now - 5, now + 60, old.nonce)
        payer = next(self.lf.party(n) for n, a in zip(PARTIES, self.addresses, strict=True) if a == old.from_)
        signature = sign_digest(payer.key, signing_digest(self.lf.chain, auth))
        self.refused(NonceReused, lambda: self.ledger.transfer(auth, signature))

    # ---- the compute pool ----

    @rule(
        who=st.integers(0, len(PROVIDERS) - 1),
        per_call=st.integers(0, 10_000),
        per_1k=st.tuples(st.integers(0, 100_000), st.integers(0, 100_000)),
        withdrawn=st.integers(0, 4),
    )
    def register_provider(self, who: int, per_call: int, per_1k: tuple[int, int], withdrawn: int) -> None:
        provider = self.lf.party(PROVIDERS[who])
        before = self.model.pool.registrations.get(provider.address)
        status = "withdrawn" if withdrawn == 0 else "active"
        result, _ = register(
            self.lf,
            provider,
            price_per_call=per_call,
            price_per_1k_input=per_1k[0],
            price_per_1k_output=per_1k[1],
            status=status,
        )
        self.record(result)
        if before is not None:
            self.old_registrations[provider.address] = before.registration_id
        event(f"registration: {status}{' (update)' if before else ''}")

    @rule(who=st.integers(0, len(PROVIDERS) - 1), approved=st.booleans())
    def approve_provider(self, who: int, approved: bool) -> None:
        self.record(self.ledger.approve_provider(self.lf.party(PROVIDERS[who]).address, approved))

    @rule(fee_bps=st.integers(0, 10_000) | st.sampled_from([0, 1, 10_000]), flat=st.integers(0, 5_000))
    def set_pool_fee(self, fee_bps: int, flat: int) -> None:
        self.record(self.ledger.set_pool_fee(fee_bps, flat))

    @precondition(lambda self: self.holds)
    @rule(
        which=pick,
        who=st.integers(0, len(PROVIDERS) - 1),
        usage=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)),
        stale=st.integers(0, 5),
    )
    def split_settle(self, which: int, who: int, usage: tuple[int, int], stale: int) -> None:
        hold_id = self.choose_hold(which)
        info = self.holds[hold_id]
        provider = self.lf.party(PROVIDERS[who])
        held = self.model.pool.registrations.get(provider.address)
        old = self.old_registrations.get(provider.address)
        registration_id = (
            old if (stale == 0 and old is not None) else (held.registration_id if held else "0x" + "00" * 32)
        )
        # The order the ledger decides in: the registration, the price, the hold. The same split
        # sent again (same usage, registration and fee in force: the same signed entry) is
        # answered with the first one's result, as a plain settle's retry is.
        if held is None or registration_id != held.registration_id:
            outcome = "not in force"
        elif held.registration.status != "active":
            outcome = "withdrawn"
        elif hold_id in self.resolutions:
            fee = self.model.pool.fee
            amount, provider_amount, fee_units = split_amounts(held.registration, fee, *usage)
            again = SplitSettlement(
                hold_id,
                amount,
                provider.address,
                registration_id,
                *usage,
                stale == 1,
                provider_amount,
                fee_units,
                fee.fee_id,
            )
            outcome = "duplicate" if self.splits.get(hold_id) == again else "conflict"
        elif self.now() >= info.expires_at_s:
            outcome = "expired"
        elif split_amounts(held.registration, self.model.pool.fee, *usage)[0] > info.amount:
            outcome = "exceeds"
        else:
            outcome = "accepted"
        event(f"split_settle: {outcome}")

        def split() -> TxResult:
            return self.ledger.settle_split(
                hold_id,
                provider=provider.address,
                registration_id=registration_id,
                input_tokens=usage[0],
                output_tokens=usage[1],
                usage_capped=stale == 1,
            )

        if outcome == "accepted":
            result = split()
            tx = self.record(result)
            assert isinstance(tx.message, SplitSettlement)
            self.resolutions[hold_id] = ("split", tx.message.amount)
            self.splits[hold_id] = tx.message
            self.settles.append(result.tx_id)
            return
        if outcome == "duplicate":
            self.expect_duplicate(split)
            return
        refusal: dict[str, type[InferpayError]] = {
            "not in force": RegistrationNotInForce,
            "withdrawn": ProviderWithdrawn,
            "conflict": IdempotencyConflict,
            "expired": HoldNotOpen,
            "exceeds": SettleExceedsHold,
        }
        error = self.refused(refusal[outcome], split)
        assert not isinstance(error, FeeNotInForce)

    # No precondition on there being a settle: which holds settle depends on their (random) ids,
    # and a precondition that varies between replays of one example makes Hypothesis give up.
    @rule(which=pick, who=st.integers(0, len(PARTIES) + len(PROVIDERS) - 1), payee=st.booleans(), how=spend)
    def refund(self, which: int, who: int, payee: bool, how: tuple[str, int]) -> None:
        if not self.settles:
            return
        settle_id = self.settles[which % len(self.settles)]
        credits = self.model.pool.settles[settle_id]
        names = [*PARTIES, *PROVIDERS]
        if payee and credits.credited:  # mostly someone the settle paid, sometimes anyone
            paid = sorted(credits.credited)
            names = [n for n in names if self.lf.party(n).address in paid]
        party = self.lf.party(names[who % len(names)])
        credited = credits.credited.get(party.address, 0)
        left = credited - credits.refunded.get(party.address, 0)
        mode, percent = how
        value = max(1, left * percent // 100) if mode == "part" else max(1, left) if mode == "all" else left + percent
        have = self.model.available.get(party.address, 0)
        if credited == 0:
            outcome: type[InferpayError] | None = NotAPayee
        elif value > left:
            outcome = RefundExceedsCredit
        elif value > have:
            outcome = InsufficientFunds
        else:
            outcome = None
        event(f"refund: {outcome.code if outcome else 'accepted'}")
        if outcome is None:
            self.record(refund(self.lf, party, settle_id, value))
        else:
            self.refused(outcome, lambda: refund(self.lf, party, settle_id, value))

    @precondition(lambda self: self.holds)
    @rule(which=pick)
    def refund_of_a_hold_is_refused(self, which: int) -> None:
        info = self.holds[self.choose_hold(which)]
        payee = next(self.lf.party(n) for n, a in zip(PARTIES, self.addresses, strict=True) if a == info.payee)
        self.refused(NotFound, lambda: refund(self.lf, payee, self.choose_hold(which), 1))

    @rule(who=party_index, how=spend)
    def redeem(self, who: int, how: tuple[str, int]) -> None:
        party, address = self.lf.party(PARTIES[who]), self.addresses[who]
        value = self.amount_for(address, how)
        outcome = self.payment_outcome(value, self.model.available.get(address, 0))
        event(f"redeem: {outcome}")
        if outcome == "accepted":
            self.record(redeem(self.lf, party, value))
            self.redeemed += value
        else:
            error = InvalidAmount if outcome == "too large" else InsufficientFunds
            self.refused(error, lambda: redeem(self.lf, party, value))

    def expect_duplicate(self, action: Callable[[], TxResult]) -> TxResult:
        before = dump(self.lf.path)
        result = action()
        assert result.duplicate
        assert dump(self.lf.path) == before
        return result

    # ---- invariants ----

    @invariant()
    def balances_match_the_model(self) -> None:
        stored = {a.address: (a.available, a.held) for a in self.store.accounts()}
        for address, (available, held) in stored.items():
            assert available >= 0 and held >= 0, address
            assert (available, held) == (
                self.model.available.get(address, 0),
                self.model.held.get(address, 0),
            ), address
        for address in set(self.model.available) | set(self.model.held):
            if self.model.available.get(address) or self.model.held.get(address):
                assert address in stored, address
        for address in self.addresses:
            account = self.ledger.balance(address)
            assert (account.available, account.held) == (
                self.model.available.get(address, 0),
                self.model.held.get(address, 0),
            )

    @invariant()
    def supply_is_conserved(self) -> None:
        total = sum(a.available + a.held for a in self.store.accounts())
        assert total == self.store.supply() == self.model.supply == self.model.total() == self.minted - self.redeemed

    @invariant()
    def the_pool_matches_the_model(self) -> None:
        pool = self.model.pool
        stored = {p.address: (p.registration_id, p.registration, p.approved) for p in self.ledger.providers()}
        assert stored == {
            a: (r.registration_id, r.registration, pool.approvals.get(a, False)) for a, r in pool.registrations.items()
        }
        assert self.ledger.pool_fee_in_force() == pool.fee
        assert self.ledger.operator_fees() == pool.operator_fees
        for name in set(PROVIDERS) | set(PARTIES):
            address = self.lf.party(name).address
            assert self.ledger.provider_earnings(address) == pool.earnings_of(address)

    @invariant()
    def each_hold_is_resolved_at_most_once(self) -> None:
        open_ids = {h.hold_id for h in self.store.open_holds()}
        assert open_ids == set(self.model.holds) == set(self.holds) - set(self.resolutions)
        for hold_id, (outcome, captured) in self.resolutions.items():
            row = self.store.hold(hold_id)
            assert row is not None
            assert (row.status, row.captured) == ("settle" if outcome == "split" else outcome, captured)
        resolved = Counter(
            record["message"]["holdId"]
            for record in (json.loads(raw.record) for raw in self.store.iter_raw_transactions())
            if record["kind"] in ("settle", "split_settle", "void", "expire")
        )
        assert set(resolved) == set(self.resolutions)
        assert all(count == 1 for count in resolved.values())

    def teardown(self) -> None:
        try:
            report = audit(self.store)
            assert report.ok, [str(p) for p in report.problems]
            self.ledger.seal_all()
            report = audit(self.store)
            assert report.ok, [str(p) for p in report.problems]
            assert report.transactions == len(self.accepted)
        finally:
            self.lf.close()
            shutil.rmtree(self.directory, ignore_errors=True)


LedgerModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerModel = LedgerModel.TestCase
# Past the suite's 300 s timeout: a failure's shrinking stops at Hypothesis's own 300 s cap and
# is then reported. Under the suite's timeout, CI once showed only "Timeout" and a flaky-strategy
# error, not the two model gaps Hypothesis had found (a settle above 2**63-1; a split resent).
pytestmark = pytest.mark.timeout(480)

"""The ledger's behaviour as its users rely on it, through ``ledger.ledger.Ledger`` on real SQLite.

Money is checked in exact base units. Every refused input is checked twice: it raises the
specific error a caller can act on, and the database is byte-for-byte what it was before
(``dump``), because a refusal that half-applied would be worse than no refusal at all.
The last section keeps, as regressions, the ledger bugs found while these tests were written.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from ledger.amounts import MAX_AMOUNT
from ledger.audit import audit
from ledger.crypto import SECP256K1_N, KeySigner, sign_digest
from ledger.encoding import signing_digest, transaction_id
from ledger.errors import (
    AuthorizationExpired,
    HighSSignature,
    HoldNotOpen,
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    InvalidSignature,
    MalformedRecord,
    NonceReused,
    NotFound,
    NotYetValid,
    SettleExceedsHold,
    Unauthorized,
)
from ledger.ledger import TxResult
from ledger.types import Authorization, HoldResolution, Mint, Transaction
from tests.support.ledger import UNIT, LedgerFixture, Party, dump

# A well-formed 65-byte signature that no key made: for inputs that cannot even be signed
# (negative amounts do not fit a uint256 word) and must be refused before any signature check.
NOBODYS_SIGNATURE = "0x" + "11" * 64 + "1b"


@pytest.fixture(autouse=True)
def _whole_second_clock(lf: LedgerFixture) -> None:
    # Start on a whole second, so "now + ttl" windows signed by the helpers land exactly on the
    # ledger's seconds and boundary tests test the boundary.
    lf.clock.set_s(lf.clock.now_s() + 1)


def now(lf: LedgerFixture) -> int:
    return lf.clock.now_s()


def refused(lf: LedgerFixture, error: type[InferpayError], action: Callable[[], object]) -> InferpayError:
    """Run ``action``, expect ``error``, and check the database did not change by one byte."""
    before = dump(lf.path)
    with pytest.raises(error) as caught:
        action()
    assert dump(lf.path) == before
    return caught.value


def funded(lf: LedgerFixture, name: str, value: int = 10 * UNIT) -> Party:
    party = lf.party(name)
    lf.mint(party.address, value)
    return party


def balances(lf: LedgerFixture, party: Party) -> tuple[int, int]:
    account = lf.ledger.balance(party.address)
    return account.available, account.held


def high_s_twin(signature: str) -> str:
    """(r, n - s, v flipped): the other encoding of the same signature, which also verifies."""
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    return "0x" + raw[:32].hex() + (SECP256K1_N - s).to_bytes(32, "big").hex() + format(55 - v, "02x")


def sealer_signed(lf: LedgerFixture, resolution: HoldResolution) -> Transaction:
    signer = KeySigner(lf.sealer_key)
    signature = signer.sign_digest(signing_digest(lf.chain, resolution))
    return Transaction(resolution.outcome, resolution, signer.address, signature)


# ---- mint, transfer, balances ----


def test_mint_credits_exact_base_units_and_supply(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    result = lf.mint(alice.address, 1_250_001)
    assert (result.kind, result.duplicate, result.block_height) == ("mint", False, None)
    assert balances(lf, alice) == (1_250_001, 0)
    lf.mint(alice.address, 1)
    assert balances(lf, alice) == (1_250_002, 0)
    assert lf.ledger.store.supply() == 1_250_002


def test_transfer_moves_exact_base_units(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    first = lf.transfer(alice, bob.address, 1)
    second = lf.transfer(alice, bob.address, 3_333_333)
    assert (first.kind, first.duplicate) == ("transfer", False)
    assert second.seq == first.seq + 1
    assert balances(lf, alice) == (10 * UNIT - 3_333_334, 0)
    assert balances(lf, bob) == (3_333_334, 0)
    assert lf.ledger.store.supply() == 10 * UNIT


def test_transfer_of_the_whole_balance_leaves_exactly_zero(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 7), lf.party("bob")
    lf.transfer(alice, bob.address, 7)
    assert balances(lf, alice) == (0, 0)
    refused(lf, InsufficientFunds, lambda: lf.transfer(alice, bob.address, 1))


def test_transfer_retry_returns_the_same_transaction_and_changes_nothing(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, 2 * UNIT)
    first = lf.ledger.transfer(auth, signature)
    before = dump(lf.path)
    retry = lf.ledger.transfer(auth, signature)
    assert dump(lf.path) == before
    assert retry == dataclasses.replace(first, duplicate=True)
    assert balances(lf, alice) == (8 * UNIT, 0)
    assert balances(lf, bob) == (2 * UNIT, 0)


def test_transfer_retry_after_the_window_closed_is_still_the_same_transaction(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=10)
    first = lf.ledger.transfer(auth, signature)
    lf.clock.advance(3600)
    before = dump(lf.path)
    assert lf.ledger.transfer(auth, signature) == dataclasses.replace(first, duplicate=True)
    assert dump(lf.path) == before


def test_mint_retry_returns_the_same_transaction(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    message = Mint(alice.address, 5 * UNIT, "0x" + secrets.token_hex(32))
    signature = sign_digest(lf.operator.key, signing_digest(lf.chain, message))
    first = lf.ledger.mint(message, signature)
    before = dump(lf.path)
    assert lf.ledger.mint(message, signature) == dataclasses.replace(first, duplicate=True)
    assert dump(lf.path) == before
    assert balances(lf, alice) == (5 * UNIT, 0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda a, lf: {"value": a.value + 1}, id="value"),
        pytest.param(lambda a, lf: {"to": lf.party("carol").address}, id="to"),
        pytest.param(lambda a, lf: {"valid_before": a.valid_before + 1}, id="validBefore"),
        pytest.param(lambda a, lf: {"valid_after": a.valid_after - 1}, id="validAfter"),
    ],
)
def test_same_nonce_with_different_fields_is_nonce_reused(
    lf: LedgerFixture, change: Callable[[Authorization, LedgerFixture], dict[str, Any]]
) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    lf.ledger.transfer(auth, signature)
    other = dataclasses.replace(auth, **change(auth, lf))
    other_signature = sign_digest(alice.key, signing_digest(lf.chain, other))
    error = refused(lf, NonceReused, lambda: lf.ledger.transfer(other, other_signature))
    assert error.details == {"signer": alice.address, "nonce": auth.nonce}


def test_a_transfer_nonce_cannot_be_reused_for_a_hold(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    lf.ledger.transfer(auth, signature)
    refused(lf, NonceReused, lambda: lf.ledger.hold(auth, signature))


def test_nonces_are_per_payer(lf: LedgerFixture) -> None:
    alice, bob, carol = funded(lf, "alice"), funded(lf, "bob"), lf.party("carol")
    nonce = "0x" + secrets.token_hex(32)
    lf.transfer(alice, carol.address, 1, nonce=nonce)
    lf.transfer(bob, carol.address, 2, nonce=nonce)
    assert balances(lf, carol) == (3, 0)


# ---- validity windows ----


@pytest.mark.parametrize("after", [0, 1, 60])
def test_not_valid_until_strictly_after_valid_after(lf: LedgerFixture, after: int) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, valid_after=now(lf) + after)
    error = refused(lf, NotYetValid, lambda: lf.ledger.transfer(auth, signature))
    assert error.details == {"valid_after": str(auth.valid_after), "now": str(now(lf))}
    lf.clock.advance(after + 1)  # the same signed authorization becomes good
    assert not lf.ledger.transfer(auth, signature).duplicate
    assert balances(lf, bob) == (UNIT, 0)


def test_expired_once_now_reaches_valid_before(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=30)
    lf.clock.advance(30)
    error = refused(lf, AuthorizationExpired, lambda: lf.ledger.transfer(auth, signature))
    assert error.details == {"valid_before": str(auth.valid_before), "now": str(now(lf))}
    lf.clock.advance(1000)
    refused(lf, AuthorizationExpired, lambda: lf.ledger.transfer(auth, signature))


def test_valid_one_second_before_valid_before(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=30)
    lf.clock.advance(29)
    lf.ledger.transfer(auth, signature)
    assert balances(lf, bob) == (UNIT, 0)


def test_an_expired_hold_authorization_is_refused(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=5)
    lf.clock.advance(5)
    refused(lf, AuthorizationExpired, lambda: lf.ledger.hold(auth, signature))


# ---- signatures ----


@pytest.mark.parametrize(
    "domain",
    [
        pytest.param(lambda chain: {"chain_id": chain.chain_id + 1}, id="other-chainId"),
        pytest.param(lambda chain: {"token_address": chain.operator}, id="other-verifyingContract"),
        pytest.param(lambda chain: {"name": "USD Coin"}, id="other-name"),
        pytest.param(lambda chain: {"version": "2"}, id="other-version"),
    ],
)
def test_signature_under_another_domain_is_invalid(lf: LedgerFixture, domain: Callable[..., dict]) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    elsewhere = dataclasses.replace(lf.chain, **domain(lf.chain))
    auth, signature = lf.authorization(alice, bob.address, UNIT, chain=elsewhere)
    refused(lf, InvalidSignature, lambda: lf.ledger.transfer(auth, signature))
    refused(lf, InvalidSignature, lambda: lf.ledger.hold(auth, signature))


def test_high_s_twin_is_refused_and_does_not_burn_the_nonce(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    refused(lf, HighSSignature, lambda: lf.ledger.transfer(auth, high_s_twin(signature)))
    assert not lf.ledger.transfer(auth, signature).duplicate
    assert balances(lf, bob) == (UNIT, 0)


def test_high_s_twin_of_a_mint_is_refused(lf: LedgerFixture) -> None:
    message = Mint(lf.party("alice").address, UNIT, "0x" + secrets.token_hex(32))
    signature = sign_digest(lf.operator.key, signing_digest(lf.chain, message))
    refused(lf, HighSSignature, lambda: lf.ledger.mint(message, high_s_twin(signature)))


def test_signature_by_another_key_claiming_from_is_invalid(lf: LedgerFixture) -> None:
    alice, bob, mallory = funded(lf, "alice"), lf.party("bob"), lf.party("mallory")
    auth, _ = lf.authorization(alice, bob.address, UNIT)
    forged = sign_digest(mallory.key, signing_digest(lf.chain, auth))
    refused(lf, InvalidSignature, lambda: lf.ledger.transfer(auth, forged))
    refused(lf, InvalidSignature, lambda: lf.ledger.hold(auth, forged))


def test_a_transfer_naming_someone_else_as_signer_is_unauthorized(lf: LedgerFixture) -> None:
    alice, bob, mallory = funded(lf, "alice"), lf.party("bob"), lf.party("mallory")
    auth, _ = lf.authorization(alice, bob.address, UNIT)
    signature = sign_digest(mallory.key, signing_digest(lf.chain, auth))
    tx = Transaction("transfer", auth, mallory.address, signature)
    refused(lf, Unauthorized, lambda: lf.ledger.submit(tx))


def test_mint_signed_by_a_non_operator_is_refused(lf: LedgerFixture) -> None:
    mallory = lf.party("mallory")
    message = Mint(mallory.address, 1000 * UNIT, "0x" + secrets.token_hex(32))
    signature = sign_digest(mallory.key, signing_digest(lf.chain, message))
    refused(lf, InvalidSignature, lambda: lf.ledger.mint(message, signature))
    error = refused(
        lf, Unauthorized, lambda: lf.ledger.submit(Transaction("mint", message, mallory.address, signature))
    )
    assert error.details == {"expected": lf.chain.operator, "signer": mallory.address}
    assert balances(lf, mallory) == (0, 0)
    assert lf.ledger.store.supply() == 0


def test_mint_signed_by_the_sealer_is_refused(lf: LedgerFixture) -> None:
    message = Mint(lf.party("alice").address, UNIT, "0x" + secrets.token_hex(32))
    signature = sign_digest(lf.sealer_key, signing_digest(lf.chain, message))
    refused(lf, InvalidSignature, lambda: lf.ledger.mint(message, signature))


def test_hold_resolution_signed_by_the_operator_is_refused(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT))
    resolution = HoldResolution(hold.tx_id, "settle", UNIT)
    signature = sign_digest(lf.operator.key, signing_digest(lf.chain, resolution))
    by_operator = Transaction("settle", resolution, lf.chain.operator, signature)
    refused(lf, Unauthorized, lambda: lf.ledger.submit(by_operator))
    forged = Transaction("settle", resolution, lf.chain.sealer, signature)
    refused(lf, InvalidSignature, lambda: lf.ledger.submit(forged))


@pytest.mark.parametrize("bad", ["twin", "garbage", "other-key"])
def test_a_retry_must_carry_a_valid_signature(lf: LedgerFixture, bad: str) -> None:
    # The id ignores the signature, so a retry is found by content alone; the answer "already
    # accepted" must still go only to someone who can sign it.
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    lf.ledger.transfer(auth, signature)
    wrong = {
        "twin": high_s_twin(signature),
        "garbage": NOBODYS_SIGNATURE,
        "other-key": sign_digest(lf.party("mallory").key, signing_digest(lf.chain, auth)),
    }[bad]
    refused(lf, InvalidSignature, lambda: lf.ledger.transfer(auth, wrong))


# ---- amounts ----


def test_insufficient_funds_says_who_has_what_and_needs_what(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 5 * UNIT), lf.party("bob")
    error = refused(lf, InsufficientFunds, lambda: lf.transfer(alice, bob.address, 5 * UNIT + 1))
    assert error.details == {
        "address": alice.address,
        "available": str(5 * UNIT),
        "needed": str(5 * UNIT + 1),
    }
    assert error.code == "insufficient_funds"


def test_insufficient_funds_for_an_account_never_seen(lf: LedgerFixture) -> None:
    nobody, bob = lf.party("nobody"), lf.party("bob")
    error = refused(lf, InsufficientFunds, lambda: lf.transfer(nobody, bob.address, 1))
    assert error.details == {"address": nobody.address, "available": "0", "needed": "1"}


def test_held_funds_are_not_available_to_spend(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 5 * UNIT), lf.party("bob")
    lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    error = refused(lf, InsufficientFunds, lambda: lf.transfer(alice, bob.address, UNIT + 1))
    assert error.details["available"] == str(UNIT)
    refused(lf, InsufficientFunds, lambda: lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT + 1)))


def _signed_or_not(key: bytes, lf: LedgerFixture, message: Authorization | Mint) -> str:
    try:
        return sign_digest(key, signing_digest(lf.chain, message))
    except OverflowError:  # a negative amount has no uint256 encoding, so no one can sign it
        return NOBODYS_SIGNATURE


@pytest.mark.parametrize("value", [0, -1, -UNIT, MAX_AMOUNT + 1, 2**64, 2**255])
def test_out_of_range_transfer_and_hold_amounts_are_refused(lf: LedgerFixture, value: int) -> None:
    alice, bob = funded(lf, "alice", MAX_AMOUNT), lf.party("bob")
    auth, _ = lf.authorization(alice, bob.address, 1)
    auth = dataclasses.replace(auth, value=value)
    signature = _signed_or_not(alice.key, lf, auth)
    refused(lf, InvalidAmount, lambda: lf.ledger.transfer(auth, signature))
    refused(lf, InvalidAmount, lambda: lf.ledger.hold(auth, signature))


@pytest.mark.parametrize("value", [0, -1, MAX_AMOUNT + 1, 2**64])
def test_out_of_range_mint_amounts_are_refused(lf: LedgerFixture, value: int) -> None:
    message = Mint(lf.party("alice").address, value, "0x" + secrets.token_hex(32))
    signature = _signed_or_not(lf.operator.key, lf, message)
    refused(lf, InvalidAmount, lambda: lf.ledger.mint(message, signature))


def test_supply_cannot_pass_2_63_minus_1(lf: LedgerFixture) -> None:
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, MAX_AMOUNT)
    refused(lf, InvalidAmount, lambda: lf.mint(bob.address, 1))
    refused(lf, InvalidAmount, lambda: lf.mint(alice.address, MAX_AMOUNT))
    assert lf.ledger.store.supply() == MAX_AMOUNT
    assert balances(lf, alice) == (MAX_AMOUNT, 0)
    assert balances(lf, bob) == (0, 0)
    lf.transfer(alice, bob.address, MAX_AMOUNT)  # the largest amount moves whole
    assert balances(lf, bob) == (MAX_AMOUNT, 0)


def test_a_settle_above_2_63_minus_1_is_an_invalid_amount_and_the_hold_stays_open(lf: LedgerFixture) -> None:
    """Found by the stateful model (CI, 2026-12-04): a settle "over" a hold of nearly the whole
    supply names more than 2**63-1. The amount's range is checked before the hold is read, so
    the answer is ``InvalidAmount`` (not ``SettleExceedsHold``), and nothing changes."""
    alice, bob = funded(lf, "alice", MAX_AMOUNT), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, MAX_AMOUNT - 10)
    hold_id = lf.ledger.hold(auth, signature).tx_id
    refused(lf, InvalidAmount, lambda: lf.ledger.settle(hold_id, MAX_AMOUNT + 45))
    refused(lf, SettleExceedsHold, lambda: lf.ledger.settle(hold_id, MAX_AMOUNT))
    assert lf.ledger.store.hold(hold_id).status == "open"
    lf.ledger.settle(hold_id, MAX_AMOUNT - 10)
    assert balances(lf, bob) == (MAX_AMOUNT - 10, 0)


def test_supply_cap_counts_every_mint(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    lf.mint(alice.address, MAX_AMOUNT - 10)
    lf.mint(alice.address, 10)
    refused(lf, InvalidAmount, lambda: lf.mint(alice.address, 1))


def test_a_payment_to_oneself_is_refused(lf: LedgerFixture) -> None:
    alice = funded(lf, "alice")
    refused(lf, InvalidInput, lambda: lf.transfer(alice, alice.address, 1))


# ---- holds ----


def test_hold_reserves_without_paying(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    assert (hold.kind, hold.duplicate) == ("hold", False)
    assert balances(lf, alice) == (6 * UNIT, 4 * UNIT)
    assert balances(lf, bob) == (0, 0)
    row = lf.ledger.store.hold(hold.tx_id)
    assert row is not None
    assert (row.payer, row.payee, row.amount, row.status) == (alice.address, bob.address, 4 * UNIT, "open")
    assert lf.ledger.store.supply() == 10 * UNIT


@pytest.mark.parametrize("captured", [0, 1, 2_500_000, 4 * UNIT - 1, 4 * UNIT])
def test_settle_captures_at_most_the_hold_and_releases_the_rest(lf: LedgerFixture, captured: int) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    result = lf.ledger.settle(hold.tx_id, captured)
    assert (result.kind, result.duplicate) == ("settle", False)
    assert balances(lf, alice) == (10 * UNIT - captured, 0)
    assert balances(lf, bob) == (captured, 0)
    row = lf.ledger.store.hold(hold.tx_id)
    assert row is not None
    assert (row.status, row.captured, row.resolution_tx) == ("settle", captured, result.tx_id)
    assert lf.ledger.store.supply() == 10 * UNIT


def test_settle_above_the_hold_is_refused_and_the_hold_stays_open(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    error = refused(lf, SettleExceedsHold, lambda: lf.ledger.settle(hold.tx_id, 4 * UNIT + 1))
    assert error.details == {"hold_id": hold.tx_id, "held": str(4 * UNIT), "requested": str(4 * UNIT + 1)}
    lf.ledger.settle(hold.tx_id, 4 * UNIT)
    assert balances(lf, bob) == (4 * UNIT, 0)


def test_settle_twice_with_the_same_amount_is_one_settlement(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    first = lf.ledger.settle(hold.tx_id, 3 * UNIT)
    before = dump(lf.path)
    again = lf.ledger.settle(hold.tx_id, 3 * UNIT)
    assert dump(lf.path) == before
    assert again == dataclasses.replace(first, duplicate=True)
    assert balances(lf, bob) == (3 * UNIT, 0)


def test_settle_then_settle_another_amount_is_an_idempotency_conflict(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    first = lf.ledger.settle(hold.tx_id, 3 * UNIT)
    error = refused(lf, IdempotencyConflict, lambda: lf.ledger.settle(hold.tx_id, 2 * UNIT))
    assert error.details == {"hold_id": hold.tx_id, "resolution": first.tx_id}
    refused(lf, IdempotencyConflict, lambda: lf.ledger.void(hold.tx_id))
    assert balances(lf, bob) == (3 * UNIT, 0)


def test_void_releases_everything_and_is_final(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    voided = lf.ledger.void(hold.tx_id)
    assert (voided.kind, voided.duplicate) == ("void", False)
    assert balances(lf, alice) == (10 * UNIT, 0)
    assert balances(lf, bob) == (0, 0)
    before = dump(lf.path)
    assert lf.ledger.void(hold.tx_id) == dataclasses.replace(voided, duplicate=True)
    assert dump(lf.path) == before
    refused(lf, IdempotencyConflict, lambda: lf.ledger.settle(hold.tx_id, 1))


def test_resolving_something_that_is_not_a_hold_is_not_found(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    transfer = lf.transfer(alice, bob.address, 1)
    refused(lf, NotFound, lambda: lf.ledger.settle(transfer.tx_id, 1))
    refused(lf, NotFound, lambda: lf.ledger.void("0x" + "ab" * 32))


def test_a_void_carrying_an_amount_is_refused(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 4 * UNIT))
    tx = sealer_signed(lf, HoldResolution(hold.tx_id, "void", UNIT))
    refused(lf, InvalidInput, lambda: lf.ledger.submit(tx))


def test_settle_after_expiry_is_refused_and_expiry_releases_once(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, 4 * UNIT, ttl=600)
    hold = lf.ledger.hold(auth, signature, expires_at_s=now(lf) + 30)
    lf.clock.advance(30)
    error = refused(lf, HoldNotOpen, lambda: lf.ledger.settle(hold.tx_id, UNIT))
    assert error.details == {"hold_id": hold.tx_id}
    assert balances(lf, alice) == (6 * UNIT, 4 * UNIT)

    released = lf.ledger.expire_holds()
    assert [r.kind for r in released] == ["expire"]
    assert balances(lf, alice) == (10 * UNIT, 0)
    assert balances(lf, bob) == (0, 0)
    row = lf.ledger.store.hold(hold.tx_id)
    assert row is not None
    assert (row.status, row.captured, row.resolution_tx) == ("expire", 0, released[0].tx_id)

    before = dump(lf.path)
    assert lf.ledger.expire_holds() == []
    assert dump(lf.path) == before
    refused(lf, IdempotencyConflict, lambda: lf.ledger.void(hold.tx_id))


def test_expire_before_expiry_does_nothing(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, 4 * UNIT, ttl=600)
    hold = lf.ledger.hold(auth, signature, expires_at_s=now(lf) + 30)
    lf.clock.advance(29)
    before = dump(lf.path)
    assert lf.ledger.expire_holds() == []
    assert dump(lf.path) == before
    early = sealer_signed(lf, HoldResolution(hold.tx_id, "expire", 0))
    refused(lf, HoldNotOpen, lambda: lf.ledger.submit(early))
    lf.ledger.settle(hold.tx_id, UNIT)  # still open, still settleable one second before expiry
    assert balances(lf, bob) == (UNIT, 0)


def test_expire_holds_releases_only_the_expired_ones(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    start = now(lf)
    ids = [
        lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT), expires_at_s=start + delay).tx_id
        for delay in (10, 20, 20, 30)
    ]
    lf.clock.advance(20)
    released = lf.ledger.expire_holds()
    resolved = [lf.ledger.transaction(r.tx_id).tx.message for r in released]
    assert sorted(m.hold_id for m in resolved if isinstance(m, HoldResolution)) == sorted(ids[:3])
    assert [r.kind for r in released] == ["expire"] * 3
    assert balances(lf, alice) == (9 * UNIT, UNIT)
    assert [h.hold_id for h in lf.ledger.store.open_holds()] == ids[3:]
    assert lf.ledger.expire_holds() == []


def test_expire_holds_respects_its_limit(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    for _ in range(3):
        lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT), expires_at_s=now(lf) + 1)
    lf.clock.advance(1)
    assert len(lf.ledger.expire_holds(limit=2)) == 2
    assert len(lf.ledger.expire_holds(limit=2)) == 1
    assert balances(lf, alice) == (10 * UNIT, 0)


def test_hold_expiry_defaults_to_valid_before(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=100)
    hold = lf.ledger.hold(auth, signature)
    row = lf.ledger.store.hold(hold.tx_id)
    assert row is not None and row.expires_at_s == auth.valid_before
    assert lf.ledger.transaction(hold.tx_id).tx.hold_expires_at_s == auth.valid_before


@pytest.mark.parametrize(("asked", "expected"), [(50, 50), (100, 100), (101, 100), (10**9, 100)])
def test_hold_expiry_is_capped_by_valid_before(lf: LedgerFixture, asked: int, expected: int) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=100)
    hold = lf.ledger.hold(auth, signature, expires_at_s=now(lf) + asked)
    row = lf.ledger.store.hold(hold.tx_id)
    assert row is not None and row.expires_at_s == now(lf) + expected


def test_a_hand_made_hold_past_valid_before_is_refused(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=100)
    tx = Transaction("hold", auth, alice.address, signature, 0, auth.valid_before + 1)
    refused(lf, InvalidInput, lambda: lf.ledger.submit(tx))


def test_a_hold_retry_is_the_same_hold(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", 10 * UNIT), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, 4 * UNIT)
    first = lf.ledger.hold(auth, signature)
    before = dump(lf.path)
    assert lf.ledger.hold(auth, signature) == dataclasses.replace(first, duplicate=True)
    assert dump(lf.path) == before
    # The same authorization held with another expiry is another transaction: the nonce says no.
    refused(lf, NonceReused, lambda: lf.ledger.hold(auth, signature, expires_at_s=auth.valid_before - 1))
    assert balances(lf, alice) == (6 * UNIT, 4 * UNIT)


# ---- transaction ids ----


def test_transaction_id_ignores_signature_and_acceptance_time(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    result = lf.ledger.transfer(auth, signature)
    stored = lf.ledger.transaction(result.tx_id).tx
    assert stored.signature == signature and stored.accepted_at_ms == lf.ledger.now_ms()
    other_signature = high_s_twin(signature)
    for variant in (
        Transaction("transfer", auth, alice.address, other_signature),
        Transaction("transfer", auth, alice.address, NOBODYS_SIGNATURE, accepted_at_ms=123),
        dataclasses.replace(stored, signature=other_signature, accepted_at_ms=stored.accepted_at_ms + 99),
    ):
        assert transaction_id(variant) == result.tx_id


def test_transaction_id_depends_on_what_was_signed(lf: LedgerFixture) -> None:
    alice, bob = lf.party("alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    transfer = Transaction("transfer", auth, alice.address, signature)
    ids = {
        transaction_id(transfer),
        transaction_id(dataclasses.replace(transfer, message=dataclasses.replace(auth, value=UNIT + 1))),
        transaction_id(dataclasses.replace(transfer, kind="hold", hold_expires_at_s=auth.valid_before)),
        transaction_id(dataclasses.replace(transfer, kind="hold", hold_expires_at_s=auth.valid_before - 1)),
    }
    assert len(ids) == 4


# ---- blocks ----


def test_seal_puts_waiting_transactions_in_the_next_block(lf: LedgerFixture) -> None:
    assert lf.ledger.seal() is None
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    transfer = lf.ledger.transfer(auth, signature)
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT))
    assert lf.ledger.store.unsealed()[0] == 3
    block = lf.ledger.seal()
    assert block is not None
    assert (block.header.height, block.header.tx_count, block.header.tree_size) == (1, 3, 3)
    assert lf.ledger.head() == block
    assert lf.ledger.store.unsealed() == (0, None)
    assert [t.tx_id for t in lf.ledger.store.block_transactions(1)][1:] == [transfer.tx_id, hold.tx_id]
    assert lf.ledger.transaction(transfer.tx_id).block_height == 1
    assert lf.ledger.transfer(auth, signature).block_height == 1
    assert lf.ledger.seal() is None


def test_seal_all_respects_the_block_size(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    for _ in range(5):
        lf.mint(alice.address, 1)
    lf.ledger.block_max_txs = 2
    blocks = lf.ledger.seal_all()
    assert [(b.header.height, b.header.tx_count, b.header.tree_size) for b in blocks] == [
        (1, 2, 2),
        (2, 2, 4),
        (3, 1, 5),
    ]


def test_maybe_seal_by_count(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    assert lf.ledger.maybe_seal(max_age_ms=60_000, max_txs=3) == []
    lf.mint(alice.address, 1)
    lf.mint(alice.address, 2)
    assert lf.ledger.maybe_seal(max_age_ms=60_000, max_txs=3) == []
    lf.mint(alice.address, 3)
    sealed = lf.ledger.maybe_seal(max_age_ms=60_000, max_txs=3)
    assert [b.header.tx_count for b in sealed] == [3]
    assert lf.ledger.maybe_seal(max_age_ms=0, max_txs=1) == []


def test_maybe_seal_by_age(lf: LedgerFixture) -> None:
    alice = lf.party("alice")
    lf.mint(alice.address, 1)
    lf.clock.advance(4)
    lf.mint(alice.address, 2)
    assert lf.ledger.maybe_seal(max_age_ms=5000, max_txs=100) == []
    lf.clock.advance(1)  # the oldest has now waited exactly 5 s
    sealed = lf.ledger.maybe_seal(max_age_ms=5000, max_txs=100)
    assert [b.header.tx_count for b in sealed] == [2]
    assert sealed[0].header.timestamp_ms == lf.ledger.now_ms()


# ---- history ----


def test_history_is_newest_first_and_pages_by_seq(lf: LedgerFixture) -> None:
    alice, bob, carol = funded(lf, "alice", 100 * UNIT), lf.party("bob"), lf.party("carol")
    mine: list[TxResult] = []
    for i in range(7):
        mine.append(lf.transfer(alice, bob.address, i + 1))
        lf.transfer(alice, carol.address, 1)  # not bob's business
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, 5))
    settle = lf.ledger.settle(hold.tx_id, 2)
    expected = [settle.seq, hold.seq, *(r.seq for r in reversed(mine))]

    store = lf.ledger.store
    assert [t.seq for t in store.history(bob.address, limit=100)] == expected
    pages: list[list[int]] = []
    before: int | None = None
    while page := store.history(bob.address, limit=3, before_seq=before):
        pages.append([t.seq for t in page])
        before = page[-1].seq
    assert pages == [expected[0:3], expected[3:6], expected[6:9]]
    assert [t.tx_id for t in store.history(bob.address, limit=1)] == [settle.tx_id]
    assert store.history(lf.party("stranger").address, limit=10) == []
    assert len(store.history(alice.address, limit=100)) == 1 + 14 + 2


# ---- edge cases found while writing these tests (each was a bug, now fixed) ----


def test_hold_with_valid_before_beyond_int64_is_handled(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT, ttl=2**64)
    before = dump(lf.path)
    try:
        result = lf.ledger.hold(auth, signature)
    except InferpayError:
        assert dump(lf.path) == before
    else:
        stored = lf.ledger.transaction(result.tx_id).tx
        assert stored.hold_expires_at_s is not None and stored.hold_expires_at_s <= MAX_AMOUNT


def test_hold_with_negative_expiry_is_refused(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    refused(lf, InvalidInput, lambda: lf.ledger.hold(auth, signature, expires_at_s=-5))


def _transfer_carrying_an_expiry(lf: LedgerFixture) -> Transaction:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    return Transaction("transfer", auth, alice.address, signature, 0, auth.valid_before)


def _mint_submitted_as_a_transfer(lf: LedgerFixture) -> Transaction:
    message = Mint(lf.party("alice").address, UNIT, "0x" + secrets.token_hex(32))
    signature = sign_digest(lf.operator.key, signing_digest(lf.chain, message))
    return Transaction("transfer", message, lf.chain.operator, signature)


def _void_submitted_as_a_settle(lf: LedgerFixture) -> Transaction:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    hold = lf.ledger.hold(*lf.authorization(alice, bob.address, UNIT))
    return dataclasses.replace(sealer_signed(lf, HoldResolution(hold.tx_id, "void", 0)), kind="settle")


def _authorization_submitted_as_a_mint(lf: LedgerFixture) -> Transaction:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    return Transaction("mint", auth, alice.address, signature)


@pytest.mark.parametrize(
    "build",
    [
        _transfer_carrying_an_expiry,
        _mint_submitted_as_a_transfer,
        _void_submitted_as_a_settle,
        _authorization_submitted_as_a_mint,
    ],
)
def test_a_kind_that_does_not_match_its_message_cannot_even_be_built(
    lf: LedgerFixture, build: Callable[[LedgerFixture], Transaction]
) -> None:
    """Transaction refuses a kind/message/expiry mismatch at construction, so no such record
    can ever reach Ledger.submit or the store."""
    with pytest.raises(MalformedRecord):
        build(lf)


# ---- batches ----


def test_a_batch_is_recorded_each_on_its_own_terms(lf: LedgerFixture) -> None:
    """submit_many: good ones recorded in order, a reused nonce, an overspend and a bad signature
    refused in their own slots, a retry answered with its first result; the books balance."""
    alice, bob = funded(lf, "alice", 3 * UNIT), lf.party("bob")
    earlier_auth, earlier_sig = lf.authorization(alice, bob.address, UNIT)
    earlier = lf.ledger.transfer(earlier_auth, earlier_sig)
    good = [lf.authorization(alice, bob.address, UNIT // 2) for _ in range(2)]
    reused = lf.authorization(alice, bob.address, 1, nonce=good[0][0].nonce)
    overspend = lf.authorization(alice, bob.address, 5 * UNIT)
    forged_auth, _ = lf.authorization(alice, bob.address, 1)
    _, other_sig = lf.authorization(bob, alice.address, 1)
    batch = [good[0], reused, overspend, (earlier_auth, earlier_sig), (forged_auth, other_sig), good[1]]
    results = lf.ledger.submit_many([Transaction("transfer", a, a.from_, s) for a, s in batch])
    assert len(results) == len(batch)
    first, again = results[0], results[5]
    assert isinstance(first, TxResult) and isinstance(again, TxResult) and again.seq == first.seq + 1
    assert isinstance(results[1], NonceReused)
    assert isinstance(results[2], InsufficientFunds)
    assert results[3] == dataclasses.replace(earlier, duplicate=True)
    assert isinstance(results[4], InvalidSignature)
    assert balances(lf, alice) == (UNIT, 0) and balances(lf, bob) == (2 * UNIT, 0)
    lf.ledger.seal_all()
    assert audit(lf.ledger.store).ok


def test_a_long_batch_verifies_every_signature_and_refuses_each_bad_one_in_its_slot(lf: LedgerFixture) -> None:
    """Past the length where submit_many verifies signatures on threads, every signature is still
    checked: a forged one, a high-S twin, one signed by the wrong key and one whose signer is not
    the payer are each refused with the error submit gives, in their own slots, and nothing of
    them is recorded; the good ones are recorded in order, and the chain audits clean."""
    from ledger import ledger as ledger_module

    alice, bob = funded(lf, "alice", 1000 * UNIT), funded(lf, "bob", 10 * UNIT)
    count = 3 * ledger_module._PARALLEL_VERIFY_AFTER
    batch = [lf.authorization(alice, bob.address, UNIT) for _ in range(count)]
    txs = [Transaction("transfer", a, a.from_, s) for a, s in batch]
    forged_auth, _ = lf.authorization(alice, bob.address, 1)
    _, bobs_sig = lf.authorization(bob, alice.address, 1)
    high_auth, high_sig = lf.authorization(alice, bob.address, 1)
    bobs_auth, bobs_own_sig = lf.authorization(bob, alice.address, 1)
    bad = {
        7: (Transaction("transfer", forged_auth, alice.address, bobs_sig), InvalidSignature),
        64: (Transaction("transfer", high_auth, alice.address, high_s_twin(high_sig)), HighSSignature),
        65: (Transaction("transfer", bobs_auth, alice.address, bobs_own_sig), Unauthorized),
        150: (Transaction("transfer", forged_auth, alice.address, NOBODYS_SIGNATURE), InvalidSignature),
    }
    for index, (tx, _) in sorted(bad.items()):
        txs.insert(index, tx)
    results = lf.ledger.submit_many(txs)
    assert len(results) == len(txs)
    for index, (_, error) in bad.items():
        assert type(results[index]) is error, (index, results[index])
    recorded = [r for r in results if isinstance(r, TxResult)]
    assert len(recorded) == count and not any(r.duplicate for r in recorded)
    assert [r.seq for r in recorded] == list(range(recorded[0].seq, recorded[0].seq + count))
    assert balances(lf, alice) == (1000 * UNIT - count * UNIT, 0) and balances(lf, bob) == (10 * UNIT + count * UNIT, 0)
    lf.ledger.seal_all()
    assert audit(lf.ledger.store).ok


def test_api_keys_of_an_owner_are_the_keys_of_the_allowances_it_signed(lf: LedgerFixture) -> None:
    from ledger.types import Allowance

    alice, bob, gateway = lf.party("alice"), lf.party("bob"), lf.party("gateway")
    store = lf.ledger.store
    granted = {}
    for who in (alice, bob, alice):
        allowance = Allowance(who.address, gateway.address, UNIT, lf.clock.now_s() + 600, "0x" + secrets.token_hex(32))
        tx = lf.ledger.grant_allowance(allowance, sign_digest(who.key, signing_digest(lf.chain, allowance))).tx_id
        prefix = f"ipk_{len(granted)}"
        store.api_keys.register(secrets.token_hex(32), prefix, tx, "", 1_700_000_000_000 + len(granted))
        granted[prefix] = who.address
    assert [k.key_prefix for k in store.api_keys.of_owner(alice.address)] == ["ipk_0", "ipk_2"]
    assert [k.allowance.owner for k in store.api_keys.of_owner(bob.address)] == [bob.address]
    assert store.api_keys.of_owner(gateway.address) == []

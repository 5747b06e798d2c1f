"""The compute pool on a real ledger (SQLite and PostgreSQL): registrations, approvals, the pool
fee, split settles, refunds and redeems, as gateways, providers and payees rely on them.

Every rule is shown to fail: each refused entry raises its specific error and leaves the
database byte-for-byte as it was (``refused``), and the auditor agrees with what was accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from ledger.audit import audit
from ledger.crypto import KeySigner
from ledger.errors import (
    FeeNotInForce,
    IdempotencyConflict,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    NonceReused,
    NotAPayee,
    NotFound,
    ProviderWithdrawn,
    RefundExceedsCredit,
    RegistrationNotInForce,
    SettleExceedsHold,
    SplitMispriced,
    Unauthorized,
)
from ledger.ledger import Ledger, TxResult
from ledger.storage import open_store
from ledger.types import NO_FEE_ID, Allowance, PoolFee, ProviderApproval, ProviderEarnings, Redeem
from tests.support.ledger import UNIT, LedgerFixture, Party, dump
from tests.support.pool import hold, new_nonce, redeem, refund, register, registration, sealer_tx, signed, split_of


@pytest.fixture(autouse=True)
def _whole_second_clock(lf: LedgerFixture) -> None:
    lf.clock.set_s(lf.clock.now_s() + 1)


def refused(lf: LedgerFixture, error: type[InferpayError], action: Callable[[], object]) -> InferpayError:
    before = dump(lf.path)
    with pytest.raises(error) as caught:
        action()
    assert dump(lf.path) == before
    return caught.value


def funded(lf: LedgerFixture, name: str, value: int = 10 * UNIT) -> Party:
    party = lf.party(name)
    lf.mint(party.address, value)
    return party


def available(lf: LedgerFixture, party: Party) -> int:
    return lf.ledger.balance(party.address).available


def assert_audit_ok(lf: LedgerFixture) -> None:
    lf.ledger.seal_all()
    report = audit(lf.ledger.store, workers=1)
    assert report.ok, [str(p) for p in report.problems]


# ---- registrations ----


def test_a_registration_is_in_force_and_a_newer_one_replaces_it(lf: LedgerFixture) -> None:
    provider = lf.party("provider")
    version = lf.ledger.pool_version()
    first, reg = register(lf, provider)
    assert first.kind == "provider_registration"
    record = lf.ledger.provider(provider.address)
    assert (record.registration_id, record.registration, record.approved) == (first.tx_id, reg, False)
    assert lf.ledger.pool_version() != version
    lf.clock.advance(5)
    second, updated = register(lf, provider, price_per_call=2000, models=("tiny-chat", "tiny-embed"))
    record = lf.ledger.provider(provider.address)
    assert (record.registration_id, record.registration) == (second.tx_id, updated)
    assert record.updated_at_ms - record.registered_at_ms == 5000
    third, _ = register(lf, provider, status="withdrawn")
    assert lf.ledger.provider(provider.address).registration.status == "withdrawn"
    assert [p.address for p in lf.ledger.providers()] == [provider.address]
    assert_audit_ok(lf)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"endpoint": "ftp://127.0.0.1/v1"}, InvalidInput),
        ({"endpoint": "http://user:pw@127.0.0.1/v1"}, InvalidInput),
        ({"endpoint": "http://127.0.0.1/v1?key=1"}, InvalidInput),
        ({"endpoint": "http://127.0.0.1/v1#frag"}, InvalidInput),
        ({"endpoint": "http://127.0.0.1:99999/v1"}, InvalidInput),
        ({"endpoint": "http:///v1"}, InvalidInput),
        ({"endpoint": "http://127.0.0.1/" + "a" * 2048}, InvalidInput),
        ({"models": ()}, InvalidInput),
        ({"models": ("a", "a")}, InvalidInput),
        ({"models": tuple(f"m{i}" for i in range(65))}, InvalidInput),
        ({"models": ("x" * 129,)}, InvalidInput),
        ({"models": ("caf\u00e9",)}, InvalidInput),
        ({"price_per_call": 2**63}, InvalidAmount),
    ],
)
def test_a_malformed_registration_is_refused(lf: LedgerFixture, fields: dict[str, object], error: type) -> None:
    provider = lf.party("provider")
    refused(lf, error, lambda: register(lf, provider, **fields))


def test_a_registration_must_be_signed_by_its_provider_and_its_nonce_used_once(lf: LedgerFixture) -> None:
    provider, mallory = lf.party("provider"), lf.party("mallory")
    reg = registration(provider)
    refused(lf, Unauthorized, lambda: lf.ledger.submit(signed(lf, "provider_registration", reg, mallory.key)))
    register(lf, provider, nonce=reg.nonce)
    refused(lf, NonceReused, lambda: register(lf, provider, nonce=reg.nonce, price_per_call=1))


def test_approvals_and_the_pool_fee_are_the_sealers_and_the_newest_is_in_force(lf: LedgerFixture) -> None:
    provider = lf.party("provider")
    register(lf, provider)
    assert lf.ledger.provider(provider.address).approved is False
    lf.ledger.approve_provider(provider.address, True)
    assert lf.ledger.provider(provider.address).approved is True
    lf.ledger.approve_provider(provider.address, False)
    assert lf.ledger.provider(provider.address).approved is False
    assert lf.ledger.pool_fee_in_force().to_dict() == {"feeBps": "0", "flatFee": "0", "feeId": NO_FEE_ID}
    result = lf.ledger.set_pool_fee(250, 7)
    assert lf.ledger.pool_fee_in_force().to_dict() == {"feeBps": "250", "flatFee": "7", "feeId": result.tx_id}
    operator = KeySigner(lf.operator.key)
    approval = ProviderApproval(provider.address, True, new_nonce())
    refused(lf, Unauthorized, lambda: lf.ledger.submit(signed(lf, "provider_approval", approval, lf.operator.key)))
    assert operator.address == lf.chain.operator
    refused(lf, InvalidAmount, lambda: lf.ledger.set_pool_fee(10_001, 0))
    assert_audit_ok(lf)


def test_pool_version_moves_only_with_pool_configuration(lf: LedgerFixture) -> None:
    provider, payer = lf.party("provider"), funded(lf, "payer")
    seen = [lf.ledger.pool_version()]
    register(lf, provider)
    seen.append(lf.ledger.pool_version())
    lf.ledger.approve_provider(provider.address, True)
    seen.append(lf.ledger.pool_version())
    lf.ledger.set_pool_fee(1, 0)
    seen.append(lf.ledger.pool_version())
    assert len(set(seen)) == 4
    lf.transfer(payer, provider.address, 5)
    assert lf.ledger.pool_version() == seen[-1]


def test_provider_reads_of_an_unknown_address(lf: LedgerFixture) -> None:
    stranger = lf.party("stranger")
    with pytest.raises(NotFound):
        lf.ledger.provider(stranger.address)
    assert lf.ledger.provider_earnings(stranger.address) == ProviderEarnings(0, 0, 0, 0)
    assert lf.ledger.operator_fees() == 0


# ---- split settles ----


def pool_call(lf: LedgerFixture, held: int = 5000) -> tuple[Party, Party, Party, str, str]:
    """A payer with a hold to the operator's pay-to address, and a registered provider."""
    payer, operator, provider = funded(lf, "payer"), lf.party("payto"), lf.party("provider")
    registered, _ = register(lf, provider)
    placed = hold(lf, payer, operator, held)
    return payer, operator, provider, placed.tx_id, registered.tx_id


def test_settle_split_pays_the_provider_its_price_and_the_operator_its_fee(lf: LedgerFixture) -> None:
    payer, operator, provider, hold_id, reg_id = pool_call(lf)
    fee = lf.ledger.set_pool_fee(250, 7)
    result = lf.ledger.settle_split(
        hold_id,
        provider=provider.address,
        registration_id=reg_id,
        input_tokens=100,
        output_tokens=50,
        usage_capped=True,
    )
    assert result.kind == "split_settle"
    split = lf.ledger.transaction(result.tx_id).tx.message
    assert result.split == split  # handed back, for the receipt (both payees, both amounts)
    # 1000 per call + ceil(100*10/1000)=1 + ceil(50*30/1000)=2; fee 7 + ceil(1003*250/10000)=26
    assert (split.provider_amount, split.fee, split.amount, split.fee_id, split.usage_capped) == (
        1003,
        33,
        1036,
        fee.tx_id,
        True,
    )
    assert available(lf, provider) == 1003 and available(lf, operator) == 33
    assert lf.ledger.balance(payer.address).to_dict() == {
        "address": payer.address,
        "available": str(10 * UNIT - 1036),
        "held": "0",
    }
    assert lf.ledger.store.hold(hold_id).status == "settle"
    assert lf.ledger.provider_earnings(provider.address) == ProviderEarnings(1, 1003, 0, 0)
    assert lf.ledger.operator_fees() == 33
    # A hold is resolved once, whichever way.
    refused(lf, IdempotencyConflict, lambda: lf.ledger.settle(hold_id, 1))
    refused(
        lf,
        IdempotencyConflict,
        lambda: lf.ledger.settle_split(
            hold_id,
            provider=provider.address,
            registration_id=reg_id,
            input_tokens=1,
            output_tokens=1,
            usage_capped=False,
        ),
    )
    assert_audit_ok(lf)


def test_the_same_split_sent_again_is_answered_with_the_first_and_recorded_once(lf: LedgerFixture) -> None:
    """Found by the stateful model (CI, 2026-12-04): the sealer signs deterministically, so the
    same split (same usage, registration and fee in force) is the same entry; sent again, it is
    answered as a duplicate of the first, as a plain settle's retry is. Another usage is another
    entry: a conflict."""
    _, _, provider, hold_id, reg_id = pool_call(lf)

    def split(tokens: int) -> TxResult:
        return lf.ledger.settle_split(
            hold_id,
            provider=provider.address,
            registration_id=reg_id,
            input_tokens=tokens,
            output_tokens=0,
            usage_capped=False,
        )

    first = split(10)
    before = dump(lf.path)
    again = split(10)
    assert again.duplicate and again.tx_id == first.tx_id and dump(lf.path) == before
    refused(lf, IdempotencyConflict, lambda: split(11))
    assert_audit_ok(lf)


def test_a_split_above_the_hold_is_refused_and_the_hold_stays_open(lf: LedgerFixture) -> None:
    _, _, provider, hold_id, reg_id = pool_call(lf, held=1002)
    refused(
        lf,
        SettleExceedsHold,
        lambda: lf.ledger.settle_split(
            hold_id,
            provider=provider.address,
            registration_id=reg_id,
            input_tokens=100,
            output_tokens=50,
            usage_capped=False,
        ),
    )
    assert lf.ledger.store.hold(hold_id).status == "open"


def test_a_split_naming_an_old_registration_is_refused(lf: LedgerFixture) -> None:
    _, _, provider, hold_id, old_id = pool_call(lf)
    register(lf, provider, price_per_call=1)
    for action in (
        lambda: lf.ledger.settle_split(
            hold_id,
            provider=provider.address,
            registration_id=old_id,
            input_tokens=1,
            output_tokens=1,
            usage_capped=False,
        ),
        lambda: lf.ledger._submit(
            sealer_tx(lf, "split_settle", split_of(lf, hold_id, provider, old_id)), signed_here=True
        ),
    ):
        refused(lf, RegistrationNotInForce, action)


def test_a_split_to_a_withdrawn_or_unregistered_provider_is_refused(lf: LedgerFixture) -> None:
    _, _, provider, hold_id, _ = pool_call(lf)
    withdrawn, _ = register(lf, provider, status="withdrawn")
    refused(
        lf,
        ProviderWithdrawn,
        lambda: lf.ledger.settle_split(
            hold_id,
            provider=provider.address,
            registration_id=withdrawn.tx_id,
            input_tokens=1,
            output_tokens=1,
            usage_capped=False,
        ),
    )
    stranger = lf.party("stranger")
    refused(
        lf,
        RegistrationNotInForce,
        lambda: lf.ledger.settle_split(
            hold_id,
            provider=stranger.address,
            registration_id=withdrawn.tx_id,
            input_tokens=1,
            output_tokens=1,
            usage_capped=False,
        ),
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"provider_amount": 1004, "amount": 1004}, SplitMispriced),  # over the provider's price
        ({"provider_amount": 1002, "amount": 1002}, SplitMispriced),  # under it
        ({"fee": 1, "amount": 1004}, SplitMispriced),  # a fee with none in force
        ({"amount": 1000}, SplitMispriced),  # parts that do not sum
        ({"fee_id": "0x" + "ab" * 32}, FeeNotInForce),
        ({"input_tokens": 101}, SplitMispriced),  # usage the price does not match
    ],
)
def test_a_mispriced_split_is_refused(lf: LedgerFixture, change: dict[str, object], error: type) -> None:
    _, _, provider, hold_id, reg_id = pool_call(lf)
    good = split_of(lf, hold_id, provider, reg_id)
    assert (good.provider_amount, good.fee, good.amount) == (1003, 0, 1003)
    bad = replace(good, **change)
    refused(lf, error, lambda: lf.ledger._submit(sealer_tx(lf, "split_settle", bad), signed_here=True))
    lf.ledger._submit(sealer_tx(lf, "split_settle", good), signed_here=True)


def test_a_split_priced_by_an_older_fee_is_refused(lf: LedgerFixture) -> None:
    _, _, provider, hold_id, reg_id = pool_call(lf)
    stale = split_of(lf, hold_id, provider, reg_id)
    lf.ledger.set_pool_fee(100, 0)
    refused(lf, FeeNotInForce, lambda: lf.ledger._submit(sealer_tx(lf, "split_settle", stale), signed_here=True))


def test_a_split_must_be_signed_by_the_sealer(lf: LedgerFixture) -> None:
    _, _, provider, hold_id, reg_id = pool_call(lf)
    split = split_of(lf, hold_id, provider, reg_id)
    refused(lf, Unauthorized, lambda: lf.ledger.submit(signed(lf, "split_settle", split, provider.key)))


def test_split_settles_share_the_group_commit_path(lf: LedgerFixture) -> None:
    """Many threads split-settling at once on a group-committing ledger (as a gateway worker
    runs): every split lands exactly once and the books balance."""
    payer, operator, provider = funded(lf, "payer"), lf.party("payto"), lf.party("provider")
    registered, _ = register(lf, provider)
    lf.ledger.set_pool_fee(100, 1)
    holds = [hold(lf, payer, operator, 2000).tx_id for _ in range(16)]
    shared = Ledger(open_store(lf.path), sealer=KeySigner(lf.sealer_key), clock=lf.clock, group_commit=True)
    lf.stores.append(shared.store)
    errors: list[BaseException] = []

    def settle(hold_id: str) -> None:
        try:
            shared.settle_split(
                hold_id,
                provider=provider.address,
                registration_id=registered.tx_id,
                input_tokens=100,
                output_tokens=50,
                usage_capped=False,
            )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=settle, args=(h,)) for h in holds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    fee = 1 + 11  # 1 flat + ceil(1003 * 100 / 10000)
    assert lf.ledger.provider_earnings(provider.address) == ProviderEarnings(16, 16 * 1003, 0, 0)
    assert lf.ledger.operator_fees() == available(lf, operator) == 16 * fee
    assert_audit_ok(lf)


def test_splits_racing_a_fee_change_are_each_priced_by_the_fee_in_force_at_their_place(lf: LedgerFixture) -> None:
    """Threads split-settle while the operator changes the fee (on PostgreSQL, truly at once):
    none fails, and the auditor, re-pricing each split by the fee in force at its position in
    the log, finds nothing wrong."""
    payer, operator, provider = funded(lf, "payer"), lf.party("payto"), lf.party("provider")
    registered, _ = register(lf, provider)
    holds = [hold(lf, payer, operator, 3000).tx_id for _ in range(12)]
    errors: list[BaseException] = []

    def settle(hold_id: str) -> None:
        try:
            lf.ledger.settle_split(
                hold_id,
                provider=provider.address,
                registration_id=registered.tx_id,
                input_tokens=100,
                output_tokens=50,
                usage_capped=False,
            )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def change_fees() -> None:
        for bps in (100, 200, 300):
            lf.ledger.set_pool_fee(bps, 1)

    threads = [threading.Thread(target=settle, args=(h,)) for h in holds] + [threading.Thread(target=change_fees)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert lf.ledger.provider_earnings(provider.address).calls == 12
    assert_audit_ok(lf)


def test_a_split_of_an_api_key_charge_gives_the_rest_back_to_the_allowance(lf: LedgerFixture) -> None:
    payer, operator, provider = funded(lf, "payer"), lf.party("payto"), lf.party("provider")
    registered, _ = register(lf, provider)
    allowance = Allowance(payer.address, operator.address, 10_000, lf.clock.now_s() + 3600, new_nonce())
    granted = lf.ledger.submit(signed(lf, "allowance", allowance, payer.key))
    charged = lf.ledger.charge(granted.tx_id, 5000, expires_at_s=lf.clock.now_s() + 60)
    assert lf.ledger.store.allowance(granted.tx_id).spent == 5000
    lf.ledger.settle_split(
        charged.tx_id,
        provider=provider.address,
        registration_id=registered.tx_id,
        input_tokens=100,
        output_tokens=50,
        usage_capped=False,
    )
    assert lf.ledger.store.allowance(granted.tx_id).spent == 1003  # only what was captured stays spent
    assert available(lf, provider) == 1003
    assert_audit_ok(lf)


# ---- refunds ----


def settled_split(lf: LedgerFixture) -> tuple[Party, Party, Party, str]:
    payer, operator, provider, hold_id, reg_id = pool_call(lf)
    lf.ledger.set_pool_fee(0, 40)
    result = lf.ledger.settle_split(
        hold_id,
        provider=provider.address,
        registration_id=reg_id,
        input_tokens=100,
        output_tokens=50,
        usage_capped=False,
    )
    return payer, operator, provider, result.tx_id


def test_payees_of_a_split_refund_up_to_what_it_paid_them(lf: LedgerFixture) -> None:
    payer, operator, provider, settle_id = settled_split(lf)
    before = available(lf, payer)
    refund(lf, provider, settle_id, 1000)
    refund(lf, provider, settle_id, 3)
    refused(lf, RefundExceedsCredit, lambda: refund(lf, provider, settle_id, 1))
    refund(lf, operator, settle_id, 40)
    refused(lf, RefundExceedsCredit, lambda: refund(lf, operator, settle_id, 1))
    assert available(lf, payer) == before + 1043
    assert lf.ledger.provider_earnings(provider.address) == ProviderEarnings(1, 1003, 1003, 0)
    assert_audit_ok(lf)


def test_a_refund_above_what_the_settle_paid_is_refused(lf: LedgerFixture) -> None:
    _, _, provider, settle_id = settled_split(lf)
    lf.mint(provider.address, UNIT)  # it could pay: the rule, not the balance, refuses
    refused(lf, RefundExceedsCredit, lambda: refund(lf, provider, settle_id, 1004))


def test_a_refund_by_someone_the_settle_did_not_pay_is_refused(lf: LedgerFixture) -> None:
    payer, _, _, settle_id = settled_split(lf)
    refused(lf, NotAPayee, lambda: refund(lf, payer, settle_id, 1))
    stranger = funded(lf, "stranger")
    refused(lf, NotAPayee, lambda: refund(lf, stranger, settle_id, 1))


def test_a_refund_of_a_plain_settle_and_of_no_settle(lf: LedgerFixture) -> None:
    payer, payee = funded(lf, "payer"), lf.party("payee")
    placed = hold(lf, payer, payee, 500)
    settled = lf.ledger.settle(placed.tx_id, 300)
    refund(lf, payee, settled.tx_id, 300)
    refused(lf, RefundExceedsCredit, lambda: refund(lf, payee, settled.tx_id, 1))
    voided = lf.ledger.void(hold(lf, payer, payee, 500).tx_id)
    refused(lf, NotFound, lambda: refund(lf, payee, voided.tx_id, 1))
    refused(lf, NotFound, lambda: refund(lf, payee, placed.tx_id, 1))
    assert_audit_ok(lf)


def test_a_refund_the_payee_cannot_cover_is_refused(lf: LedgerFixture) -> None:
    payer, _, provider, settle_id = settled_split(lf)
    lf.transfer(provider, payer.address, 1000)
    refused(lf, InsufficientFunds, lambda: refund(lf, provider, settle_id, 1003))


# ---- redeems ----


def test_a_redeem_burns_tokens_and_supply_goes_down(lf: LedgerFixture) -> None:
    holder = funded(lf, "holder", 5 * UNIT)
    supply = lf.ledger.store.supply()
    result = redeem(lf, holder, 2 * UNIT, "bank-transfer-42")
    assert result.kind == "redeem"
    assert available(lf, holder) == 3 * UNIT
    assert lf.ledger.store.supply() == supply - 2 * UNIT
    assert lf.ledger.provider_earnings(holder.address).redeemed == 2 * UNIT
    assert_audit_ok(lf)


def test_a_redeem_above_the_balance_is_refused(lf: LedgerFixture) -> None:
    holder = funded(lf, "holder", UNIT)
    refused(lf, InsufficientFunds, lambda: redeem(lf, holder, UNIT + 1))
    payee = lf.party("payee")
    hold(lf, holder, payee, UNIT // 2)  # held funds are not available to redeem
    refused(lf, InsufficientFunds, lambda: redeem(lf, holder, UNIT // 2 + 1))


@pytest.mark.parametrize("reference", ["", "x" * 257, "caf\u00e9", "line\nbreak"])
def test_a_redeem_needs_a_printable_payout_reference(lf: LedgerFixture, reference: str) -> None:
    holder = funded(lf, "holder", UNIT)
    refused(lf, InvalidInput, lambda: redeem(lf, holder, 1, reference))


def test_a_redeem_must_be_signed_by_the_holder(lf: LedgerFixture) -> None:
    holder, mallory = funded(lf, "holder", UNIT), lf.party("mallory")
    message = Redeem(holder.address, 1, "ref", new_nonce())
    refused(lf, Unauthorized, lambda: lf.ledger.submit(signed(lf, "redeem", message, mallory.key)))


def test_the_pool_fee_record_is_refused_when_not_the_sealers(lf: LedgerFixture) -> None:
    fee = PoolFee(10, 0, new_nonce())
    refused(lf, Unauthorized, lambda: lf.ledger.submit(signed(lf, "pool_fee", fee, lf.operator.key)))

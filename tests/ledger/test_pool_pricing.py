"""``ledger.pool``: what a pool call costs, in integers, each fractional part rounded up, with
overflow refused; checked against exact rational arithmetic for any prices and usage."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.amounts import MAX_AMOUNT
from ledger.errors import InvalidAmount
from ledger.pool import max_call_price, pool_fee_amount, provider_price, split_amounts
from ledger.types import NO_POOL_FEE, PoolFee, PoolFeeInForce, ProviderRegistration
from tests.strategies import pool_fees, provider_registrations, token_counts

NONCE = "0x" + "00" * 32
A = "0x4B20993Bc481177ec7E8f571ceCaE8A9e22C02db"


def reg(per_call: int, per_1k_in: int, per_1k_out: int) -> ProviderRegistration:
    return ProviderRegistration(A, "http://127.0.0.1:1/v1", ("m",), per_call, per_1k_in, per_1k_out, 0, "active", NONCE)


@pytest.mark.parametrize(
    ("prices_", "usage", "expected"),
    [
        ((1000, 10, 30), (100, 50), 1000 + 1 + 2),
        ((0, 1, 1), (1, 1), 2),  # a thousandth of a unit each: rounded up to 1 each, not 1 for both
        ((0, 1000, 1000), (7, 9), 16),  # whole units: no rounding
        ((5, 0, 0), (10**6, 10**6), 5),
        ((0, 999, 0), (1000, 0), 999),
        ((0, 999, 0), (1001, 0), 1000),
    ],
)
def test_provider_price_rounds_each_part_up(
    prices_: tuple[int, int, int], usage: tuple[int, int], expected: int
) -> None:
    assert provider_price(reg(*prices_), *usage) == expected


@pytest.mark.parametrize(
    ("fee_bps", "flat", "provider_amount", "expected"),
    [
        (250, 7, 1003, 7 + 26),
        (1, 0, 1, 1),  # a 0.01 % fee on one unit is one unit
        (0, 0, 10**9, 0),
        (10_000, 0, 1234, 1234),
        (0, 50, 0, 50),
    ],
)
def test_pool_fee_is_flat_plus_basis_points_rounded_up(
    fee_bps: int, flat: int, provider_amount: int, expected: int
) -> None:
    assert pool_fee_amount(PoolFee(fee_bps, flat, NONCE), provider_amount) == expected


@given(provider_registrations, pool_fees, token_counts, token_counts)
@settings(max_examples=300, deadline=None)
def test_prices_equal_exact_arithmetic_rounded_up(
    registration: ProviderRegistration, fee: PoolFee, tokens_in: int, tokens_out: int
) -> None:
    exact_price = (
        registration.price_per_call
        + math.ceil(Fraction(tokens_in * registration.price_per_1k_input, 1000))
        + math.ceil(Fraction(tokens_out * registration.price_per_1k_output, 1000))
    )
    if exact_price > MAX_AMOUNT:
        with pytest.raises(InvalidAmount):
            provider_price(registration, tokens_in, tokens_out)
        return
    assert provider_price(registration, tokens_in, tokens_out) == exact_price
    exact_fee = fee.flat_fee + math.ceil(Fraction(exact_price * fee.fee_bps, 10_000))
    if exact_fee > MAX_AMOUNT or exact_price + exact_fee > MAX_AMOUNT:
        with pytest.raises(InvalidAmount):
            split_amounts(registration, fee, tokens_in, tokens_out)
        return
    assert split_amounts(registration, fee, tokens_in, tokens_out) == (exact_price + exact_fee, exact_price, exact_fee)


@given(provider_registrations, pool_fees, token_counts, token_counts, st.integers(0, 10**6), st.integers(0, 10**6))
@settings(max_examples=200, deadline=None)
def test_the_max_call_price_bounds_every_usage_within_the_bounds(
    registration: ProviderRegistration, fee: PoolFee, max_in: int, max_out: int, used_in: int, used_out: int
) -> None:
    try:
        bound = max_call_price(registration, fee, max_in, max_out)
    except InvalidAmount:
        return
    assert split_amounts(registration, fee, min(used_in, max_in), min(used_out, max_out))[0] <= bound


def test_overflow_is_refused_never_wrapped() -> None:
    big = reg(MAX_AMOUNT, 0, 0)
    assert provider_price(big, 0, 0) == MAX_AMOUNT
    with pytest.raises(InvalidAmount):
        provider_price(reg(MAX_AMOUNT, 1000, 0), 1, 0)
    assert pool_fee_amount(PoolFeeInForce(0, MAX_AMOUNT, NONCE), 1) == MAX_AMOUNT
    with pytest.raises(InvalidAmount):
        pool_fee_amount(PoolFeeInForce(1, MAX_AMOUNT, NONCE), 1)
    with pytest.raises(InvalidAmount):
        max_call_price(big, PoolFeeInForce(0, 1, NONCE), 0, 0)
    assert max_call_price(big, NO_POOL_FEE, 0, 0) == MAX_AMOUNT


@pytest.mark.parametrize("bad", [-1, True, 2**63])
def test_token_counts_must_be_non_negative_integers_in_range(bad: int) -> None:
    with pytest.raises(InvalidAmount):
        provider_price(reg(1, 1, 1), bad, 0)

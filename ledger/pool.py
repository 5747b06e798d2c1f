"""What a pool call costs: the one implementation of the compute pool's prices, in integers.

The gateway quotes holds with these, ``Ledger.settle_split`` computes splits with them, and the
ledger's rules and every auditor check stored splits against them, so a price can never be
computed two ways. Rounding, stated once: every part that is a fraction of a base unit is
rounded *up* to a whole base unit, each part on its own (as the gateway's metered routes do,
``Route.price_for``): a provider is never paid less than its stated price, and a 1-bp fee on a
1-unit call is 1 unit, not 0. Anything above 2**63-1 raises ``InvalidAmount``.
This module must never read state, perform I/O or use floats.
"""

from __future__ import annotations

from ledger.amounts import MAX_AMOUNT
from ledger.errors import InvalidAmount
from ledger.pool_types import PoolFee, PoolFeeInForce, ProviderRegistration


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _bounded(units: int, what: str) -> int:
    if units > MAX_AMOUNT:
        raise InvalidAmount(f"{what} of {units} base units is above 2**63-1", max=str(MAX_AMOUNT))
    return units


def _tokens(count: int, what: str) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidAmount(f"{what} must be a non-negative integer, got {count!r}")
    return _bounded(count, what)


def provider_price(reg: ProviderRegistration, input_tokens: int, output_tokens: int) -> int:
    """``pricePerCall + ceil(input * pricePer1kInput / 1000) + ceil(output * pricePer1kOutput / 1000)``."""
    inputs = _tokens(input_tokens, "input tokens")
    outputs = _tokens(output_tokens, "output tokens")
    total = (
        reg.price_per_call
        + _ceil_div(inputs * reg.price_per_1k_input, 1000)
        + _ceil_div(outputs * reg.price_per_1k_output, 1000)
    )
    return _bounded(total, "a provider's price")


def pool_fee_amount(fee: PoolFee | PoolFeeInForce, provider_amount: int) -> int:
    """``flatFee + ceil(provider_amount * feeBps / 10000)``."""
    amount = _tokens(provider_amount, "the provider's amount")
    return _bounded(fee.flat_fee + _ceil_div(amount * fee.fee_bps, 10_000), "a pool fee")


def split_amounts(
    reg: ProviderRegistration, fee: PoolFee | PoolFeeInForce, input_tokens: int, output_tokens: int
) -> tuple[int, int, int]:
    """(amount, provider_amount, fee) of a split for this usage: what ``settle_split`` records."""
    provider_amount = provider_price(reg, input_tokens, output_tokens)
    fee_units = pool_fee_amount(fee, provider_amount)
    return _bounded(provider_amount + fee_units, "a call's price"), provider_amount, fee_units


def max_call_price(
    reg: ProviderRegistration, fee: PoolFee | PoolFeeInForce, max_input_tokens: int, max_output_tokens: int
) -> int:
    """The most one call to this provider may cost at these bounds, its fee included: what a 402
    offer quotes and a hold reserves (prices and the fee only grow with usage, so the bound holds)."""
    return split_amounts(reg, fee, max_input_tokens, max_output_tokens)[0]

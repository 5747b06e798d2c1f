"""Token amounts: integers of base units, and their decimal text for humans.

Amounts live as ``int`` base units everywhere (6 decimals, like USDC). Decimal text such as
"1.25" is parsed here and only here, by string rules: no float ever holds an amount, so
"0.1" is exactly 100000 base units. This module must never round.
"""

from __future__ import annotations

import re

from ledger.errors import InvalidAmount

DECIMALS = 6
BASE = 10**DECIMALS
INT64_MAX = 2**63 - 1  # the largest number a ledger column holds (SQLite INTEGER, PostgreSQL BIGINT)
MAX_AMOUNT = INT64_MAX  # so every amount fits a column

_DECIMAL_TEXT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?")
_BASE_UNITS_TEXT = re.compile(r"[0-9]+")


def parse_amount(text: str, *, allow_zero: bool = False) -> int:
    """Parse "1.25" into 1_250_000 base units; reject anything that is not plain decimal."""
    if not isinstance(text, str):
        raise InvalidAmount(f"amount must be text, got {type(text).__name__}")
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None:
        raise InvalidAmount(f"not a decimal amount: {text!r} (write e.g. 12 or 1.25)")
    frac = match.group("frac") or ""
    if len(frac) > DECIMALS:
        raise InvalidAmount(f"too many decimals in {text!r}: at most {DECIMALS}")
    if len(match.group("whole")) > 20:
        raise InvalidAmount(f"amount {text!r} is too large", max=format_amount(MAX_AMOUNT))
    units = int(match.group("whole")) * BASE + int(frac.ljust(DECIMALS, "0") or "0")
    return check_amount(units, allow_zero=allow_zero, shown=text)


def parse_base_units(text: str, *, allow_zero: bool = False) -> int:
    """Parse a wire amount: a decimal string of base units ("1250000"), as x402 sends it."""
    if not isinstance(text, str) or _BASE_UNITS_TEXT.fullmatch(text) is None or len(text) > 20:
        raise InvalidAmount(f"not an amount in base units: {text!r}")
    return check_amount(int(text), allow_zero=allow_zero, shown=text)


def check_amount(units: int, *, allow_zero: bool = False, shown: object = None) -> int:
    """Range-check an integer amount: positive (or zero if allowed) and at most 2**63-1."""
    if not isinstance(units, int) or isinstance(units, bool):
        raise InvalidAmount(f"amount must be an integer of base units, got {units!r}")
    label = shown if shown is not None else units
    if units < 0 or (units == 0 and not allow_zero):
        raise InvalidAmount(f"amount must be positive, got {label!r}")
    if units > MAX_AMOUNT:
        raise InvalidAmount(f"amount {label!r} is too large", max=format_amount(MAX_AMOUNT))
    return units


def format_amount(units: int) -> str:
    """1_250_000 -> "1.25"; 3_000_000 -> "3"; exact, never rounded."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), BASE)
    text = f"{whole}.{frac:0{DECIMALS}d}".rstrip("0").rstrip(".")
    return sign + text

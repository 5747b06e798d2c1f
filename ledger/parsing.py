"""Field parsers for the ledger's records: each takes an untrusted value (from JSON, the wire or
a stored row) and returns it checked, or raises a specific error (``InvalidAddress``,
``MalformedRecord``, ``InvalidAmount``). Never returns a half-valid value, and never builds a
domain object: the dataclasses in ``ledger.types`` call these from their ``from_dict``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ledger.addresses import is_checksum_address, is_hex_address, to_checksum_address
from ledger.amounts import INT64_MAX, check_amount, parse_base_units
from ledger.errors import InvalidAddress, MalformedRecord

if TYPE_CHECKING:  # the aliases live at the top of ledger.types, which imports this module
    from ledger.types import Address, Bytes32Hex, SignatureHex

UINT256_MAX = 2**256 - 1
_BYTES32 = re.compile(r"0x[0-9a-f]{64}")
_SIG65 = re.compile(r"0x[0-9a-fA-F]{130}")


def parse_address(value: object, field: str = "address") -> Address:
    """Accept only an EIP-55 checksummed address (or an all-lowercase one, which has no checksum)."""
    if isinstance(value, str) and len(value) == 42:
        try:
            return _checked_address(value)
        except InvalidAddress as exc:
            raise InvalidAddress(f"{field}: {exc.message}") from None
    raise InvalidAddress(f"{field}: not an address: {value!r}")


@functools.lru_cache(maxsize=65536)  # payers and payees repeat; each check costs two keccaks
def _checked_address(value: str) -> Address:
    if not value.startswith("0x") or not is_hex_address(value):
        raise InvalidAddress(f"not an address: {value!r}")
    body = value[2:]
    if body != body.lower() and not is_checksum_address(value):
        raise InvalidAddress(f"bad EIP-55 checksum in {value!r} (mistyped?)")
    checksummed: Address = to_checksum_address(value)
    return checksummed


def parse_bytes32(value: object, field: str) -> Bytes32Hex:
    if not isinstance(value, str) or _BYTES32.fullmatch(value.lower()) is None:
        raise MalformedRecord(f"{field}: expected 0x + 64 hex digits, got {value!r}")
    return value.lower()


def parse_signature(value: object, field: str = "signature") -> SignatureHex:
    if not isinstance(value, str) or _SIG65.fullmatch(value) is None:
        raise MalformedRecord(f"{field}: expected 0x + 130 hex digits (65 bytes), got {value!r}")
    return value.lower()


def parse_uint(value: object, field: str, maximum: int = UINT256_MAX) -> int:
    """A non-negative integer sent as a decimal string (or an int, as eth-account produces)."""
    if isinstance(value, bool):
        raise MalformedRecord(f"{field}: expected an integer, got {value!r}")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 78:
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        raise MalformedRecord(f"{field}: expected a non-negative integer, got {value!r}")
    if not 0 <= number <= maximum:
        raise MalformedRecord(f"{field}: {value!r} is out of range")
    return number


def parse_str(value: object, field: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise MalformedRecord(f"{field}: expected text, got {value!r}")
    if choices is not None and value not in choices:
        raise MalformedRecord(f"{field}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def exact_keys(
    data: object, required: set[str], what: str, optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedRecord(f"{what}: expected an object, got {type(data).__name__}")
    keys = set(data)
    if unknown := keys - required - optional:
        raise MalformedRecord(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    if missing := required - keys:
        raise MalformedRecord(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    return data


def parse_value(value: object, field: str) -> int:
    """An amount of base units: a decimal string of base units, or an int (at most INT64_MAX)."""
    if isinstance(value, str):
        return parse_base_units(value, allow_zero=True)
    return check_amount(parse_uint(value, field, INT64_MAX), allow_zero=True)

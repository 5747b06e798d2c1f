"""EIP-55 checksummed addresses, with the ledger's own keccak (``ledger.keccak``).

Why not eth_utils, which computes the same: importing it imports pydantic, about 0.25 s of CPU
that every fresh process paid before its first check (each audit worker, ``inferpay verify``).
``tests/ledger/test_addresses.py`` checks these against eth_utils' functions. This module must
never import anything beyond the standard library and ``ledger.keccak``.
"""

from __future__ import annotations

import re

from ledger.keccak import keccak

_HEX_ADDRESS = re.compile(r"(0[xX])?[0-9a-fA-F]{40}")
_UPPER_NIBBLES = frozenset("89abcdef")  # a hash nibble of 8 or more capitalizes its letter


def is_hex_address(value: object) -> bool:
    """Text of 40 hex digits, with or without 0x (any case): eth_utils' ``is_hex_address``."""
    return isinstance(value, str) and _HEX_ADDRESS.fullmatch(value) is not None


def to_checksum_address(value: str | bytes) -> str:
    """The EIP-55 form of a hex address (any case, 0x optional) or of 20 raw bytes."""
    if isinstance(value, bytes):
        if len(value) != 20:
            raise ValueError(f"an address is 20 bytes, got {len(value)}")
        body = value.hex()
    elif is_hex_address(value):
        body = value[-40:].lower()
    else:
        raise ValueError(f"not an address: {value!r}")
    digest = keccak(body.encode()).hex()
    return "0x" + "".join(c.upper() if d in _UPPER_NIBBLES else c for c, d in zip(body, digest, strict=False))


def is_checksum_address(value: object) -> bool:
    """A hex address written exactly in its EIP-55 form."""
    return isinstance(value, str) and is_hex_address(value) and value == to_checksum_address(value)

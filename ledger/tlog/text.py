"""The strict pieces every tlog parser shares: base64, decimals, note-safe UTF-8.

What it is for: one definition of "a base64 hash", "a decimal size" and "text a note may
carry", so the note, checkpoint, proof, witness and policy parsers cannot drift apart. Strict
means canonical: exactly one spelling of each value is accepted (standard alphabet with
padding and zero trailing bits; decimals without sign, spaces or leading zeros), so a value
that parses re-formats to the same bytes.

It must never do I/O, and never raise anything but the error class its caller names.
"""

from __future__ import annotations

import base64
import binascii
import re

from ledger.errors import InferpayError

INT63_MAX = (1 << 63) - 1
"""The largest tree size, index or timestamp the formats carry (Go's int64, tlog-cosignature's bound)."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str, error: type[InferpayError], size: int | None = None) -> bytes:
    """Decode canonical standard base64 (RFC 4648 section 4), of exactly ``size`` bytes if given."""
    if not (_BASE64.fullmatch(text) and len(text) % 4 == 0):
        raise error(f"{what} is not standard base64")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} is not standard base64") from exc
    if b64encode(data) != text:  # non-zero padding bits: a second spelling of the same bytes
        raise error(f"{what} is not canonical base64")
    if size is not None and len(data) != size:
        raise error(f"{what} is {len(data)} bytes, not {size}")
    return data


def parse_decimal(text: str, what: str, error: type[InferpayError], maximum: int = INT63_MAX) -> int:
    """A non-negative ASCII decimal with no leading zeros ("0" alone), at most ``maximum``."""
    if not _DECIMAL.fullmatch(text):
        raise error(f"{what} {text[:24]!r} is not a decimal without leading zeros")
    value = int(text)
    if value > maximum:
        raise error(f"{what} {value} is above {maximum}")
    return value


def note_text(data: bytes, what: str, error: type[InferpayError]) -> str:
    """``data`` as text a signed note may hold: valid UTF-8, no control character but newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid UTF-8") from exc
    if _FORBIDDEN_CONTROL.search(text):
        raise error(f"{what} contains a control character other than newline")
    return text

"""The request's ``provider`` object (OpenRouter's shape, the parts inferpay honours), parsed
strictly: an unknown key or a wrong type is a 400 ``malformed_provider_preferences`` naming the
key, because silently ignoring a preference (``max_price`` above all) could cost the payer money.

    {"order": [addr, ...], "sort": "price" | "latency" | "throughput", "max_price": units,
     "allow_fallbacks": true, "only": [addr, ...], "ignore": [addr, ...]}

``max_price`` is in base units (an integer, or its decimal string, as amounts travel on the
wire). Pure: no state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.wire.errors import MalformedProviderPreferences
from ledger.amounts import MAX_AMOUNT
from ledger.errors import InvalidAddress
from ledger.parsing import parse_address
from ledger.types import Address

SORTS = ("price", "latency", "throughput")
KEYS = ("order", "sort", "max_price", "allow_fallbacks", "only", "ignore")
MAX_LISTED = 64  # addresses in one order/only/ignore list


@dataclass(frozen=True)
class ProviderPreferences:
    order: tuple[Address, ...] = ()
    sort: str | None = None  # None: the operator's default (price)
    max_price: int | None = None  # base units; None: no limit of the client's own
    allow_fallbacks: bool = True
    only: tuple[Address, ...] | None = None  # None: no restriction
    ignore: tuple[Address, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allow_fallbacks": self.allow_fallbacks}
        if self.order:
            out["order"] = list(self.order)
        if self.sort is not None:
            out["sort"] = self.sort
        if self.max_price is not None:
            out["max_price"] = str(self.max_price)
        if self.only is not None:
            out["only"] = list(self.only)
        if self.ignore:
            out["ignore"] = list(self.ignore)
        return out

    @classmethod
    def from_dict(cls, data: object) -> ProviderPreferences:
        """``None`` (no ``provider`` object) is the defaults; anything else must be exactly right."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise MalformedProviderPreferences(f"provider: expected an object, got {_kind(data)}")
        if unknown := sorted(set(data) - set(KEYS)):
            raise MalformedProviderPreferences(
                f"provider: unknown key(s) {', '.join(map(repr, unknown))}; supported: {', '.join(KEYS)}",
                keys=unknown,
            )
        sort = data.get("sort")
        if sort is not None and sort not in SORTS:
            raise MalformedProviderPreferences(f"provider.sort: expected one of {', '.join(SORTS)}, got {sort!r}")
        fallbacks = data.get("allow_fallbacks", True)
        if not isinstance(fallbacks, bool):
            raise MalformedProviderPreferences(f"provider.allow_fallbacks: expected true or false, got {fallbacks!r}")
        only = data.get("only")
        return cls(
            order=_addresses(data.get("order", []), "order"),
            sort=sort,
            max_price=_max_price(data["max_price"]) if data.get("max_price") is not None else None,
            allow_fallbacks=fallbacks,
            only=_addresses(only, "only") if only is not None else None,
            ignore=_addresses(data.get("ignore", []), "ignore"),
        )


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


def _addresses(value: object, key: str) -> tuple[Address, ...]:
    if not isinstance(value, list):
        raise MalformedProviderPreferences(f"provider.{key}: expected a list of provider addresses, got {_kind(value)}")
    if len(value) > MAX_LISTED:
        raise MalformedProviderPreferences(f"provider.{key}: at most {MAX_LISTED} addresses, got {len(value)}")
    out: list[Address] = []
    for index, item in enumerate(value):
        try:
            address = parse_address(item, f"provider.{key}[{index}]")
        except InvalidAddress as exc:
            raise MalformedProviderPreferences(exc.message) from None
        if address.lower() in (a.lower() for a in out):
            raise MalformedProviderPreferences(f"provider.{key}: {address} is listed twice")
        out.append(address)
    return tuple(out)


def _max_price(value: object) -> int:
    """Base units: a non-negative integer or its decimal string; never a float (money is exact)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        units = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        units = value
    else:
        raise MalformedProviderPreferences(
            f"provider.max_price: expected base units as an integer or a decimal string, got {value!r}"
        )
    if not 0 <= units <= MAX_AMOUNT:
        raise MalformedProviderPreferences(f"provider.max_price: expected 0 to 2**63-1 base units, got {units}")
    return units

"""Which providers may serve one request, in which order, and the hold that covers them all.

Bounds (what the request allows, so what it may cost): input tokens at most the body's size in
bytes (a token is at least one byte of the request as sent), output tokens at most the
request's ``max_tokens`` / ``max_completion_tokens``, else the route's ``max_output_tokens``.
Candidates: routable providers serving the request's ``model``, with a closed circuit and room
under their registered ``capacity`` (counted per worker: W workers may send W x capacity), after
``only`` / ``ignore``; each priced at the bounds by ``ledger.pool.max_call_price``; those above
``max_price`` dropped; sorted by ``sort`` (price by default), the ``order`` list first; only the
first when ``allow_fallbacks`` is false. The hold is the dearest remaining candidate's price, so
whichever serves, its capture fits. Pure apart from reading the health board.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.server.pool.directory import PoolView
from gateway.server.pool.health import HealthBoard
from gateway.server.pool.preferences import ProviderPreferences
from gateway.wire.errors import NoProviderAvailable, NoProviderWithinPrice
from ledger.errors import InvalidInput
from ledger.pool import max_call_price
from ledger.types import ProviderRecord

OUTPUT_LIMIT_KEYS = ("max_completion_tokens", "max_tokens")


@dataclass(frozen=True)
class Bounds:
    input_tokens: int
    output_tokens: int

    def cap(self, usage: tuple[int, int] | None) -> tuple[int, int, bool]:
        """(input, output, capped): reported usage held to the bounds, and whether it had to be.
        No usage reported at all is billed as none (the per-call price only): the payer never
        pays for tokens nobody counted."""
        if usage is None:
            return 0, 0, False
        inputs, outputs = usage
        return (
            min(inputs, self.input_tokens),
            min(outputs, self.output_tokens),
            inputs > self.input_tokens or outputs > self.output_tokens,
        )


def request_bounds(body: bytes, payload: dict[str, Any], max_output_tokens: int) -> Bounds:
    outputs = max_output_tokens
    for key in OUTPUT_LIMIT_KEYS:
        if payload.get(key) is not None:
            value = payload[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**40:
                raise InvalidInput(f"{key}: expected a non-negative integer, got {value!r}")
            outputs = value
            break
    return Bounds(len(body), outputs)


@dataclass(frozen=True)
class Candidate:
    record: ProviderRecord
    max_price: int  # the most a call to it may cost at the request's bounds, fee included

    @property
    def address(self) -> str:
        return self.record.address


def candidates(
    view: PoolView, model: str, prefs: ProviderPreferences, bounds: Bounds, health: HealthBoard
) -> list[Candidate]:
    """The providers to try, in order; raises (nothing held yet) when none is left."""
    serving = [p for p in view.routable() if model in p.registration.models]
    if prefs.only is not None:
        allowed = {a.lower() for a in prefs.only}
        serving = [p for p in serving if p.address.lower() in allowed]
    ignored = {a.lower() for a in prefs.ignore}
    serving = [p for p in serving if p.address.lower() not in ignored]
    healthy = [p for p in serving if health.routable(p.address)]
    roomy = [p for p in healthy if health.has_room(p.address, p.registration.capacity)]
    if not roomy:
        if not serving:
            why = "none serves it"
        elif not healthy:
            why = f"{len(serving)} serve it, but every circuit is open"
        else:
            why = f"{len(healthy)} serve it, each at the capacity it registered"
        raise NoProviderAvailable(f"no provider can take a call for model {model!r} now: {why}", model=model)
    healthy = roomy
    priced = [
        Candidate(p, max_call_price(p.registration, view.fee, bounds.input_tokens, bounds.output_tokens))
        for p in healthy
    ]
    if prefs.max_price is not None:
        within = [c for c in priced if c.max_price <= prefs.max_price]
        if not within:
            cheapest = min(c.max_price for c in priced)
            raise NoProviderWithinPrice(
                f"no provider for {model!r} is within max_price {prefs.max_price}: the cheapest may cost"
                f" {cheapest} base units at this request's bounds ({bounds.input_tokens} input,"
                f" {bounds.output_tokens} output tokens); nothing was held",
                maxPrice=str(prefs.max_price),
                cheapest=str(cheapest),
            )
        priced = within
    priced.sort(key=_sort_key(prefs.sort or "price", health))
    if prefs.order:
        rank = {a.lower(): i for i, a in enumerate(prefs.order)}
        priced.sort(key=lambda c: rank.get(c.address.lower(), len(rank)))  # stable: the rest keep their sort
    return priced if prefs.allow_fallbacks else priced[:1]


def _sort_key(sort: str, health: HealthBoard) -> Callable[[Candidate], tuple[Any, ...]]:
    if sort == "latency":

        def latency(c: Candidate) -> tuple[Any, ...]:
            ms = health.snapshot(c.address).latency_ms
            return (ms is None, ms or 0.0, c.max_price, c.address.lower())

        return latency
    if sort == "throughput":

        def throughput(c: Candidate) -> tuple[Any, ...]:
            tps = health.snapshot(c.address).throughput_tps
            return (tps is None, -(tps or 0.0), c.max_price, c.address.lower())

        return throughput
    return lambda c: (c.max_price, c.address.lower())


def hold_for(chosen: list[Candidate]) -> int:
    return max(c.max_price for c in chosen)

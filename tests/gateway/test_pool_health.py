"""The circuit breaker and the candidate order, on their own (no server, no clock waits: the
breaker's times are passed in)."""

from __future__ import annotations

import json

import pytest

from gateway.server.pool.directory import PoolView
from gateway.server.pool.health import CLOSED, HALF_OPEN, OPEN, HealthBoard, monotonic_ms
from gateway.server.pool.preferences import ProviderPreferences
from gateway.server.pool.routing import Bounds, candidates, hold_for, request_bounds
from gateway.wire.errors import NoProviderAvailable, NoProviderWithinPrice
from ledger.errors import InvalidInput
from ledger.pool import max_call_price
from ledger.types import NO_FEE_ID, PoolFeeInForce, ProviderRecord, ProviderRegistration

A, B, C = ("0x" + c * 40 for c in "abc")
FEE = PoolFeeInForce(500, 3, NO_FEE_ID)


def record(address: str, per_call: int, *, status: str = "active", approved: bool = True) -> ProviderRecord:
    reg = ProviderRegistration(
        address,
        f"http://127.0.0.1:1/{address[-4:]}/v1",
        ("m",),
        per_call,
        10,
        20,
        0,
        status,
        "0x" + "11" * 32,  # type: ignore[arg-type]
    )
    return ProviderRecord(address, "0x" + address[-2:] * 32, reg, approved, 0, 0)


def board() -> HealthBoard:
    return HealthBoard(failure_threshold=2, recovery_interval_ms=1000, health_interval_ms=100)


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    health = board()
    health.failed(A, "refused", probe=False)
    health.succeeded(A, 5.0, probe=False)
    health.failed(A, "refused", probe=True)
    assert health.routable(A)  # 1 consecutive failure, threshold 2
    health.failed(A, "refused", probe=False)
    assert not health.routable(A) and health.snapshot(A).state == OPEN


def test_an_open_circuit_is_probed_once_per_recovery_interval_and_closes_on_success() -> None:
    health = board()
    for _ in range(2):
        health.failed(A, "timeout", probe=True)
    opened = health.snapshot(A).opened_at_ms
    assert not health.take_probe(A, opened + 999)  # not yet
    assert health.take_probe(A, opened + 1000)
    assert health.snapshot(A).state == HALF_OPEN and not health.routable(A)  # half-open: no paid calls
    assert not health.take_probe(A, opened + 5000)  # one probe in flight at a time
    health.failed(A, "timeout", probe=True)
    again = health.snapshot(A)
    assert again.state == OPEN and again.opened_at_ms >= opened  # another interval before the next try
    last = max(again.opened_at_ms, again.last_probe_ms)
    assert not health.take_probe(A, last + 999) and health.take_probe(A, last + 1000)
    health.succeeded(A, 3.0, probe=True)
    assert health.snapshot(A).state == CLOSED and health.routable(A)


def test_a_closed_provider_is_probed_once_per_health_interval() -> None:
    health = board()
    now = monotonic_ms()
    assert health.take_probe(B, now)
    health.succeeded(B, 1.0, probe=True)
    assert not health.take_probe(B, now + 99) and health.take_probe(B, now + 100)


VIEW = PoolView(
    1,
    (
        record(A, 100),
        record(B, 300),
        record(C, 50, approved=False),
        record("0x" + "d" * 40, 10, status="withdrawn"),
    ),
    FEE,
    "listed",
)
BOUNDS = Bounds(200, 10)


def price(address: str) -> int:
    found = next(p for p in VIEW.providers if p.address == address)
    return max_call_price(found.registration, FEE, BOUNDS.input_tokens, BOUNDS.output_tokens)


def order(prefs: ProviderPreferences, view: PoolView = VIEW, health: HealthBoard | None = None) -> list[str]:
    return [c.address for c in candidates(view, "m", prefs, BOUNDS, health or board())]


def test_listed_routes_to_approved_active_providers_cheapest_first() -> None:
    assert order(ProviderPreferences()) == [A, B]
    accept_any = PoolView(VIEW.version, VIEW.providers, FEE, "any")
    assert order(ProviderPreferences(), accept_any) == [C, A, B]  # the withdrawn one never


def test_order_only_ignore_and_fallbacks() -> None:
    assert order(ProviderPreferences(order=(B,))) == [B, A]
    assert order(ProviderPreferences(only=(B,))) == [B]
    assert order(ProviderPreferences(ignore=(A,))) == [B]
    assert order(ProviderPreferences(allow_fallbacks=False, order=(B,))) == [B]
    with pytest.raises(NoProviderAvailable):
        order(ProviderPreferences(only=(C,)))


def test_max_price_drops_dearer_candidates_and_the_hold_covers_the_dearest_left() -> None:
    chosen = candidates(VIEW, "m", ProviderPreferences(), BOUNDS, board())
    assert hold_for(chosen) == price(B)
    cheap_only = candidates(VIEW, "m", ProviderPreferences(max_price=price(A)), BOUNDS, board())
    assert [c.address for c in cheap_only] == [A] and hold_for(cheap_only) == price(A)
    with pytest.raises(NoProviderWithinPrice) as caught:
        order(ProviderPreferences(max_price=price(A) - 1))
    assert caught.value.details["cheapest"] == str(price(A))


def test_an_open_circuit_is_skipped_and_sort_by_latency_uses_the_figures() -> None:
    health = board()
    health.succeeded(A, 50.0, probe=True)
    health.succeeded(B, 5.0, probe=True)
    assert order(ProviderPreferences(sort="latency"), health=health) == [B, A]
    for _ in range(2):
        health.failed(B, "refused", probe=False)
    assert order(ProviderPreferences(sort="latency"), health=health) == [A]


def test_bounds_come_from_the_body_and_max_tokens() -> None:
    assert request_bounds(b"x" * 70, {"max_tokens": 9}, 64) == Bounds(70, 9)
    assert request_bounds(b"x" * 70, {"max_completion_tokens": 3, "max_tokens": 9}, 64) == Bounds(70, 3)
    assert request_bounds(b"{}", {}, 64) == Bounds(2, 64)
    with pytest.raises(InvalidInput, match="max_tokens"):
        request_bounds(b"{}", {"max_tokens": "lots"}, 64)
    assert Bounds(10, 5).cap((30, 2)) == (10, 2, True)
    assert Bounds(10, 5).cap((3, 2)) == (3, 2, False)
    assert Bounds(10, 5).cap(None) == (0, 0, False)


def test_the_provider_object_is_removed_before_forwarding_and_streams_ask_for_usage() -> None:
    from gateway.server.config import parse_config
    from gateway.server.pool.call import parse_pool_request

    route = parse_config({"routes": [{"path": "/v1/chat/completions", "pool": True, "max_output_tokens": 50}]}).routes[
        0
    ]
    body = b'{"model": "m", "stream": true, "provider": {"sort": "latency"}, "messages": []}'
    asked = parse_pool_request(body, route)
    assert asked.prefs.sort == "latency" and asked.stream and not asked.client_wants_usage
    assert asked.bounds == Bounds(len(body), 50)
    forwarded = json.loads(asked.forward)
    assert "provider" not in forwarded and forwarded["stream_options"] == {"include_usage": True}
    for bad in (b"", b"[]", b'{"messages": []}', b'{"model": 3}'):
        with pytest.raises(InvalidInput):
            parse_pool_request(bad, route)


def test_a_provider_at_its_registered_capacity_takes_no_more_calls_from_this_worker() -> None:
    full = PoolView(1, (record(A, 100), record(B, 300)), FEE, "listed")
    capped = PoolView(1, tuple(p if p.address != A else _with_capacity(p, 1) for p in full.providers), FEE, "listed")
    health = board()
    assert order(ProviderPreferences(), capped, health) == [A, B]
    health.begin(A)
    assert order(ProviderPreferences(), capped, health) == [B]
    health.end(A)
    assert order(ProviderPreferences(), capped, health) == [A, B]


def _with_capacity(p: ProviderRecord, capacity: int) -> ProviderRecord:
    from dataclasses import replace

    return replace(p, registration=replace(p.registration, capacity=capacity))

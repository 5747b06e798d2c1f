"""How the ``rate-limits`` phase counts admitted calls per window from the clients' side: only
calls certainly inside one window count there, every limit a call counts against is summed, and
an excess is seen (the phase's check can fail)."""

from __future__ import annotations

from reliability.rate_limits import LIMIT_MAX, WINDOW_S, Call, admitted_per_window
from tests.support.gateway import FLAT_PRICE

PAYER = "0x" + "aa" * 20


def call(operation: str, sent_s: float, answered_s: float, status: int = 200, key: str | None = None) -> Call:
    return Call(operation, PAYER, key, sent_s, answered_s, status, "", None)


def test_calls_are_summed_per_limit_subject_and_window() -> None:
    base = 1000 * WINDOW_S
    calls = [
        call("signed_flat", base + 0.1, base + 0.2),
        call("key_flat", base + 0.3, base + 0.4, key="k1"),
        call("key_flat2", base + 0.5, base + 0.6, key="k1"),
        call("signed_flat2", base + WINDOW_S + 0.1, base + WINDOW_S + 0.2),
        call("signed_flat", base + 0.7, base + 0.8, status=429),  # refused: counts nowhere
    ]
    sums, uncertain = admitted_per_window(calls, WINDOW_S)
    assert uncertain == 0
    assert sums == {
        ("payer", PAYER, 1000): 2,
        ("api_key", "k1", 1000): 2 * FLAT_PRICE,
        ("route", "/v1/flat2", 1000): 1,
        ("route", "/v1/flat2", 1001): 1,
    }


def test_a_call_across_a_window_edge_is_left_out_not_guessed() -> None:
    edge = 500 * WINDOW_S
    sums, uncertain = admitted_per_window([call("signed_flat", edge - 0.01, edge + 0.01)], WINDOW_S)
    assert (sums, uncertain) == ({}, 1)


def test_more_admitted_than_the_limit_in_one_window_shows() -> None:
    base = 700 * WINDOW_S
    calls = [call("signed_flat", base + i / 100, base + i / 100 + 0.005) for i in range(LIMIT_MAX["payer"] + 1)]
    sums, _ = admitted_per_window(calls, WINDOW_S)
    assert sums[("payer", PAYER, 700)] == LIMIT_MAX["payer"] + 1 > LIMIT_MAX["payer"]

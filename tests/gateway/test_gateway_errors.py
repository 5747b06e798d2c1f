"""Every way a paid call can fail at the real gateway: the HTTP status, the stable error code,
the x402 terms on every 402, and what it did to the ledger.

How "the ledger is unchanged" is checked: ``env.quiet_dump()`` waits until no hold is open and
the gateway's auto-sealers have sealed every transaction, then dumps the whole SQLite file as
SQL text. The sealers write only when something waits to be sealed or a hold has expired, so
between two quiet dumps the file can change only if a request wrote to it; and anything a
refused request wrote before answering would be sealed by the time the second quiet dump is
taken, so it would show. Equal dumps therefore mean the request wrote nothing, byte for byte.
Failures that must leave a trace (an upstream that fails after the hold was placed) are
checked by balances, supply and the exact transactions appended instead.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.server.config import parse_config
from gateway.wire.errors import ConfigError
from gateway.wire.x402 import MAX_HEADER_BYTES, decode_header
from ledger.types import HoldResolution
from tests.support.gateway import (
    CHAT,
    CHAT_MODEL,
    DEAD,
    EMBED,
    FLAT,
    FLAT2,
    FLAT_PRICE,
    FREE,
    UPSTREAM_TIMEOUT_SECONDS,
    GatewayEnv,
    b64json,
    error_code,
    high_s_twin,
    start_gateway_env,
)

BODY = b'{"question": "what does this cost?"}'


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-errors"))) as started:
        yield started
        assert_no_response_was_a_500(started)


def assert_no_response_was_a_500(env: GatewayEnv) -> None:
    """After the module's tests (whichever ran, in whatever order), from the gateway's access log:
    no request answered 5xx but the 502s of failing upstreams, and no traceback logged."""
    log = env.gateway.log_text()
    statuses = [int(s) for s in re.findall(r'\{"event":"access",[^\n]*?"status":(\d{3})', log)]
    assert statuses, "no request in the access log: has its format changed?"  # at least the readiness probe
    assert [s for s in statuses if s >= 500 and s != 502] == [], "a response of this module was a 5xx"
    assert "Traceback" not in log


def post(env: GatewayEnv, path: str, header: str | None, *, body: bytes = BODY, **headers: str) -> requests.Response:
    sent = {"Content-Type": "application/json", **headers}
    if header is not None:
        sent["PAYMENT-SIGNATURE"] = header
    return requests.post(env.route_url(path), data=body, headers=sent, timeout=30)


def assert_402_with_terms(response: requests.Response, path: str) -> None:
    assert response.status_code == 402, response.text
    terms = decode_header(response.headers["PAYMENT-REQUIRED"])
    assert terms["x402Version"] == 2 and terms["resource"]["url"].endswith(path)
    assert terms["accepts"] and terms["extensions"]["inferpay"]["offer"]["signature"]


def test_no_payment_is_402_with_the_routes_terms(env: GatewayEnv) -> None:
    before = env.quiet_dump()
    response = post(env, FLAT, None)
    assert_402_with_terms(response, FLAT)
    body = response.json()
    assert body == decode_header(response.headers["PAYMENT-REQUIRED"])
    assert body["accepts"][0]["amount"] == str(FLAT_PRICE) and body["accepts"][0]["scheme"] == "exact"
    assert env.requirement(EMBED)["scheme"] == "upto"
    assert env.quiet_dump() == before


# ---- 400: a header that is not an x402 payment at all ----

MALFORMED: dict[str, Callable[[GatewayEnv], str]] = {
    "not base64": lambda env: "!!! not base64 !!!",
    "base64 of non-JSON": lambda env: "aGVsbG8gd29ybGQ=",  # "hello world"
    "JSON but not an object": lambda env: b64json([1, 2, 3]),
    "JSON missing everything": lambda env: b64json({"x402Version": 2}),
    "unknown x402 version": lambda env: b64json({**env.payment(env.alice)[1], "x402Version": 3}),
    "payload without signature": lambda env: b64json(
        {**(p := env.payment(env.alice)[1]), "payload": {"authorization": p["payload"]["authorization"]}}
    ),
    "v2 without accepted terms": lambda env: b64json(
        {k: v for k, v in env.payment(env.alice)[1].items() if k != "accepted"}
    ),
    "authorization with a bad field": lambda env: b64json(
        {
            **(p := env.payment(env.alice)[1]),
            "payload": {**p["payload"], "authorization": {**p["payload"]["authorization"], "value": "-5"}},
        }
    ),
    "signature not 65 bytes": lambda env: b64json(
        {**(p := env.payment(env.alice)[1]), "payload": {**p["payload"], "signature": "0x1234"}}
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_payment_header_is_400_and_changes_nothing(env: GatewayEnv, case: str) -> None:
    header = MALFORMED[case](env)
    before = env.quiet_dump()
    response = post(env, FLAT, header)
    assert response.status_code == 400 and error_code(response) == "malformed_payment", response.text
    assert env.quiet_dump() == before


def test_a_header_too_large_for_the_server_is_refused_without_a_500(env: GatewayEnv) -> None:
    before = env.quiet_dump()
    response = post(env, FLAT, "A" * 100_000)
    # Past gunicorn's own header limit (16 KiB) the server refuses it before the app sees it (431, HTML).
    assert response.status_code in (400, 431), response.text[:200]
    assert env.quiet_dump() == before


def test_a_payment_header_over_the_gateways_limit_is_json_400_malformed_payment(env: GatewayEnv) -> None:
    """Regression: gunicorn's default limit_request_field_size (8190) sat below MAX_HEADER_BYTES, so
    such a header got gunicorn's HTML 431 instead of the app's JSON 400."""
    response = post(env, FLAT, "A" * (MAX_HEADER_BYTES + 4))
    assert response.status_code == 400 and error_code(response) == "malformed_payment"


# ---- 402: a well-formed payment that does not pay for this call ----


def _flip_r(signature: str) -> str:
    return signature[:10] + ("1" if signature[10] != "1" else "2") + signature[11:]


def _other_asset(env: GatewayEnv) -> dict[str, Any]:
    return {**env.requirement(FLAT), "asset": "0x" + "11" * 20}


REFUSED: dict[str, tuple[str, Callable[[GatewayEnv], str], str]] = {
    # case: (route, header builder, code)
    "bad signature": (FLAT, lambda env: env.payment(env.alice, signature=_flip_r)[0], "invalid_signature"),
    "signed by another key": (
        FLAT,
        lambda env: env.payment(env.alice, signature=lambda _: env.payment(env.bob)[1]["payload"]["signature"])[0],
        "invalid_signature",
    ),
    "high-S twin of a valid signature": (
        FLAT,
        lambda env: env.payment(env.alice, signature=high_s_twin)[0],
        "high_s_signature",
    ),
    "expired window": (
        FLAT,
        lambda env: env.payment(env.alice, valid_after=int(time.time()) - 120, valid_before=int(time.time()) - 60)[0],
        "authorization_expired",
    ),
    "window not yet open": (
        FLAT,
        lambda env: env.payment(env.alice, valid_after=int(time.time()) + 600, valid_before=int(time.time()) + 660)[0],
        "not_yet_valid",
    ),
    "wrong network": (
        FLAT,
        lambda env: env.payment(env.alice, accepted={**env.requirement(FLAT), "network": "eip155:8453"})[0],
        "wrong_network",
    ),
    "wrong asset": (FLAT, lambda env: env.payment(env.alice, accepted=_other_asset(env))[0], "wrong_asset"),
    "accepted terms pay someone else": (
        FLAT,
        lambda env: env.payment(env.alice, accepted={**env.requirement(FLAT), "payTo": env.bob.address})[0],
        "wrong_payee",
    ),
    "authorization pays someone else": (
        FLAT,
        lambda env: env.payment(env.alice, to=env.bob.address)[0],
        "wrong_payee",
    ),
    "amount below the price": (FLAT, lambda env: env.payment(env.alice, value=FLAT_PRICE - 1)[0], "amount_too_low"),
    "flat price offered on a metered route": (
        EMBED,
        lambda env: env.payment(env.alice, accepted=env.requirement(FLAT))[0],
        "amount_too_low",
    ),
    "unsupported scheme": (
        FLAT,
        lambda env: env.payment(env.alice, accepted={**env.requirement(FLAT), "scheme": "upto"})[0],
        "unsupported_scheme",
    ),
    "bound to another body": (
        FLAT,
        lambda env: env.payment(env.alice, bind=("POST", FLAT, b'{"question": "something cheaper"}'))[0],
        "binding_mismatch",
    ),
    "bound to another route": (
        FLAT2,
        lambda env: env.payment(env.alice, bind=("POST", FLAT, BODY))[0],
        "binding_mismatch",
    ),
    "bound to another method": (
        FLAT,
        lambda env: env.payment(env.alice, bind=("PUT", FLAT, BODY))[0],
        "binding_mismatch",
    ),
    "bound to the route without a query": (
        FLAT + "?model=big",
        lambda env: env.payment(env.alice, bind=("POST", FLAT, BODY))[0],
        "binding_mismatch",
    ),
    "insufficient funds": (FLAT, lambda env: env.payment(env.bob)[0], "insufficient_funds"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_payment_that_does_not_pay_for_this_call_is_402_and_changes_nothing(env: GatewayEnv, case: str) -> None:
    path, build, code = REFUSED[case]
    header = build(env)
    before = env.quiet_dump()
    response = post(env, path, header)
    assert_402_with_terms(response, path.partition("?")[0])
    assert error_code(response) == code, response.text
    assert env.quiet_dump() == before


def test_a_bound_payment_pays_exactly_the_request_it_is_bound_to(env: GatewayEnv) -> None:
    header, _ = env.payment(env.alice, bind=("POST", FLAT + "?model=big", BODY))
    alice = env.available(env.alice)
    response = post(env, FLAT + "?model=big", header)
    assert response.status_code == 200, response.text
    assert response.json()["body"] == BODY.decode()
    assert env.available(env.alice) == alice - FLAT_PRICE
    # ... and, once used, it is used: on its own request or any other.
    for path in (FLAT + "?model=big", FLAT2):
        again = post(env, path, header)
        assert_402_with_terms(again, path.partition("?")[0])
        assert error_code(again) in ("payment_already_used", "binding_mismatch")
    env.wait_quiet()
    assert env.available(env.alice) == alice - FLAT_PRICE


def test_the_query_string_reaches_the_upstream(env: GatewayEnv) -> None:
    """Regression: the query string a client paid for (and bound its payment to) was dropped."""
    header, _ = env.payment(env.alice, bind=("POST", FLAT + "?model=big", BODY))
    response = post(env, FLAT + "?model=big", header)
    assert response.status_code == 200, response.text
    assert response.json()["query"] == "model=big"


# ---- free routes: forwarded unpaid, the ledger untouched ----


def test_a_free_route_answers_without_payment_and_charges_nothing(env: GatewayEnv) -> None:
    before = env.quiet_dump()
    header, _ = env.payment(env.alice)  # sent anyway: it must not be used, nor travel upstream
    response = post(env, FREE + "?q=1", header)
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["query"] == "q=1" and "payment-signature" not in echoed["headers"]
    assert "PAYMENT-RESPONSE" not in response.headers and float(response.headers["X-Inferpay-Overhead-Ms"]) >= 0
    assert env.quiet_dump() == before
    spec = requests.get(env.route_url("/openapi.json"), timeout=10).json()
    assert "without payment" in spec["paths"][FREE]["post"]["description"]


@pytest.mark.parametrize(
    "route, message",
    [
        ({"free": True, "price": "0.001"}, r"routes\[0\]: a free route has no prices \(remove price\)"),
        ({"free": "yes"}, r"routes\[0\]\.free: expected true or false"),
    ],
)
def test_a_free_route_with_prices_or_a_non_boolean_is_a_config_error(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"routes": [{"path": "/v1/x", "upstream": "http://127.0.0.1:9/v1/x", **route}]})


# ---- 502: the upstream fails after the hold was placed: the hold is voided, nothing is charged ----

UPSTREAM_FAILURES: dict[str, tuple[str, dict[str, str]]] = {
    "connection refused": (DEAD, {}),
    "timeout": (FLAT, {"X-Test-Fail": "timeout"}),
    "HTTP 500": (FLAT, {"X-Test-Fail": "500"}),
    "connection dropped mid-body": (CHAT, {"X-Test-Fail": "drop"}),
}


@pytest.mark.parametrize("case", sorted(UPSTREAM_FAILURES))
def test_an_upstream_failure_is_502_and_voids_the_hold(env: GatewayEnv, case: str) -> None:
    path, headers = UPSTREAM_FAILURES[case]
    chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    body = json.dumps(chat).encode() if path == CHAT else BODY
    header, _ = env.payment(env.alice, path, bind=("POST", path, body))
    env.wait_quiet()
    alice, operator, supply = env.available(env.alice), env.available(env.operator), env.store.supply()
    count = env.tx_count()

    started = time.monotonic()
    response = post(env, path, header, body=body, **headers)
    elapsed = time.monotonic() - started

    assert response.status_code == 502 and error_code(response) == "upstream_error", response.text
    if case == "timeout":
        assert UPSTREAM_TIMEOUT_SECONDS - 0.5 < elapsed < UPSTREAM_TIMEOUT_SECONDS + 8
    env.wait_quiet()
    assert (env.available(env.alice), env.available(env.operator), env.store.supply()) == (alice, operator, supply)
    assert env.account(env.alice).held == 0
    void, hold = env.history(env.alice, limit=2)
    assert (hold.tx.kind, void.tx.kind) == ("hold", "void") and env.tx_count() == count + 2
    assert isinstance(void.tx.message, HoldResolution) and void.tx.message.hold_id == hold.tx_id
    assert env.store.hold(hold.tx_id).status == "void"  # type: ignore[union-attr]


def test_an_upstream_4xx_is_passed_through_and_nothing_is_charged(env: GatewayEnv) -> None:
    header, _ = env.payment(env.alice, EMBED)
    alice = env.available(env.alice)
    response = post(env, EMBED, header, body=b'{"model": "m"}')  # no input: the upstream says 400
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"  # the upstream's own error, as it sent it
    env.wait_quiet()
    assert env.available(env.alice) == alice
    assert env.history(env.alice, limit=1)[0].tx.kind == "void"


def test_an_api_key_call_whose_upstream_fails_gives_the_allowance_back(env: GatewayEnv) -> None:
    key = env.create_key("alice", "0.002", "1h")
    headers = {"Authorization": f"Bearer {key['apiKey']}", "X-Test-Fail": "500"}
    alice = env.available(env.alice)
    for _ in range(3):  # more failures than the cap would allow charges
        failed = requests.post(env.route_url(FLAT), data=BODY, headers=headers, timeout=30)
        assert failed.status_code == 502 and error_code(failed) == "upstream_error"
    env.wait_quiet()
    assert env.available(env.alice) == alice
    allowance = env.store.allowance(key["allowanceId"])
    assert allowance is not None and allowance.spent == 0


# ---- everything else a client can get wrong ----


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/no/such/route", 404),
        ("POST", "/v1/unknown", 404),
        ("GET", "/", 404),
        ("POST", "/ledger/info", 405),  # served for GET by the ledger API: JSON 405, not the catch-all's 404
        ("POST", "/openapi.json", 405),
        ("GET", "/ledger/accounts/0xnot-an-address", 400),
        ("GET", "/ledger/transactions/0x" + "ab" * 32, 404),
        ("GET", "/ledger/transactions/nonsense", 400),
        ("GET", "/ledger/blocks?limit=0", 400),
        ("GET", "/ledger/blocks/999999", 404),
        ("GET", "/ledger/consistency?old=0", 400),
        ("GET", "/ledger/consistency?old=0&new=99999", 404),
    ],
)
def test_client_mistakes_are_json_errors_never_500(env: GatewayEnv, method: str, path: str, status: int) -> None:
    before = env.quiet_dump()
    response = requests.request(method, env.url + path, timeout=10)
    assert response.status_code == status, response.text
    assert error_code(response)
    if status == 405:
        assert error_code(response) == "method_not_allowed" and "GET" in response.headers["Allow"]
    assert env.quiet_dump() == before


def test_a_body_over_max_body_bytes_is_413_json(env: GatewayEnv) -> None:
    from gateway.server.config import load_config

    limit = load_config(env.config_path).max_body_bytes
    response = requests.post(env.route_url(FLAT), data=b"x" * (limit + 1), timeout=60)
    assert response.status_code == 413 and error_code(response)

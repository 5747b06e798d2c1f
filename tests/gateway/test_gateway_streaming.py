"""Streamed, metered chat through the real gateway: events pass through as the upstream makes
them, the signed receipt arrives as an SSE comment before ``data: [DONE]`` and charges the
metered cost from the usage chunk; a client that hangs up mid-stream pays the flat price only
(``gateway/server/proxy.py``'s docstring), and an upstream that breaks off mid-stream costs nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import HttpxPaymentAuth, stream_receipt, verify_receipt_inclusion
from gateway.wire.errors import ReceiptInvalid
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header
from tests.support.gateway import (
    CHAT,
    CHAT_MAX,
    CHAT_MODEL,
    CHAT_PRICE,
    GatewayEnv,
    chat_cost,
    start_gateway_env,
)

RECEIPT_PREFIX = ": inferpay-receipt "


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-stream"))) as started:
        yield started


def chat_body(words: int, **extra: Any) -> dict[str, Any]:
    content = " ".join(f"word{i}" for i in range(words))
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "stream": True, **extra}


def test_a_metered_stream_arrives_progressively_and_ends_with_a_signed_receipt(env: GatewayEnv) -> None:
    auth = HttpxPaymentAuth(env.alice, trusted_sealer=env.chain.sealer)
    alice, operator = env.available(env.alice), env.available(env.operator)
    delay_ms = 150
    arrivals: list[tuple[float, str]] = []
    with httpx.Client(auth=auth, timeout=30) as client:
        started = time.monotonic()
        with client.stream(
            "POST",
            env.route_url(CHAT),
            json=chat_body(6, stream_options={"include_usage": True}),  # asked for: the usage chunk is passed on
            headers={"X-Test-Delay-Ms": str(delay_ms)},
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            pending = decode_header(r.headers["PAYMENT-RESPONSE"])
            for line in r.iter_lines():
                if line:
                    arrivals.append((time.monotonic() - started, line))

    lines = [line for _, line in arrivals]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    # role, six words, finish, usage: nine chunks, each made delay_ms after the previous one
    assert len(data) == 9 and data[-1]["choices"] == [] and data[-1]["usage"]["completion_tokens"] == 6
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in data[:-1]) == " ".join(
        f"word{i}" for i in range(6)
    )
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= 8 * delay_ms / 1000 * 0.8, arrivals  # the first chunk came long before the last was made
    assert first < last - 0.5

    # The receipt is a comment just before [DONE], and charges the metered cost of the usage chunk.
    assert lines[-1] == "data: [DONE]" and lines[-2].startswith(RECEIPT_PREFIX)
    assert sum(line.startswith(RECEIPT_PREFIX) for line in lines) == 1
    receipt = stream_receipt(lines[-2], env.chain.sealer)  # the SDK's reader checks the sealer's signature
    assert receipt is not None
    assert receipt == Receipt.from_dict(decode_header(lines[-2][len(RECEIPT_PREFIX) :])["receipt"])
    usage = data[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (6, 6)
    assert receipt.charged == chat_cost(6, 6) == 200 + 9 + 15 and receipt.authorized == CHAT_MAX
    assert pending["status"] == "pending" and pending["transaction"] == receipt.hold_id
    assert verify_receipt_inclusion(env.ledger_url, receipt, env.chain).header.height > 0
    env.wait_quiet()
    assert (env.available(env.alice), env.available(env.operator)) == (
        alice - receipt.charged,
        operator + receipt.charged,
    )


def test_a_client_that_disconnects_mid_stream_pays_the_flat_price_only(env: GatewayEnv) -> None:
    body = json.dumps(chat_body(30)).encode()
    header, _ = env.payment(env.alice, CHAT, bind=("POST", CHAT, body))
    alice = env.available(env.alice)
    headers = {"PAYMENT-SIGNATURE": header, "Content-Type": "application/json", "X-Test-Delay-Ms": "200"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", env.route_url(CHAT), content=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        hold_id = decode_header(r.headers["PAYMENT-RESPONSE"])["transaction"]
        received = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                received.append(line)
            if len(received) == 3:
                break  # hang up with 27 words still to come

    env.wait_for(lambda: env.store.hold(hold_id).status != "open", 15, "the hold to be resolved")  # type: ignore[union-attr]
    hold = env.store.hold(hold_id)
    assert hold is not None and (hold.status, hold.captured) == ("settle", CHAT_PRICE)
    env.wait_quiet()
    assert env.available(env.alice) == alice - CHAT_PRICE
    assert env.account(env.alice).held == 0 and not env.store.open_holds()
    env.audit_ok()


@pytest.mark.parametrize("failure", ["drop", "stall"])
def test_an_upstream_that_breaks_off_mid_stream_costs_nothing(env: GatewayEnv, failure: str) -> None:
    body = json.dumps(chat_body(5)).encode()
    header, _ = env.payment(env.alice, CHAT, bind=("POST", CHAT, body))
    alice = env.available(env.alice)
    headers = {"PAYMENT-SIGNATURE": header, "Content-Type": "application/json", "X-Test-Fail": failure}
    lines: list[str] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", env.route_url(CHAT), content=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        hold_id = decode_header(r.headers["PAYMENT-RESPONSE"])["transaction"]
        with pytest.raises(httpx.HTTPError):  # the gateway cuts the stream short: no [DONE], no receipt
            lines.extend(r.iter_lines())
    assert not any(line.startswith(RECEIPT_PREFIX) or line == "data: [DONE]" for line in lines)
    env.wait_for(lambda: env.store.hold(hold_id).status != "open", 15, "the hold to be resolved")  # type: ignore[union-attr]
    assert env.store.hold(hold_id).status == "void"  # type: ignore[union-attr]
    env.wait_quiet()
    assert env.available(env.alice) == alice


def test_a_stream_whose_client_asked_for_usage_still_gets_one_usage_chunk(env: GatewayEnv) -> None:
    body = json.dumps(chat_body(2, stream_options={"include_usage": True})).encode()
    header, _ = env.payment(env.alice, CHAT, bind=("POST", CHAT, body))
    headers = {"PAYMENT-SIGNATURE": header, "Content-Type": "application/json"}
    response = httpx.post(env.route_url(CHAT), content=body, headers=headers, timeout=30)
    assert response.status_code == 200
    usage_chunks = [line for line in response.text.splitlines() if line.startswith("data: {") and '"usage": {' in line]
    assert len(usage_chunks) == 1


def test_the_sdk_with_default_settings_pays_a_streamed_call(env: GatewayEnv) -> None:
    """Regression: the SDK (verify_receipts=True) refused the streamed call's pending PAYMENT-RESPONSE."""
    auth = HttpxPaymentAuth(env.alice)
    alice = env.available(env.alice)
    with httpx.Client(auth=auth, timeout=30) as client:
        try:
            with client.stream("POST", env.route_url(CHAT), json=chat_body(3)) as r:
                lines = [line for line in r.iter_lines() if line]
        except ReceiptInvalid as exc:
            pytest.fail(f"the SDK refused a streamed call: {exc}")
    assert lines[-1] == "data: [DONE]"
    receipts = [stream_receipt(line, env.chain.sealer) for line in lines]
    found = [r for r in receipts if r is not None]
    assert len(found) == 1 and found[0].charged == chat_cost(3, 3) and found[0].payer == env.alice.address
    assert auth.spent == CHAT_MAX  # until the caller accounts for the in-stream receipt, the whole hold counts
    env.wait_quiet()
    assert env.available(env.alice) == alice - chat_cost(3, 3)
    with pytest.raises(ReceiptInvalid):  # a receipt checked against another sealer is refused
        stream_receipt(next(line for line in lines if line.startswith(RECEIPT_PREFIX)), env.alice.address)

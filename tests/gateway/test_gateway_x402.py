"""The real gateway (gunicorn, 2 workers) paid over x402 v2: by the official x402 client, by a
hand-made v1 ``X-PAYMENT``, and by our SDK (``PaymentAuth``, ``HttpxPaymentAuth``), with the
receipts proven against the ledger, and paid by many threads at once without a base unit lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from gateway.client import (
    HttpxPaymentAuth,
    PaymentAuth,
    check_consistency,
    fetch_chain_info,
    fetch_head,
    receipt_of,
    verify_receipt_inclusion,
)
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header
from ledger.errors import InsufficientFunds
from ledger.types import HoldResolution
from tests.support.gateway import (
    CHAT,
    CHAT_MAX,
    CHAT_MODEL,
    EMBED,
    EMBED_MAX,
    EMBED_MODEL,
    FLAT,
    FLAT_PRICE,
    GatewayEnv,
    chat_cost,
    embed_cost,
    error_code,
    start_gateway_env,
)
from tests.support.upstreams.echo_upstream import word_count


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-x402"))) as started:
        yield started


def balances(env: GatewayEnv, *who: Any) -> list[int]:
    return [env.available(w) for w in who]


# ---- 1. the official x402 client, unmodified ----


def test_official_x402_client_pays_the_flat_route_unmodified(env: GatewayEnv) -> None:
    from x402 import x402ClientSync
    from x402.http.clients.requests import x402_requests
    from x402.mechanisms.evm.exact import ExactEvmScheme

    client = x402ClientSync()
    # ExactEvmScheme wraps an eth-account LocalAccount itself; only its annotation says ClientEvmSigner.
    client.register("eip155:*", ExactEvmScheme(env.alice.local_account()))  # type: ignore[arg-type]
    client.set_spend_controls({"allowed_assets": [{"network": env.network, "asset": env.chain.token_address}]})
    session = x402_requests(client)
    alice, operator = balances(env, env.alice, env.operator)

    response = session.post(env.route_url(FLAT), json={"hello": "x402"}, timeout=30)

    assert response.status_code == 200, response.text
    settlement = decode_header(response.headers["PAYMENT-RESPONSE"])
    assert settlement["success"] is True
    assert settlement["payer"] == env.alice.address and settlement["network"] == env.network
    assert settlement["amount"] == str(FLAT_PRICE)
    receipt = Receipt.from_dict(settlement["receipt"])
    receipt.verify(env.chain.sealer)
    assert (receipt.charged, receipt.authorized, receipt.path) == (FLAT_PRICE, FLAT_PRICE, FLAT)
    assert balances(env, env.alice, env.operator) == [alice - FLAT_PRICE, operator + FLAT_PRICE]
    assert receipt.balance_after == alice - FLAT_PRICE
    # The upstream got the body as sent, and none of the payment headers.
    echoed = response.json()
    assert echoed["body"] == '{"hello": "x402"}'
    assert not {"payment-signature", "x-payment", "authorization"} & set(echoed["headers"])
    env.wait_quiet()


def test_v1_x_payment_header_is_accepted_and_answered_with_x_payment_response(env: GatewayEnv) -> None:
    header, payload = env.payment(env.alice, FLAT, version=1)
    assert payload["x402Version"] == 1 and "accepted" not in payload
    alice = env.available(env.alice)

    response = requests.post(env.route_url(FLAT), json={"v": 1}, headers={"X-PAYMENT": header}, timeout=30)

    assert response.status_code == 200, response.text
    assert "PAYMENT-RESPONSE" not in response.headers
    settlement = decode_header(response.headers["X-PAYMENT-RESPONSE"])
    assert settlement["success"] is True and settlement["charged"] == str(FLAT_PRICE)
    Receipt.from_dict(settlement["receipt"]).verify(env.chain.sealer)
    assert env.available(env.alice) == alice - FLAT_PRICE


# ---- 2. our SDK: receipts verified, metered charges exact, proofs against the ledger ----


def test_payment_auth_flat_and_metered_receipts_prove_inclusion_and_consistency(env: GatewayEnv) -> None:
    chain = fetch_chain_info(env.ledger_url, expected_sealer=env.chain.sealer)
    assert chain == env.chain
    early_head = fetch_head(env.ledger_url, chain)
    auth = PaymentAuth(env.alice, trusted_sealer=env.chain.sealer)
    alice, operator = balances(env, env.alice, env.operator)

    flat = requests.post(env.route_url(FLAT), json={"q": "flat"}, auth=auth, timeout=30)
    assert flat.status_code == 200, flat.text
    text = "one two three four five six seven"  # 7 tokens: 100 + ceil(7 * 1500 / 1000) = 111
    metered = requests.post(env.route_url(EMBED), json={"model": EMBED_MODEL, "input": text}, auth=auth, timeout=30)
    assert metered.status_code == 200, metered.text
    assert metered.json()["usage"]["prompt_tokens"] == 7

    flat_receipt, metered_receipt = receipt_of(flat), receipt_of(metered)
    assert flat_receipt is not None and metered_receipt is not None
    assert (flat_receipt.charged, flat_receipt.authorized) == (FLAT_PRICE, FLAT_PRICE)
    assert (metered_receipt.charged, metered_receipt.authorized) == (embed_cost(7), EMBED_MAX)
    assert embed_cost(7) == 111
    assert auth.receipts == [flat_receipt, metered_receipt]
    assert auth.spent == FLAT_PRICE + 111  # the SDK gave back what the metered call did not use
    spent = FLAT_PRICE + 111
    assert balances(env, env.alice, env.operator) == [alice - spent, operator + spent]
    assert metered_receipt.balance_after == alice - spent

    for receipt in (flat_receipt, metered_receipt):
        block = verify_receipt_inclusion(env.ledger_url, receipt, chain)
        assert block.header.height > early_head.header.height
        settled = env.ledger.transaction(receipt.tx_id).tx.message
        assert isinstance(settled, HoldResolution) and settled.amount == receipt.charged
    new_head = check_consistency(env.ledger_url, early_head, chain)
    assert new_head.header.height > early_head.header.height
    assert check_consistency(env.ledger_url, new_head, chain).header.height >= new_head.header.height


def test_metered_charge_never_exceeds_the_routes_maximum(env: GatewayEnv) -> None:
    auth = PaymentAuth(env.alice)
    words = " ".join(f"w{i}" for i in range(10_000))  # 100 + 15000 uncapped: capped at 10000
    alice = env.available(env.alice)
    response = requests.post(env.route_url(EMBED), json={"model": EMBED_MODEL, "input": words}, auth=auth, timeout=30)
    assert response.status_code == 200, response.text
    receipt = receipt_of(response)
    assert receipt is not None and receipt.charged == EMBED_MAX == embed_cost(word_count(words))
    assert env.available(env.alice) == alice - EMBED_MAX


def test_httpx_payment_auth_pays_flat_and_metered_chat(env: GatewayEnv) -> None:
    auth = HttpxPaymentAuth(env.alice, max_per_call=CHAT_MAX)
    alice = env.available(env.alice)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c d e"}]
    with httpx.Client(auth=auth, timeout=30) as client:
        flat = client.post(env.route_url(FLAT), json={"q": "httpx"})
        chat = client.post(env.route_url(CHAT), json={"model": CHAT_MODEL, "messages": messages})
        short = client.post(env.route_url(CHAT), json={"model": CHAT_MODEL, "messages": messages, "max_tokens": 2})
    assert [r.status_code for r in (flat, chat, short)] == [200, 200, 200], chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "a b c d e"
    usage = chat.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (7, 5)
    charged = [receipt_of(r).charged for r in (flat, chat, short)]  # type: ignore[union-attr]
    # 200 + ceil(7 * 1.5) + ceil(5 * 2.5) = 200 + 11 + 13; with max_tokens 2: 200 + 11 + 5
    assert charged == [FLAT_PRICE, chat_cost(7, 5), chat_cost(7, 2)] == [FLAT_PRICE, 224, 216]
    assert env.available(env.alice) == alice - sum(charged)


def test_sdk_refuses_to_pay_past_its_per_call_limit_and_nothing_is_charged(env: GatewayEnv) -> None:
    from gateway.wire.errors import SpendLimitExceeded

    auth = PaymentAuth(env.alice, max_per_call=FLAT_PRICE)
    before = env.quiet_dump()
    with pytest.raises(SpendLimitExceeded) as raised:
        requests.post(env.route_url(EMBED), json={"model": EMBED_MODEL, "input": "x"}, auth=auth, timeout=30)
    assert raised.value.response.status_code == 402  # type: ignore[attr-defined]
    assert env.quiet_dump() == before


# ---- 4. many threads, two workers, one balance ----


def test_thirty_concurrent_paid_calls_from_a_wallet_that_affords_ten(env: GatewayEnv) -> None:
    carol = env.new_wallet("carol", "0.01")  # exactly 10 flat calls
    operator = env.available(env.operator)
    auth = PaymentAuth(carol)  # one auth shared by every thread: each call signs its own payment
    barrier = threading.Barrier(30)

    def call(i: int) -> tuple[int, str]:
        barrier.wait()
        try:
            response = requests.post(env.route_url(FLAT), json={"call": i}, auth=auth, timeout=60)
        except InsufficientFunds as exc:
            refused = exc.response  # type: ignore[attr-defined]
            assert "PAYMENT-REQUIRED" in refused.headers
            return refused.status_code, error_code(refused)
        return response.status_code, "ok"

    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(call, range(30)))

    assert sorted(outcomes).count((200, "ok")) == 10, outcomes
    assert outcomes.count((402, "insufficient_funds")) == 20, outcomes
    env.wait_quiet()
    assert env.account(carol).available == 0 and env.account(carol).held == 0
    assert env.available(env.operator) == operator + 10 * FLAT_PRICE
    assert len(auth.receipts) == 10 and all(r.charged == FLAT_PRICE for r in auth.receipts)
    env.audit_ok()


def test_one_payment_sent_by_eight_threads_at_once_is_charged_once(env: GatewayEnv) -> None:
    header, _ = env.payment(env.alice, FLAT)
    alice = env.available(env.alice)
    barrier = threading.Barrier(8)

    def send(_: int) -> requests.Response:
        barrier.wait()
        return requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [402] * 7, [(r.status_code, r.text[:200]) for r in responses]
    refused = [r for r in responses if r.status_code == 402]
    assert {error_code(r) for r in refused} == {"payment_already_used"}
    assert all("PAYMENT-REQUIRED" in r.headers for r in refused)
    env.wait_quiet()
    assert env.available(env.alice) == alice - FLAT_PRICE

    time.sleep(1.1)  # replayed later, in another second of the ledger's clock
    replay = requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert replay.status_code == 402 and error_code(replay) == "payment_already_used"
    assert "PAYMENT-REQUIRED" in replay.headers
    assert env.available(env.alice) == alice - FLAT_PRICE
    env.audit_ok()


def test_a_long_lived_payment_replayed_later_is_payment_already_used(env: GatewayEnv) -> None:
    """Regression: a hold's id covers its expiry, min(now + hold_seconds, validBefore), so a payment
    valid longer than hold_seconds replayed a second later is another hold id; it was refused as
    nonce_reused, not payment_already_used."""
    header, _ = env.payment(env.alice, FLAT, valid_before=int(time.time()) + 3600)
    first = requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert first.status_code == 200, first.text
    time.sleep(1.1)
    replay = requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert replay.status_code == 402
    assert error_code(replay) == "payment_already_used"

"""The official openai client through the real gateway: with an API key made by
``inferpay key create`` (embeddings, chat, streamed chat; the cap, the expiry and revocation
enforced), and with x402 payment through ``HttpxPaymentAuth`` as its ``http_client``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests

from gateway.client import HttpxPaymentAuth
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header
from tests.support.gateway import (
    CHAT_MODEL,
    EMBED,
    EMBED_MODEL,
    EMBED_PRICE,
    FLAT,
    FLAT_PRICE,
    HAVE_MODEL,
    MODEL_EMBED,
    REAL_MODEL,
    GatewayEnv,
    chat_cost,
    embed_cost,
    error_code,
    start_gateway_env,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[GatewayEnv]:
    # The real model only when one of this module's `model` tests is selected (not under
    # `-m "not model"`, as in `make test-fast`): loading it is most of the module's time.
    with_model = any(
        item.module is request.module and item.get_closest_marker("model") is not None for item in request.session.items
    )
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-keys")), with_model=with_model) as started:
        yield started


_clients: list[openai.OpenAI] = []  # every client a test made, closed after it by _close_clients


def openai_client(
    env: GatewayEnv, api_key: str, *, prefix: str = "/v1", timeout: float = 30, **kw: Any
) -> openai.OpenAI:
    client = openai.OpenAI(base_url=env.url + prefix, api_key=api_key, max_retries=0, timeout=timeout, **kw)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()  # its connection pool (and an http_client passed in)


def key_status(env: GatewayEnv, allowance_id: str) -> dict[str, Any]:
    listed = json.loads(env.cli("key", "list", "--json").stdout)
    found: dict[str, Any] = next(k for k in listed if k["allowanceId"] == allowance_id)
    return found


def api_error(exc: openai.APIStatusError) -> str:
    body = exc.response.json()
    code: str = body["error"]["code"]
    return code


def test_openai_client_with_an_api_key_gets_embeddings_and_chat(env: GatewayEnv) -> None:
    key = env.create_key("alice", "0.1", "1h")
    client = openai_client(env, key["apiKey"])
    alice = env.available(env.alice)

    raw = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input=["hello world", "three words here"])
    embeddings = raw.parse()
    assert [len(d.embedding) for d in embeddings.data] == [8, 8]  # the SDK asked for base64 and decoded it
    assert embeddings.usage.prompt_tokens == 5
    receipt = Receipt.from_dict(decode_header(raw.headers["PAYMENT-RESPONSE"])["receipt"])
    receipt.verify(env.chain.sealer)
    assert receipt.charged == embed_cost(5) == 108 and receipt.payer == env.alice.address

    messages: Any = [{"role": "user", "content": "tell me four words"}]
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=messages)
    assert chat.choices[0].message.content == "tell me four words"
    assert chat.usage is not None and (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (4, 4)

    stream = client.chat.completions.create(model=CHAT_MODEL, messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tell me four words"

    spent = 108 + 2 * chat_cost(4, 4)
    env.wait_quiet()
    assert env.available(env.alice) == alice - spent
    assert key_status(env, key["allowanceId"])["spent"] == str(spent)


def test_charges_stop_at_the_cap(env: GatewayEnv) -> None:
    dave = env.new_wallet("dave", "1")
    key = env.create_key("dave", "0.01", "1h")  # exactly ten flat calls
    headers = {"Authorization": f"Bearer {key['apiKey']}"}
    statuses = []
    for i in range(12):
        response = requests.post(env.route_url(FLAT), json={"i": i}, headers=headers, timeout=30)
        statuses.append(response.status_code)
        if response.status_code != 200:
            assert response.status_code == 402 and error_code(response) == "allowance_exhausted"
    assert statuses == [200] * 10 + [402] * 2
    env.wait_quiet()
    assert env.available(dave) == 1_000_000 - 10 * FLAT_PRICE
    assert key_status(env, key["allowanceId"])["spent"] == str(10 * FLAT_PRICE)

    # Through openai on a metered route: each call holds min(route maximum, what the key has left)
    # and captures its metered cost, so a small key keeps working until less than a price is left.
    cost = embed_cost(3)
    cap = 2 * cost + EMBED_PRICE // 2  # two full calls, then less than the flat price left
    key = env.create_key("dave", f"{cap / 1e6:.6f}", "1h")
    client = openai_client(env, key["apiKey"])
    before = env.available(dave)
    for _ in range(2):
        client.embeddings.create(model=EMBED_MODEL, input="hello world three", encoding_format="float")
    with pytest.raises(openai.APIStatusError) as refused:
        client.embeddings.create(model=EMBED_MODEL, input="hello world three", encoding_format="float")
    assert refused.value.status_code == 402 and api_error(refused.value) == "allowance_exhausted"
    env.wait_quiet()
    assert env.available(dave) == before - 2 * cost
    assert int(key_status(env, key["allowanceId"])["spent"]) == 2 * cost <= cap
    env.audit_ok()


def test_an_expired_key_is_401_allowance_expired(env: GatewayEnv) -> None:
    key = env.create_key("alice", "1", "1s")
    before = env.quiet_dump()
    time.sleep(max(0.0, key["validBefore"] - time.time()) + 0.1)
    with pytest.raises(openai.AuthenticationError) as refused:
        openai_client(env, key["apiKey"]).embeddings.create(model=EMBED_MODEL, input="too late")
    assert refused.value.status_code == 401 and api_error(refused.value) == "allowance_expired"
    assert env.quiet_dump() == before


def test_a_revoked_key_is_401_invalid_api_key(env: GatewayEnv) -> None:
    key = env.create_key("alice", "1", "1h")
    client = openai_client(env, key["apiKey"])
    client.embeddings.create(model=EMBED_MODEL, input="still good")
    prefix = key_status(env, key["allowanceId"])["prefix"]
    assert key["apiKey"].startswith(prefix)
    assert "revoked 1 key" in env.cli("key", "revoke", prefix).stdout
    assert key_status(env, key["allowanceId"])["status"] == "revoked"
    before = env.quiet_dump()
    with pytest.raises(openai.AuthenticationError) as refused:
        client.embeddings.create(model=EMBED_MODEL, input="not any more")
    assert api_error(refused.value) == "invalid_api_key"
    unknown = {"Authorization": "Bearer ipk_" + "x" * 43}  # shaped like a key, but never issued
    response = requests.post(env.route_url(EMBED), json={}, headers=unknown, timeout=10)
    assert response.status_code == 401 and error_code(response) == "invalid_api_key"
    assert env.quiet_dump() == before


def test_a_key_never_takes_a_balance_below_zero(env: GatewayEnv) -> None:
    erin = env.new_wallet("erin", "0.0025")  # two and a half flat calls
    key = env.create_key("erin", "1", "1h")  # the cap is no limit here: the balance is
    headers = {"Authorization": f"Bearer {key['apiKey']}"}
    outcomes = []
    for i in range(4):
        response = requests.post(env.route_url(FLAT), json={"i": i}, headers=headers, timeout=30)
        outcomes.append(response.status_code if response.ok else (response.status_code, error_code(response)))
    assert outcomes == [200, 200, (402, "insufficient_funds"), (402, "insufficient_funds")]
    env.wait_quiet()
    assert env.account(erin).available == 500 and env.account(erin).held == 0
    for account in env.store.accounts():
        assert account.available >= 0 and account.held >= 0


def test_a_key_whose_cap_is_below_a_routes_maximum_can_still_call_it(env: GatewayEnv) -> None:
    """The charge holds min(max_amount, what the key has left), not the route's whole maximum (0.02
    on chat), so a 0.01 key pays for a call that costs 0.0002."""
    key = env.create_key("alice", "0.01", "1h")
    before = env.available(env.alice)
    reply = openai_client(env, key["apiKey"]).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hi"
    env.wait_quiet()
    assert env.available(env.alice) == before - chat_cost(1, 1)


def test_openai_client_pays_over_x402_through_httpx_payment_auth(env: GatewayEnv) -> None:
    """Regression: the openai SDK always sends `Authorization: Bearer <api_key>`; the gateway took
    any bearer token for an inferpay key and answered 401 instead of the 402 the auth pays."""
    auth = HttpxPaymentAuth(env.alice)
    client = openai_client(env, "unused", http_client=httpx.Client(auth=auth, timeout=30))
    alice = env.available(env.alice)
    embeddings = client.embeddings.create(model=EMBED_MODEL, input="paid by signature")
    assert embeddings.usage.prompt_tokens == 3
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "a b"}])
    assert chat.choices[0].message.content == "a b"
    assert [r.charged for r in auth.receipts] == [embed_cost(3), chat_cost(2, 2)]
    assert env.available(env.alice) == alice - embed_cost(3) - chat_cost(2, 2)


def test_a_stream_the_client_did_not_ask_usage_for_has_no_chunk_without_choices(env: GatewayEnv) -> None:
    """Regression: the gateway asks the upstream for usage, and used to forward the usage-only
    chunk (``choices == []``) to clients that never asked, breaking ``chunk.choices[0]`` loops."""
    key = env.create_key("alice", "0.1", "1h")
    alice = env.available(env.alice)
    stream = openai_client(env, key["apiKey"]).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "x y"}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "x y"
    env.wait_quiet()  # still billed on the usage the upstream reported to the gateway
    assert env.available(env.alice) == alice - chat_cost(2, 2)


# Last in the module: the model has been loading while the tests above ran.
@pytest.mark.model
@pytest.mark.skipif(not HAVE_MODEL, reason="the model extra is not installed")
def test_openai_client_buys_real_embeddings_billed_on_the_models_own_token_count(env: GatewayEnv) -> None:
    assert env.model_warm_up is not None
    env.model_warm_up.join(timeout=120)  # the model loads on its first request, sent when the module began
    key = env.create_key("alice", "0.1", "1h")
    client = openai_client(env, key["apiKey"], prefix="/v1/model", timeout=60)
    alice = env.available(env.alice)
    raw = client.embeddings.with_raw_response.create(model=REAL_MODEL, input=["hello world", "a cat sleeps"])
    embeddings = raw.parse()
    assert [len(d.embedding) for d in embeddings.data] == [384, 384]
    # BERT WordPiece with [CLS] and [SEP]: "hello world" is 4 tokens, "a cat sleeps" 5
    assert embeddings.usage.prompt_tokens == 9
    receipt = Receipt.from_dict(decode_header(raw.headers["PAYMENT-RESPONSE"])["receipt"])
    assert receipt.charged == embed_cost(9) == 100 + 14 and receipt.path == MODEL_EMBED
    env.wait_quiet()
    assert env.available(env.alice) == alice - receipt.charged

"""The compute pool behind a real gateway (gunicorn, 2 workers), with FAKE providers.

Providers here are the fake chat upstream (``tests.support.upstreams.pool_provider``: nothing
generative runs offline) in real processes on their own ports, registered on the ledger by their
own wallets over the gateway's ledger API, plus one registered on a closed port (down). The real
embedding model behind the pool is tests/gateway/test_pool_models.py. Every amount is compared
with ``ledger.pool``'s prices and with the ledger file the gateway writes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth
from gateway.wire.errors import UpstreamError
from gateway.wire.x402 import decode_header
from ledger.pool import max_call_price, provider_price
from ledger.types import Redeem, SplitSettlement
from tests.support.gateway import GatewayEnv, error_code, start_gateway_env
from tests.support.pool_gateway import (
    HEALTH_INTERVAL_MS,
    POOL_CHAT,
    POOL_CONFIG,
    PoolProviders,
    chat,
)
from tests.support.servers import ServerHandle, free_port, run_wsgi_in_process

CHEAP, DEAR, DOWN, UNLISTED = "cheap", "dear", "down", "unlisted"
FEE_BPS, FLAT_FEE = 1000, 5  # 10 % of the provider's price, rounded up, plus 5 base units


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayEnv, PoolProviders, dict[str, ServerHandle]]]:
    directory = tmp_path_factory.mktemp("pool")
    factory = "tests.support.upstreams.pool_provider:create_provider_app"
    with (
        run_wsgi_in_process(factory, "ok", threads=16) as cheap,
        run_wsgi_in_process(factory, "ok", threads=16) as dear,
        start_gateway_env(directory, extra_config=POOL_CONFIG) as env,
    ):
        providers = PoolProviders(env)
        providers.set_fee(FEE_BPS, FLAT_FEE)
        providers.register(CHEAP, cheap.url + "/v1", per_call=100, per_1k_in=10, per_1k_out=20)
        providers.register(DEAR, dear.url + "/v1", per_call=300, per_1k_in=30, per_1k_out=60)
        providers.register(DOWN, f"http://127.0.0.1:{free_port()}/v1", per_call=50)  # cheap, and down
        # The cheapest of all, live, but never approved: under accept = "listed" it gets no call.
        providers.register(UNLISTED, cheap.url + "/v1", per_call=1, approve=False)
        env.wait_for(
            lambda: providers.routable_everywhere(
                lambda r: r == {env.wallets[CHEAP].address, env.wallets[DEAR].address}
            ),
            what="the down provider's circuit to open and the two live ones to be routable",
        )
        yield env, providers, {CHEAP: cheap, DEAR: dear}


def addr(env: GatewayEnv, name: str) -> str:
    return env.wallets[name].address


def splits(env: GatewayEnv) -> list[tuple[str, SplitSettlement]]:
    out = []
    for raw in env.store.iter_raw_transactions():
        stored = env.store.get(raw.tx_id)
        if stored is not None and stored.tx.kind == "split_settle":
            assert isinstance(stored.tx.message, SplitSettlement)
            out.append((stored.tx_id, stored.tx.message))
    return out


def paid(env: GatewayEnv, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    return requests.post(env.route_url(POOL_CHAT), json=body, auth=PaymentAuth(env.alice), timeout=30, **kwargs)


def split_of(response: requests.Response) -> dict[str, Any]:
    answer = decode_header(response.headers["PAYMENT-RESPONSE"])
    split: dict[str, Any] = answer["split"]
    assert answer["receipt"]["provider"] == split["provider"]
    assert int(split["providerAmount"]) + int(split["fee"]) == int(answer["charged"])
    return split


def test_the_402_quotes_the_dearest_candidate_at_the_requests_bounds(pool: Any) -> None:
    env, providers, _ = pool
    body = chat(3, max_tokens=10)
    raw = json.dumps(body).encode()
    answer = requests.post(env.route_url(POOL_CHAT), data=raw, headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 402, answer.text
    terms = decode_header(answer.headers["PAYMENT-REQUIRED"])
    fee = env.ledger.pool_fee_in_force()
    quotes = [max_call_price(env.ledger.provider(addr(env, n)).registration, fee, len(raw), 10) for n in (CHEAP, DEAR)]
    assert {a["amount"] for a in terms["accepts"]} == {str(max(quotes))}
    assert {a["payTo"] for a in terms["accepts"]} == {env.operator}


def test_sort_price_sends_every_call_to_the_cheaper_provider_and_splits_it_exactly(pool: Any) -> None:
    env, providers, _ = pool
    before = env.available(env.alice)
    charged = 0
    for _ in range(4):
        response = paid(env, chat(4, provider={"sort": "price"}))
        assert response.status_code == 200, response.text
        assert response.headers["X-Inferpay-Provider"] == addr(env, CHEAP)
        split = split_of(response)
        reg = env.ledger.provider(addr(env, CHEAP)).registration
        usage = response.json()["usage"]
        expected = provider_price(reg, usage["prompt_tokens"], usage["completion_tokens"])
        assert int(split["providerAmount"]) == expected
        assert int(split["fee"]) == FLAT_FEE + -(-expected * FEE_BPS // 10_000)
        assert split["operator"] == env.operator and split["usageCapped"] is False
        charged += int(split["providerAmount"]) + int(split["fee"])
    env.wait_quiet()
    assert env.available(env.alice) == before - charged


@pytest.mark.parametrize(
    ("prefs", "served_by"),
    [
        ({"order": ["DEAR"]}, DEAR),
        ({"only": ["DEAR"]}, DEAR),
        ({"ignore": ["CHEAP"]}, DEAR),
        ({"order": ["DEAR", "CHEAP"], "sort": "latency"}, DEAR),
    ],
)
def test_order_only_and_ignore_pick_the_provider(pool: Any, prefs: dict[str, Any], served_by: str) -> None:
    env, _, _ = pool
    names = {"DEAR": addr(env, DEAR), "CHEAP": addr(env, CHEAP)}
    resolved = {k: [names[n] for n in v] if isinstance(v, list) else v for k, v in prefs.items()}
    response = paid(env, chat(2, provider=resolved))
    assert response.status_code == 200, response.text
    assert response.headers["X-Inferpay-Provider"] == addr(env, served_by)
    assert split_of(response)["provider"] == addr(env, served_by)


def test_max_price_below_every_provider_is_a_402_that_holds_nothing(pool: Any) -> None:
    env, _, _ = pool
    env.wait_quiet()
    txs, balance = env.tx_count(), env.available(env.alice)
    response = requests.post(env.route_url(POOL_CHAT), json=chat(2, provider={"max_price": 10}), timeout=10)
    assert response.status_code == 402
    assert error_code(response) == "no_provider_within_price"
    assert "max_price 10" in response.json()["error"]["message"]
    paid_try = paid(env, chat(2, provider={"max_price": "10"}))  # the SDK, too, is refused before paying
    assert paid_try.status_code == 402 and error_code(paid_try) == "no_provider_within_price"
    env.wait_quiet()
    assert env.tx_count() == txs and env.available(env.alice) == balance and not env.store.open_holds()


@pytest.mark.parametrize(
    "provider",
    [
        "cheap",
        {"sort": "fastest"},
        {"max_price": 1.5},
        {"allow_fallbacks": "no"},
        {"order": ["0x1234"]},
        {"quantizations": ["int8"]},
    ],
)
def test_a_malformed_provider_object_is_a_400_naming_it(pool: Any, provider: Any) -> None:
    env, _, _ = pool
    response = requests.post(env.route_url(POOL_CHAT), json=chat(2, provider=provider), timeout=10)
    assert response.status_code == 400, response.text
    assert error_code(response) == "malformed_provider_preferences"
    assert "provider" in response.json()["error"]["message"]


def provider_calls(server: ServerHandle) -> int:
    count: int = requests.get(server.url + "/test/calls", timeout=5).json()["calls"]
    return count


def set_mode(server: ServerHandle, mode: str) -> None:
    assert requests.post(server.url + "/test/mode", json={"mode": mode}, timeout=5).status_code == 200


def test_a_failing_provider_fails_over_under_one_hold_or_returns_its_failure_without_fallbacks(pool: Any) -> None:
    env, providers, servers = pool
    env.wait_for(lambda: providers.routable_everywhere(lambda r: addr(env, CHEAP) in r), what="cheap routable")
    set_mode(servers[CHEAP], "500")
    try:
        env.wait_quiet()
        balance, dear_calls = env.available(env.alice), provider_calls(servers[DEAR])
        with pytest.raises(UpstreamError) as caught:  # the SDK raises the gateway's error
            paid(env, chat(2, provider={"allow_fallbacks": False, "order": [addr(env, CHEAP)]}))
        refused = caught.value.response  # type: ignore[attr-defined]
        assert refused.status_code == 502, refused.text
        assert error_code(refused) == "upstream_error"
        assert refused.json()["error"]["attempts"][0]["provider"] == addr(env, CHEAP)
        assert len(refused.json()["error"]["attempts"]) == 1
        assert provider_calls(servers[DEAR]) == dear_calls  # not retried elsewhere
        env.wait_quiet()
        assert env.available(env.alice) == balance  # voided: nothing charged

        served = paid(env, chat(2, provider={"order": [addr(env, CHEAP)]}))
        assert served.status_code == 200, served.text
        assert served.headers["X-Inferpay-Provider"] == addr(env, DEAR)
        env.wait_quiet()
        assert env.available(env.alice) == balance - int(decode_header(served.headers["PAYMENT-RESPONSE"])["charged"])

        # A stream fails over too, before its first byte: the client sees one stream, from dear.
        count = len(splits(env))
        streamed = paid(env, chat(2, stream=True, provider={"order": [addr(env, CHEAP)]}), stream=True)
        assert streamed.status_code == 200 and streamed.headers["X-Inferpay-Provider"] == addr(env, DEAR)
        assert "inferpay-receipt" in streamed.content.decode()
        env.wait_quiet()
        assert len(splits(env)) == count + 1 and splits(env)[-1][1].provider == addr(env, DEAR)
    finally:
        set_mode(servers[CHEAP], "ok")
    env.wait_for(
        lambda: providers.routable_everywhere(lambda r: addr(env, CHEAP) in r), what="cheap's circuit to close again"
    )


def test_usage_above_the_bounds_is_capped_and_flagged_and_garbage_usage_pays_the_call_price(pool: Any) -> None:
    env, _, servers = pool
    reg = env.ledger.provider(addr(env, CHEAP)).registration
    set_mode(servers[CHEAP], "inflate")
    try:
        body = chat(3, max_tokens=7, provider={"only": [addr(env, CHEAP)]})
        response = paid(env, body)
        assert response.status_code == 200, response.text
        split = split_of(response)
        raw_size = len(json.dumps(body).encode())  # requests' json= encoding is json.dumps's
        assert split["usageCapped"] is True
        assert split["outputTokens"] == 7 and split["inputTokens"] <= raw_size
        assert int(split["providerAmount"]) == provider_price(reg, split["inputTokens"], 7)
        set_mode(servers[CHEAP], "garbage")
        response = paid(env, chat(3, provider={"only": [addr(env, CHEAP)]}))
        assert response.status_code == 200, response.text
        split = split_of(response)
        assert (split["inputTokens"], split["outputTokens"]) == (0, 0)
        assert int(split["providerAmount"]) == reg.price_per_call
    finally:
        set_mode(servers[CHEAP], "ok")
    env.wait_quiet()
    flagged = [s for _, s in splits(env) if s.usage_capped]
    assert len(flagged) == 1 and flagged[0].output_tokens == 7


def test_inferpay_call_prints_the_split(pool: Any) -> None:
    env, _, _ = pool
    result = env.cli("call", env.route_url(POOL_CHAT), "--wallet", "alice", "--data", json.dumps(chat(2)))
    assert f"split:   provider {addr(env, CHEAP)} " in result.stderr and f"operator {env.operator} " in result.stderr


def test_an_api_key_and_a_stream_are_paid_by_one_split_each(pool: Any) -> None:
    env, _, _ = pool
    key = env.create_key("alice", "1")["apiKey"]
    response = requests.post(
        env.route_url(POOL_CHAT), json=chat(3), headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert split_of(response)["provider"] == addr(env, CHEAP)
    count = len(splits(env))
    streamed = requests.post(
        env.route_url(POOL_CHAT), json=chat(3, stream=True), auth=PaymentAuth(env.alice), timeout=30, stream=True
    )
    assert streamed.status_code == 200
    text = streamed.content.decode()
    assert "inferpay-receipt" in text and text.rstrip().endswith("data: [DONE]")
    env.wait_quiet()
    assert len(splits(env)) == count + 1


def test_the_pool_figures_are_in_metrics_and_the_pool_json(pool: Any) -> None:
    env, providers, _ = pool
    info = providers.pool_info()
    document = requests.get(env.url + "/openapi.json", timeout=10).json()
    assert "/pool" in document["paths"] and POOL_CHAT in document["paths"]
    by_address = {p["address"]: p for p in info["providers"]}
    assert by_address[addr(env, DOWN)]["circuit"] in ("open", "half_open")
    assert by_address[addr(env, DOWN)]["routable"] is False
    assert by_address[addr(env, UNLISTED)]["approved"] is False and by_address[addr(env, UNLISTED)]["routable"] is False
    assert info["fee"]["feeBps"] == str(FEE_BPS)
    metrics = requests.get(env.url + "/metrics", timeout=10).text
    assert f'inferpay_pool_provider_routable{{provider="{addr(env, DOWN)}"}} 0.0' in metrics
    assert f'inferpay_pool_provider_routable{{provider="{addr(env, CHEAP)}"}} 1.0' in metrics
    assert f'inferpay_pool_provider_calls_total{{outcome="served",provider="{addr(env, CHEAP)}"}}' in metrics
    snapshot = json.loads((env.home / "pool-health.json").read_text())
    assert {p["address"] for p in snapshot["providers"]} == set(by_address)
    info = json.loads(env.cli("info", "--json").stdout)["pool"]  # inferpay info on the gateway's host
    assert {p["address"] for p in info["providers"]} == set(by_address)
    assert {p["address"]: p["circuit"] for p in info["health"]["providers"]}[addr(env, CHEAP)] == "closed"
    text = env.cli("info").stdout
    assert f"  {addr(env, DOWN)}  active; circuit " in text and "pool:          4 providers; fee 1000 bps" in text
    assert f"  {addr(env, UNLISTED)}  active, not approved; " in text


def test_a_registration_replaced_mid_call_voids_the_call_and_charges_nothing(pool: Any) -> None:
    env, providers, servers = pool
    env.wait_quiet()
    balance, count = env.available(env.alice), len(splits(env))
    answers: list[requests.Response] = []

    def slow_call() -> None:
        answers.append(
            requests.post(
                env.route_url(POOL_CHAT),
                json=chat(2, provider={"only": [addr(env, CHEAP)]}),
                headers={"X-Test-Delay-Ms": "1500"},  # the fake provider's own delay, forwarded to it
                auth=PaymentAuth(env.alice, verify_receipts=False),
                timeout=30,
            )
        )

    thread = threading.Thread(target=slow_call)
    thread.start()
    env.wait_for(lambda: bool(env.store.open_holds()), what="the slow call's hold")
    # The provider re-registers (same prices, a new registration) while its call runs: the
    # split the gateway asks for names a registration no longer in force, so the ledger refuses
    # it and the gateway voids the hold. The provider is not paid for that call, the payer not charged.
    providers.register(CHEAP, servers[CHEAP].url + "/v1", per_call=100, per_1k_in=10, per_1k_out=20, approve=False)
    thread.join(timeout=30)
    assert answers and answers[0].status_code == 200 and "PAYMENT-RESPONSE" not in answers[0].headers
    env.wait_quiet()
    assert env.available(env.alice) == balance and len(splits(env)) == count


def test_a_withdrawn_provider_stops_receiving_calls_within_one_health_interval(pool: Any) -> None:
    env, providers, servers = pool
    providers.register(DEAR, servers[DEAR].url + "/v1", per_call=300, per_1k_in=30, per_1k_out=60, status="withdrawn")
    withdrawn_at = time.monotonic()
    env.wait_for(lambda: addr(env, DEAR) not in providers.routable(), timeout=10, what="dear to be withdrawn")
    took_ms = (time.monotonic() - withdrawn_at) * 1000
    # Both workers re-read the pool at least once per health interval; the slack is this busy
    # machine's, not the gateway's (the measured figure is printed for the report).
    print(f"withdrawal seen after {took_ms:.0f} ms (health interval {HEALTH_INTERVAL_MS} ms)")
    env.wait_for(lambda: providers.routable_everywhere(lambda r: addr(env, DEAR) not in r), what="every worker")
    calls = provider_calls(servers[DEAR])
    for _ in range(4):
        response = paid(env, chat(2, provider={"order": [addr(env, DEAR)]}))
        assert response.status_code == 200 and response.headers["X-Inferpay-Provider"] == addr(env, CHEAP)
    only = requests.post(env.route_url(POOL_CHAT), json=chat(2, provider={"only": [addr(env, DEAR)]}), timeout=10)
    assert only.status_code == 503 and error_code(only) == "no_provider_available"
    assert provider_calls(servers[DEAR]) == calls
    # Back in: a newer active registration (and the approval still in force).
    providers.register(DEAR, servers[DEAR].url + "/v1", per_call=300, per_1k_in=30, per_1k_out=60, approve=False)
    env.wait_for(lambda: providers.routable_everywhere(lambda r: addr(env, DEAR) in r), what="dear to rejoin")


def test_killing_a_provider_under_load_moves_its_calls_with_none_lost_or_charged_twice(pool: Any) -> None:
    env, providers, servers = pool
    env.wait_for(lambda: providers.routable_everywhere(lambda r: len(r) == 2), what="both live providers routable")
    env.wait_quiet()
    before_splits = {tx for tx, _ in splits(env)}
    balance = env.available(env.alice)
    results: list[tuple[int, int, str]] = []  # (status, charged, provider)
    after_kill: list[str] = []  # who served the calls sent once the kill was done
    killed = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        auth = PaymentAuth(env.alice)
        for _ in range(n):
            sent_after_kill = killed.is_set()
            r = requests.post(env.route_url(POOL_CHAT), json=chat(3), auth=auth, timeout=30)
            charged = int(decode_header(r.headers["PAYMENT-RESPONSE"])["charged"]) if r.status_code == 200 else 0
            with lock:
                results.append((r.status_code, charged, r.headers.get("X-Inferpay-Provider", "")))
                if sent_after_kill:
                    after_kill.append(r.headers.get("X-Inferpay-Provider", ""))

    threads = [threading.Thread(target=client, args=(12,)) for _ in range(4)]
    for t in threads:
        t.start()
    env.wait_for(lambda: len(results) >= 8, what="load to be under way")
    servers[CHEAP].process.kill()  # SIGKILL, mid-load
    killed.set()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 48
    assert all(status == 200 for status, _, _ in results), [s for s, _, _ in results if s != 200]
    served = {p for _, _, p in results}
    assert served == {addr(env, CHEAP), addr(env, DEAR)}  # some before the kill, the rest moved
    assert after_kill and set(after_kill) == {addr(env, DEAR)}
    env.wait_quiet()
    new = [(tx, s) for tx, s in splits(env) if tx not in before_splits]
    assert len(new) == 48  # one split per served call: none lost, none twice
    assert len({s.hold_id for _, s in new}) == 48
    assert sum(c for _, c, _ in results) == sum(s.amount for _, s in new) == balance - env.available(env.alice)


def test_the_books_balance_earnings_fees_supply_and_verify(pool: Any, tmp_path: Path) -> None:
    env, providers, _ = pool
    env.wait_quiet()
    every = [s for _, s in splits(env)]
    assert env.ledger.provider_earnings(addr(env, UNLISTED)).calls == 0
    for name in (CHEAP, DEAR, DOWN, UNLISTED):
        mine = [s for s in every if s.provider == addr(env, name)]
        earnings = env.ledger.provider_earnings(addr(env, name))
        assert earnings.earned == sum(s.provider_amount for s in mine)
        assert earnings.calls == len(mine)
    assert env.ledger.operator_fees() == sum(s.fee for s in every)
    assert sum(s.amount for s in every) == sum(s.provider_amount + s.fee for s in every)
    # The cheaper provider redeems half its earnings: supply goes down by exactly that, and
    # every balance still sums to the supply.
    supply, cheap = env.store.supply(), env.wallets[CHEAP]
    value = env.available(cheap) // 2
    redeem = Redeem(cheap.address, value, "payout-test-1", "0x" + secrets.token_hex(32))
    providers.api.redeem(redeem, cheap.sign(env.chain, redeem))
    env.wait_quiet()
    assert env.store.supply() == supply - value
    assert env.store.supply() == sum(a.available + a.held for a in env.store.accounts())
    assert env.ledger.provider_earnings(cheap.address).redeemed == value
    env.cli("verify")
    # One split edited in a copy of the database: verify reports it.
    copy = tmp_path / "home"
    import shutil

    shutil.copytree(env.home, copy, ignore=shutil.ignore_patterns("*.lock", "metrics"))
    tx_id, split = next((tx, s) for tx, s in splits(env) if s.provider_amount > 0)
    connection = sqlite3.connect(copy / "ledger.db")
    record = json.loads(connection.execute("SELECT record FROM transactions WHERE tx_id = ?", (tx_id,)).fetchone()[0])
    record["message"]["providerAmount"] = str(split.provider_amount + 1)
    record["message"]["amount"] = str(split.amount + 1)
    connection.execute(
        "UPDATE transactions SET record = ? WHERE tx_id = ?", (json.dumps(record, sort_keys=True), tx_id)
    )
    connection.commit()
    connection.close()
    tampered = env.cli("--home", str(copy), "verify", "--json", ok=False)
    assert tampered.exit_code != 0
    problems = json.loads(tampered.stdout)["problems"]
    assert problems and any(tx_id in json.dumps(problem) for problem in problems), problems

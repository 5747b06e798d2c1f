"""The issue's done-when with REAL providers: two `inferpay model-server`s (all-MiniLM-L6-v2,
``HF_HUB_OFFLINE=1``) on two ports, joined by two provider wallets at different prices with
``inferpay provider register``, a third registered on a closed port (down), the operator's
approvals and fee set with ``inferpay provider approve`` / ``inferpay pool-fee``, one gateway
(``inferpay gateway``, gunicorn) with a ``pool = true`` embeddings route. Then: sort=price goes
to the cheaper one; SIGKILLing it under load (4 client threads) moves its calls to the other,
no failed call charged and none twice; earnings (``inferpay provider earnings``) equal the sum of
each provider's splits, the operator's fees the sum of fees; ``inferpay redeem`` lowers supply by
its amount; ``inferpay verify`` passes.

The routing, failover and refusal cases in detail run against fake providers in
tests/gateway/test_pool_routing.py (several model servers are heavy on a small machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth
from gateway.wire.x402 import decode_header
from ledger.types import SplitSettlement
from tests.support.gateway import HAVE_MODEL, REAL_MODEL, GatewayEnv, start_gateway_env
from tests.support.servers import ServerHandle, free_port, run_server_command

pytestmark = [pytest.mark.model, pytest.mark.skipif(not HAVE_MODEL, reason="the model extra is not installed")]

POOL_EMBED = "/v1/pool/embeddings"
POOL_CONFIG = f"""
[pool]
accept = "listed"
health_interval_ms = 300
probe_timeout_ms = 1000
connect_timeout_ms = 500
failure_threshold = 2
recovery_interval_ms = 1000

[[routes]]
path = "{POOL_EMBED}"
pool = true
provider_path = "/embeddings"
max_output_tokens = 0
description = "embeddings, served by the compute pool"
"""


@contextlib.contextmanager
def model_server() -> Iterator[ServerHandle]:
    """`inferpay model-server` as a provider runs it, warmed up (the model loads on first use)."""
    argv = [sys.executable, "-m", "inferpay_cli", "model-server", "--port", "{port}"]
    with run_server_command(argv, ready_path="/health", env={"HF_HUB_OFFLINE": "1"}) as server:
        warm = requests.post(server.url + "/v1/embeddings", json={"model": REAL_MODEL, "input": "warm"}, timeout=180)
        assert warm.status_code == 200, warm.text
        yield server


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayEnv, dict[str, ServerHandle]]]:
    directory = tmp_path_factory.mktemp("pool-models")
    with model_server() as cheap, model_server() as dear, start_gateway_env(directory, extra_config=POOL_CONFIG) as env:
        for name, url, price in (
            ("gpu-cheap", cheap.url + "/v1", "0.0001"),
            ("gpu-dear", dear.url + "/v1", "0.0003"),
            ("gpu-down", f"http://127.0.0.1:{free_port()}/v1", "0.00001"),
        ):
            env.new_wallet(name)
            env.cli(
                "provider", "register", name, "--endpoint", url, "--model", REAL_MODEL,
                "--price-per-call", price, "--price-per-1k-input", "0.001",
            )  # fmt: skip
            env.cli("provider", "approve", name)
        env.cli("pool-fee", "--bps", "250", "--flat", "0.000002")
        live = {env.wallets["gpu-cheap"].address, env.wallets["gpu-dear"].address}

        def routable() -> set[str]:
            info = requests.get(env.url + "/pool", timeout=10).json()
            return {p["address"] for p in info["providers"] if p["routable"]}

        env.wait_for(lambda: routable() == live, timeout=30, what="the two live providers routable, the down one not")
        yield env, {"gpu-cheap": cheap, "gpu-dear": dear}


def embed(env: GatewayEnv, auth: PaymentAuth, text: str = "the cat sat on the mat", **extra: Any) -> requests.Response:
    body = {"model": REAL_MODEL, "input": text, **extra}
    return requests.post(env.route_url(POOL_EMBED), json=body, auth=auth, timeout=60)


def splits(env: GatewayEnv) -> list[SplitSettlement]:
    out = []
    for raw in env.store.iter_raw_transactions():
        stored = env.store.get(raw.tx_id)
        if stored is not None and isinstance(stored.tx.message, SplitSettlement):
            out.append(stored.tx.message)
    return out


def test_real_models_sort_price_failover_under_load_and_books_that_verify(pool: Any) -> None:
    env, servers = pool
    cheap, dear = env.wallets["gpu-cheap"].address, env.wallets["gpu-dear"].address
    auth = PaymentAuth(env.alice)

    # sort=price: the cheaper one serves, and the receipt names the split.
    for _ in range(3):
        response = embed(env, auth, provider={"sort": "price"})
        assert response.status_code == 200, response.text
        assert len(response.json()["data"][0]["embedding"]) == 384
        answer = decode_header(response.headers["PAYMENT-RESPONSE"])
        assert answer["split"]["provider"] == cheap and answer["split"]["operator"] == env.operator
        assert int(answer["split"]["providerAmount"]) + int(answer["split"]["fee"]) == int(answer["charged"])

    # Kill the cheaper one (SIGKILL) under load: its calls move to the other.
    env.wait_quiet()
    before, balance = len(splits(env)), env.available(env.alice)
    results: list[tuple[int, int, str]] = []
    after_kill: list[str] = []  # who served the calls sent once the kill was done
    killed = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        mine = PaymentAuth(env.alice)
        for i in range(6):
            sent_after_kill = killed.is_set()
            r = embed(env, mine, f"call {i} of a thread under load")
            charged = int(decode_header(r.headers["PAYMENT-RESPONSE"])["charged"]) if r.status_code == 200 else 0
            with lock:
                results.append((r.status_code, charged, r.headers.get("X-Inferpay-Provider", "")))
                if sent_after_kill:
                    after_kill.append(r.headers.get("X-Inferpay-Provider", ""))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    env.wait_for(lambda: len(results) >= 4, timeout=60, what="load under way")
    os.killpg(servers["gpu-cheap"].process.pid, signal.SIGKILL)  # gunicorn's master and worker: its own group
    killed.set()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == 24 and all(status == 200 for status, _, _ in results), results
    assert {p for _, _, p in results} == {cheap, dear}
    assert after_kill and set(after_kill) == {dear}
    env.wait_quiet()
    new = splits(env)[before:]
    assert len(new) == 24 and len({s.hold_id for s in new}) == 24  # one split per call, none twice
    assert sum(c for _, c, _ in results) == sum(s.amount for s in new) == balance - env.available(env.alice)

    # The books: earnings and fees as the CLI reports them, supply through a redeem, verify.
    every = splits(env)
    for name, address in (("gpu-cheap", cheap), ("gpu-dear", dear), ("gpu-down", env.wallets["gpu-down"].address)):
        earned = json.loads(env.cli("provider", "earnings", name, "--json").stdout)
        assert int(earned["earned"]) == sum(s.provider_amount for s in every if s.provider == address)
    assert env.ledger.operator_fees() == sum(s.fee for s in every)
    supply = env.store.supply()
    env.cli("redeem", "gpu-dear", "0.0003", "--reference", "payout-1")
    env.wait_quiet()
    assert env.store.supply() == supply - 300
    env.cli("verify")

"""The compute pool on PostgreSQL: two gateway processes (2 workers each) on one PostgreSQL
ledger, both with the ``pool = true`` chat route, in front of two FAKE providers
(``tests.support.upstreams.pool_provider``; nothing generative runs offline) registered and
approved with the CLI against that ledger. Calls through both gateways at once while one
provider is SIGKILLed: every call served, one split each, none twice, and ``inferpay verify``
clean. Skipped, saying why, when the PostgreSQL server does not answer.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth
from gateway.wire.x402 import decode_header
from ledger.types import SplitSettlement
from tests.gateway.test_pg_two_gateways import TwoGateways, start_two_gateways
from tests.support.ledger import postgres_unavailable
from tests.support.pool_gateway import POOL_CHAT, POOL_CONFIG, chat
from tests.support.servers import ServerHandle, run_wsgi_in_process

pytestmark = pytest.mark.skipif(postgres_unavailable() is not None, reason=str(postgres_unavailable()))
FACTORY = "tests.support.upstreams.pool_provider:create_provider_app"


@pytest.fixture(scope="module")
def pool_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TwoGateways, dict[str, ServerHandle]]]:
    directory = Path(tmp_path_factory.mktemp("pool-pg"))
    with (
        run_wsgi_in_process(FACTORY, "ok", threads=16) as cheap,
        run_wsgi_in_process(FACTORY, "ok", threads=16) as dear,
        start_two_gateways(directory, 50_000_000, extra_config=POOL_CONFIG) as two,
    ):
        for name, server, price in (("cheap", cheap, "0.0001"), ("dear", dear, "0.0003")):
            for args in (
                ("wallet", "create", name),
                ("provider", "register", name, "--endpoint", server.url + "/v1", "--model", "fake-echo-chat",
                 "--price-per-call", price, "--price-per-1k-output", "0.001"),
                ("provider", "approve", name),
            ):  # fmt: skip
                result = two.cli(*args)
                assert result.exit_code == 0, result.output
        assert two.cli("pool-fee", "--bps", "300").exit_code == 0

        def both_routable() -> bool:
            return all(
                sum(p["routable"] for p in requests.get(g.url + "/pool", timeout=10).json()["providers"]) == 2
                for g in two.gateways
                for _ in range(6)
            )

        two.env.wait_for(both_routable, what="both providers routable on both gateways")
        yield two, {"cheap": cheap, "dear": dear}


def test_two_gateways_on_postgresql_split_every_call_once_while_a_provider_dies(pool_pg: Any) -> None:
    two, servers = pool_pg
    env = two.env
    results: list[tuple[int, str, str]] = []  # (status, split tx, provider)
    lock = threading.Lock()

    def client(gateway: ServerHandle) -> None:
        auth = PaymentAuth(env.alice)
        for _ in range(10):
            r = requests.post(gateway.url + POOL_CHAT, json=chat(3), auth=auth, timeout=30)
            answer = decode_header(r.headers["PAYMENT-RESPONSE"]) if r.status_code == 200 else {}
            with lock:
                results.append((r.status_code, answer.get("transaction", ""), r.headers.get("X-Inferpay-Provider", "")))

    threads = [threading.Thread(target=client, args=(two.gateways[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    env.wait_for(lambda: len(results) >= 6, what="load under way")
    servers["cheap"].process.kill()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 40 and all(status == 200 for status, _, _ in results), results
    env.wait_quiet()
    splits = {}
    for raw in env.store.iter_raw_transactions():
        stored = env.store.get(raw.tx_id)
        if stored is not None and isinstance(stored.tx.message, SplitSettlement):
            splits[raw.tx_id] = stored.tx.message
    assert {tx for _, tx, _ in results} == set(splits)  # every served call's split, and no other
    assert max(Counter(s.hold_id for s in splits.values()).values()) == 1
    for name in ("cheap", "dear"):
        earned = json.loads(two.cli("provider", "earnings", name, "--json").stdout)
        mine = [s for s in splits.values() if s.provider == earned["address"]]
        assert int(earned["earned"]) == sum(s.provider_amount for s in mine) and int(earned["calls"]) == len(mine)
    verified = two.cli("verify")
    assert verified.exit_code == 0, verified.output

"""``GET /metrics`` on a real 2-worker gateway after real paid calls: every count and every base
unit agrees with the ledger, whichever worker answers the scrape; labels are bounded and hold
no secret; the multi-process directory is emptied at start."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.client import PaymentAuth
from gateway.server.api_keys import key_hash
from gateway.server.metrics import MULTIPROC_ENV, metrics_dir, model_label, prepare_multiprocess
from gateway.wire.errors import UpstreamError
from ledger.errors import InsufficientFunds
from tests.support.gateway import DEAD, EMBED, EMBED_MODEL, FLAT, FLAT_PRICE, GatewayEnv, embed_cost, start_gateway_env

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-metrics"))) as started:
        yield started


def scrape(env: GatewayEnv) -> Samples:
    response = requests.get(env.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_counts_and_units_match_the_ledger_across_two_workers(env: GatewayEnv) -> None:
    auth = PaymentAuth(env.alice)
    words = [3, 5, 8, 13]
    with ThreadPoolExecutor(8) as pool:  # concurrent, so both workers take calls
        flat = list(
            pool.map(lambda i: requests.post(env.route_url(FLAT), json={"i": i}, auth=auth, timeout=30), range(6))
        )
        embed = list(
            pool.map(
                lambda n: requests.post(
                    env.route_url(EMBED),
                    json={"model": EMBED_MODEL, "input": " ".join(["w"] * n)},
                    auth=auth,
                    timeout=30,
                ),
                words,
            )
        )
    assert [r.status_code for r in flat + embed] == [200] * 10
    key = env.create_key("alice", "1", "1h")
    bearer = {"Authorization": f"Bearer {key['apiKey']}"}
    for i in range(3):
        assert requests.post(env.route_url(FLAT), json={"k": i}, headers=bearer, timeout=30).status_code == 200
    with pytest.raises(UpstreamError):  # the SDK raises the gateway's 502 as the same error
        requests.post(env.route_url(DEAD), json={}, auth=auth, timeout=30)
    with pytest.raises(InsufficientFunds):
        requests.post(env.route_url(FLAT), json={}, auth=PaymentAuth(env.bob), timeout=30)
    assert requests.post(env.route_url(FLAT), json={}, timeout=30).status_code == 402
    noise = f"/v1/no-such-{secrets.token_hex(4)}"
    assert requests.post(env.url + noise, json={}, timeout=30).status_code == 404
    env.wait_quiet()

    samples = scrape(env)
    payments = "inferpay_payments_total"
    assert value(samples, payments, route=FLAT, outcome="settled") == 9
    assert value(samples, payments, route=EMBED, outcome="settled") == 4
    assert value(samples, payments, route=DEAD, outcome="voided", code="upstream_error") == 1
    assert value(samples, payments, route=FLAT, outcome="refused", code="insufficient_funds") == 1
    assert value(samples, payments, route=FLAT, outcome="required") >= 1

    # Base units: what the metrics say was charged is what the ledger captured for the payee.
    settles = [
        int(e.tx.message.amount)  # type: ignore[union-attr]
        for e in env.history(env.operator, limit=1000)
        if e.tx.kind == "settle"
    ]
    charged = "inferpay_charged_base_units_total"
    assert value(samples, charged) == sum(settles)
    assert value(samples, charged, route=FLAT, payee=env.operator) == 9 * FLAT_PRICE
    assert value(samples, charged, route=EMBED, model=EMBED_MODEL) == sum(embed_cost(n) for n in words)
    assert value(samples, "inferpay_input_tokens_total", route=EMBED, model=EMBED_MODEL) == sum(words)
    assert value(samples, "inferpay_output_tokens_total", route=EMBED) == 0

    # Latencies: one observation per settled call, in seconds; the upstream's for each answer.
    assert value(samples, "inferpay_paid_call_duration_seconds_count", route=FLAT) == 9
    assert value(samples, "inferpay_paid_call_duration_seconds_count", route=EMBED) == 4
    assert 0 < value(samples, "inferpay_paid_call_duration_seconds_sum", route=EMBED) < 4 * 30
    assert value(samples, "inferpay_upstream_latency_seconds_count", route=EMBED) == 4
    le = value(samples, "inferpay_upstream_latency_seconds_bucket", route=EMBED, le="+Inf")
    assert le == 4

    # Requests by route and status: configured paths and URL rules only, never the raw path.
    requests_total = "inferpay_requests_total"
    assert value(samples, requests_total, route=FLAT, status_code="200") == 9
    assert value(samples, requests_total, route=DEAD, status_code="502") == 1
    assert value(samples, requests_total, route="unmatched", status_code="404") >= 1
    routes = {dict(ls)["route"] for (n, ls) in samples if n == requests_total}
    assert noise not in routes and all(r == "unmatched" or r.startswith("/") for r in routes)

    # The ledger's state, read at the scrape.
    head = requests.get(env.ledger_url + "/head", timeout=10).json()
    assert value(samples, "inferpay_ledger_height") == head["header"]["height"]
    assert value(samples, "inferpay_ledger_transactions") == head["header"]["treeSize"]
    assert value(samples, "inferpay_open_holds") == 0 == value(samples, "inferpay_unsealed_transactions")
    assert value(samples, "inferpay_seal_lag_seconds") == 0

    # Nothing secret in any label or value.
    text = requests.get(env.url + "/metrics", timeout=10).text
    for secret in (key["apiKey"], key_hash(key["apiKey"]), key["apiKey"][12:], env.alice.address, env.bob.address):
        assert secret not in text


def test_every_scrape_adds_up_every_worker(env: GatewayEnv) -> None:
    """Both workers wrote counts; whichever answers a scrape reports the same totals."""
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(lambda _: requests.get(env.url + "/health", timeout=10).status_code, range(200))) == {200}
    pids = {
        m.group(1)
        for p in metrics_dir(env.home, env.gateway.port).iterdir()
        if (m := re.fullmatch(r"counter_(\d+)\.db", p.name))
    }
    assert len(pids) >= 2, pids

    def counters() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        found = scrape(env)
        return {
            k: v
            for k, v in found.items()
            if k[0] != "inferpay_requests_total"
            and not k[0].startswith(("inferpay_ledger", "inferpay_open", "inferpay_seal"))
            and "_seconds" not in k[0]
        }

    first = counters()
    with ThreadPoolExecutor(4) as pool:
        assert all(c == first for c in pool.map(lambda _: counters(), range(12)))
    health = value(scrape(env), "inferpay_requests_total", route="/health", status_code="200")
    assert health >= 200


def test_the_metrics_directory_is_emptied_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import values

    stale = metrics_dir(tmp_path, 8402)
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"old counts")
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    try:
        assert prepare_multiprocess(tmp_path, 8402) == stale
        assert list(stale.iterdir()) == [] and os.environ[MULTIPROC_ENV] == str(stale)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        values.ValueClass = values.get_value_class()  # this process counts on its own again


@pytest.mark.parametrize(
    ("body", "label"),
    [
        (b'{"model": "all-MiniLM-L6-v2", "input": "x"}', "all-MiniLM-L6-v2"),
        (b'{"model": "org/model:tag"}', "org/model:tag"),
        (b'{"model": "' + b"m" * 65 + b'"}', ""),
        (b'{"model": "has space"}', ""),
        (b'{"model": "<script>"}', ""),
        (b'{"model": 7}', ""),
        (b"[1, 2]", ""),
        (b"not json", ""),
        (b"", ""),
    ],
)
def test_model_labels_are_only_plausible_names(body: bytes, label: str) -> None:
    assert model_label(body) == label

"""``[[rate_limits]]`` on a real 2-worker gateway: per payer, per API key and per route, counted
across both workers, decided before anything is held (a refused call moves no money and uses
no nonce), answered 429 with ``Retry-After`` and the JSON error shape; a forged payer is never
counted against the payer it names. And the config's rules."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from gateway.server.config import parse_config
from gateway.wire.errors import ConfigError
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from tests.support.gateway import EMBED, FLAT, FLAT2, FLAT_PRICE, FREE, GatewayEnv, error_code, start_gateway_env
from wallets.wallet import Wallet

WINDOW_S = 3600  # one window for the whole module: counts never roll over mid-test
LIMITS = f"""
[[rate_limits]]
per = "payer"
route = "{FLAT}"
window_seconds = {WINDOW_S}
max_requests = 5

[[rate_limits]]
per = "api_key"
window_seconds = {WINDOW_S}
max_spend = "0.003"

[[rate_limits]]
per = "route"
route = "{FLAT2}"
window_seconds = {WINDOW_S}
max_requests = 4
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-limits")), extra_config=LIMITS) as started:
        yield started


def pay(env: GatewayEnv, payer: Wallet, path: str = FLAT, body: object = None, **kw: object) -> requests.Response:
    header, _ = env.payment(payer, path, **kw)  # type: ignore[arg-type]
    headers = {PAYMENT_SIGNATURE_HEADER: header}
    return requests.post(env.route_url(path), json=body or {}, headers=headers, timeout=30)


def assert_rate_limited(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert error_code(response) == "rate_limited"
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= WINDOW_S
    assert response.json()["error"]["retry_after_s"] == retry


def test_per_payer_limit_across_workers_before_anything_is_held(env: GatewayEnv) -> None:
    carol = env.new_wallet("carol", "1")
    headers = [env.payment(carol, FLAT)[0] for _ in range(9)]
    with ThreadPoolExecutor(9) as pool:  # at once, over both workers
        answers = list(
            pool.map(
                lambda h: requests.post(
                    env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: h}, timeout=30
                ),
                headers,
            )
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 4, [r.text for r in answers]
    for response in answers:
        if response.status_code == 429:
            assert_rate_limited(response)
    env.wait_quiet()
    # Only the admitted five were held and charged; the refused four left no trace.
    assert env.available(carol) == 1_000_000 - 5 * FLAT_PRICE
    kinds = [s.tx.kind for s in env.history(carol)]
    assert sorted(kinds) == sorted(["mint"] + ["hold", "settle"] * 5)
    # Another payer is not limited by carol's calls; other routes are not limited by this one.
    dave = env.new_wallet("dave", "1")
    assert pay(env, dave).status_code == 200
    assert pay(env, carol, EMBED, {"input": "two words"}).status_code == 200


def test_a_forged_payer_is_never_counted_against_the_payer_it_names(env: GatewayEnv) -> None:
    erin = env.new_wallet("erin", "1")
    mallory = env.new_wallet("mallory", "1")
    for _ in range(6):  # erin's address, mallory's signature
        forged = pay(env, erin, signature=lambda _sig: mallory.authorize_transfer(env.chain, env.operator, 1)[1])
        assert forged.status_code == 402 and error_code(forged) == "invalid_signature", forged.text
    assert [pay(env, erin).status_code for _ in range(5)] == [200] * 5
    assert_rate_limited(pay(env, erin))


def test_per_api_key_spend_limit(env: GatewayEnv) -> None:
    frank = env.new_wallet("frank", "1")
    key = env.create_key("frank", "1", "1h")
    bearer = {"Authorization": f"Bearer {key['apiKey']}"}
    answers = [requests.post(env.route_url(FLAT2), json={}, headers=bearer, timeout=30) for _ in range(2)]
    # FLAT2 also has a route limit of 4 calls: use FLAT for the rest of this key's 0.003.
    answers.append(requests.post(env.route_url(FLAT), json={}, headers=bearer, timeout=30))
    assert [r.status_code for r in answers] == [200] * 3
    assert_rate_limited(requests.post(env.route_url(FLAT), json={}, headers=bearer, timeout=30))
    # A new key of the same owner has a window of its own.
    other = {"Authorization": f"Bearer {env.create_key('frank', '1', '1h')['apiKey']}"}
    assert requests.post(env.route_url(FLAT), json={}, headers=other, timeout=30).status_code == 200
    env.wait_quiet()
    assert env.available(frank) == 1_000_000 - 4 * FLAT_PRICE


def test_per_route_limit_counts_every_payer(env: GatewayEnv) -> None:
    grace = env.new_wallet("grace", "1")
    # test_per_api_key_spend_limit spent 2 of FLAT2's 4 calls, whichever runs first.
    used = 2 if "frank" in env.wallets else 0
    statuses = [pay(env, grace if i % 2 else env.alice, FLAT2).status_code for i in range(6 - used)]
    assert statuses == [200] * (4 - used) + [429, 429]
    assert requests.post(env.route_url(FREE), json={}, timeout=30).status_code == 200  # free routes: no limits


def test_refusals_are_counted_in_the_metrics(env: GatewayEnv) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(env.url + "/metrics", timeout=10).text
    refused = sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "inferpay_payments_total" and s.labels.get("code") == "rate_limited"
    )
    assert refused >= 1


# ---- the config ----


def _config(tmp_path: Path, *limits: dict[str, object]) -> object:
    routes = [
        {"path": "/v1/a", "upstream": "http://127.0.0.1:1/a", "price": "0.01"},
        {"path": "/v1/free", "upstream": "http://127.0.0.1:1/f", "free": True},
    ]
    return parse_config({"routes": routes, "rate_limits": list(limits)}, home=tmp_path)


@pytest.mark.parametrize(
    ("limit", "says"),
    [
        ({"per": "payer", "window_seconds": 60, "max_requests": 1, "burst": 2}, "unknown key"),
        ({"per": "ip", "window_seconds": 60, "max_requests": 1}, "per: expected one of payer, api_key, route"),
        ({"per": "payer", "max_requests": 1}, "missing 'window_seconds'"),
        ({"per": "payer", "window_seconds": 0, "max_requests": 1}, "window_seconds"),
        ({"per": "payer", "window_seconds": 60}, "max_requests, max_spend or both"),
        ({"per": "payer", "window_seconds": 60, "max_requests": 0}, "max_requests"),
        ({"per": "payer", "window_seconds": 60, "max_spend": 5}, "decimal strings"),
        ({"per": "payer", "window_seconds": 60, "max_spend": "0.001"}, "below the price of one call to /v1/a"),
        ({"per": "route", "route": "/v1/free", "window_seconds": 60, "max_requests": 1}, "not a paid route"),
        ({"per": "route", "route": "/v1/none", "window_seconds": 60, "max_requests": 1}, "not a paid route"),
    ],
)
def test_bad_rate_limits_stop_the_gateway_naming_the_key(tmp_path: Path, limit: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match="rate_limits\\[0\\]") as raised:
        _config(tmp_path, limit)
    assert says in raised.value.message


def test_a_good_rate_limit_is_read_in_base_units(tmp_path: Path) -> None:
    config = _config(tmp_path, {"per": "api_key", "window_seconds": 60, "max_requests": 3, "max_spend": "0.5"})
    (limit,) = config.rate_limits  # type: ignore[attr-defined]
    assert (limit.per, limit.window_seconds, limit.max_requests, limit.max_spend, limit.route) == (
        "api_key",
        60,
        3,
        500_000,
        None,
    )
    assert limit.name == "api_key:*:60s:3:500000"

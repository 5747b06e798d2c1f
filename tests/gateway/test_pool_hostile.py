"""Providers that attack the gateway instead of serving it, behind a real gateway (gunicorn, 2
workers), with FAKE providers (``tests.support.upstreams.pool_provider``; nothing generative runs
offline): one answers gigabytes, one dribbles a byte at a time (slowloris), one redirects the
gateway to another host. Each costs the gateway one bounded attempt: the call fails over to the
honest provider and is charged once, to it; the attacker is paid nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth
from gateway.wire.x402 import decode_header
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.pool_gateway import POOL_CHAT, POOL_CONFIG, PoolProviders, chat
from tests.support.servers import ServerHandle, run_wsgi_in_process

HOSTILE, HONEST, DOOMED = "hostile", "honest", "doomed"
MAX_ANSWER_BYTES = 1_000_000  # the hostile provider's huge answer is 64 MiB
ANSWER_TIMEOUT_MS = 1500  # its slow answer would take a minute
HOSTILE_CONFIG = POOL_CONFIG.replace(
    "[pool]\n", f"[pool]\nanswer_timeout_ms = {ANSWER_TIMEOUT_MS}\nmax_answer_bytes = {MAX_ANSWER_BYTES}\n", 1
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayEnv, PoolProviders, ServerHandle]]:
    factory = "tests.support.upstreams.pool_provider:create_provider_app"
    with (
        run_wsgi_in_process(factory, "ok", threads=16) as hostile,
        run_wsgi_in_process(factory, "ok", threads=16) as honest,
        start_gateway_env(tmp_path_factory.mktemp("pool-hostile"), extra_config=HOSTILE_CONFIG) as env,
    ):
        providers = PoolProviders(env)
        providers.register(HOSTILE, hostile.url + "/v1", per_call=10)  # the cheapest: tried first
        providers.register(HONEST, honest.url + "/v1", per_call=100)
        yield env, providers, hostile


@pytest.mark.parametrize("mode", ["huge", "slow", "redirect"])
def test_a_hostile_answer_costs_one_bounded_attempt_and_the_honest_provider_serves(pool: Any, mode: str) -> None:
    env, providers, hostile = pool
    hostile_address, honest_address = env.wallets[HOSTILE].address, env.wallets[HONEST].address
    set_mode(hostile, "ok")
    # Its /models probe stays healthy, so its circuit closes again after any earlier mode; both
    # must be routable in every worker, or the 402's quote and the paid retry's see other pools.
    env.wait_for(
        lambda: providers.routable_everywhere(lambda r: {hostile_address, honest_address} <= r),
        timeout=20,
        what="both providers routable",
    )
    set_mode(hostile, mode)
    calls_before = hostile_calls(hostile)
    answer = requests.post(
        env.route_url(POOL_CHAT),
        json=chat(3, provider={"sort": "price"}),
        auth=PaymentAuth(env.alice, verify_receipts=False),
        timeout=30,  # far below the minute the slow answer would take, far above the pool's bound
    )
    assert answer.status_code == 200, answer.text
    assert hostile_calls(hostile) == calls_before + 1  # it was tried first, once
    assert answer.headers["X-Inferpay-Provider"] == honest_address
    split = decode_header(answer.headers["PAYMENT-RESPONSE"])["split"]
    assert split["provider"] == honest_address
    env.wait_quiet()
    assert env.available(hostile_address) == 0  # never paid
    set_mode(hostile, "ok")


def test_the_pool_bounds_are_configurable_and_checked() -> None:
    from gateway.server.config import ConfigError, _pool

    bounded = _pool({"answer_timeout_ms": 2000, "max_answer_bytes": 4096})
    assert (bounded.answer_timeout_ms, bounded.max_answer_bytes) == (2000, 4096)
    for bad in ({"answer_timeout_ms": 0}, {"max_answer_bytes": 10}, {"max_answer_bytes": "big"}):
        with pytest.raises(ConfigError, match=r"\[pool\]\."):
            _pool(bad)


def test_a_provider_killed_mid_stream_ends_the_stream_charges_nothing_and_the_next_call_is_served(
    pool: Any,
) -> None:
    """#16's "a provider killed mid-stream": once a stream's first byte has reached the client
    the call is committed to that provider (a client cannot be handed a second, different
    answer), so a provider SIGKILLed then ends the stream without a receipt and the hold is
    voided: nothing charged, nothing paid to it. The next call fails over before its first byte."""
    env, providers, _ = pool
    factory = "tests.support.upstreams.pool_provider:create_provider_app"
    with run_wsgi_in_process(factory, "stall_stream", threads=4) as doomed:
        doomed_address = providers.register(DOOMED, doomed.url + "/v1", per_call=1).address  # the cheapest
        env.wait_for(
            lambda: providers.routable_everywhere(lambda r: doomed_address in r), timeout=20, what="doomed routable"
        )
        env.wait_quiet()
        before = env.available(env.alice)
        with requests.post(
            env.route_url(POOL_CHAT),
            json=chat(3, stream=True, provider={"sort": "price"}),
            auth=PaymentAuth(env.alice, verify_receipts=False),
            stream=True,
            timeout=30,
        ) as streamed:
            assert streamed.status_code == 200 and streamed.headers["X-Inferpay-Provider"] == doomed_address
            hold_id = decode_header(streamed.headers["PAYMENT-RESPONSE"])["transaction"]
            events = streamed.iter_lines()
            first = next(line for line in events if line.startswith(b"data: "))
            assert b"chat.completion.chunk" in first  # the provider's stream had begun
            doomed.process.kill()  # SIGKILL, mid-stream
            rest: list[bytes] = []
            # The gateway cuts the stream short (no [DONE], no receipt, no clean end), so no
            # client can take the part it got for a whole answer.
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                rest.extend(events)
        assert not any(b"inferpay-receipt" in line or line == b"data: [DONE]" for line in rest)
        env.wait_for(lambda: env.store.hold(hold_id).status != "open", 15, "the hold to be resolved")  # type: ignore[union-attr]
        assert env.store.hold(hold_id).status == "void"  # type: ignore[union-attr]
        env.wait_quiet()
        assert env.available(env.alice) == before  # nothing charged
        assert env.available(doomed_address) == 0
        served = requests.post(
            env.route_url(POOL_CHAT),
            json=chat(3, provider={"sort": "price"}),
            auth=PaymentAuth(env.alice, verify_receipts=False),
            timeout=30,
        )
        assert served.status_code == 200, served.text
        assert served.headers["X-Inferpay-Provider"] != doomed_address


def set_mode(server: ServerHandle, mode: str) -> None:
    requests.post(server.url + "/test/mode", json={"mode": mode}, timeout=5).raise_for_status()


def hostile_calls(server: ServerHandle) -> int:
    calls: int = requests.get(server.url + "/test/calls", timeout=5).json()["calls"]
    return calls

"""``[pool]`` and ``pool = true`` routes: what the config accepts, what it refuses and how it
says so, and ``inferpay gateway --check`` doing the same on a real home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.server.config import DEFAULT_POOL_MAX_OUTPUT_TOKENS, PoolConfig, parse_config
from gateway.wire.errors import ConfigError
from inferpay_cli.main import cli

POOL_ROUTE = {"path": "/v1/pool/chat/completions", "pool": True}


def config(*routes: dict[str, Any], pool: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {"routes": list(routes)}
    if pool is not None:
        data["pool"] = pool
    return parse_config(data, home=Path("/tmp/unused"))


def test_a_pool_route_takes_its_defaults() -> None:
    parsed = config({"path": "/v1/chat/completions", "pool": True})
    route = parsed.routes[0]
    assert route.pool and route.metered and route.upstream == "" and route.price == 0
    assert route.provider_path == "/chat/completions"  # the path without /v1: appended to each endpoint
    assert route.max_output_tokens == DEFAULT_POOL_MAX_OUTPUT_TOKENS
    assert parsed.pool == PoolConfig()
    assert parsed.pool.accept == "listed" and parsed.pool.health_interval_ms == 2000


def test_the_pool_table_is_read() -> None:
    parsed = config(
        {**POOL_ROUTE, "provider_path": "/embeddings", "max_output_tokens": 0},
        pool={
            "accept": "any",
            "health_interval_ms": 500,
            "probe_timeout_ms": 200,
            "connect_timeout_ms": 100,
            "failure_threshold": 5,
            "recovery_interval_ms": 1500,
        },
    )
    assert parsed.pool == PoolConfig("any", 500, 200, 100, 5, 1500)
    assert parsed.routes[0].provider_path == "/embeddings" and parsed.routes[0].max_output_tokens == 0


@pytest.mark.parametrize(
    ("route", "pool", "message"),
    [
        ({**POOL_ROUTE, "upstream": "http://127.0.0.1:9/v1"}, None, "remove upstream"),
        ({**POOL_ROUTE, "price": "0.001"}, None, "remove price"),
        ({**POOL_ROUTE, "free": True}, None, "remove free"),
        ({**POOL_ROUTE, "pool": "yes"}, None, "routes[0].pool: expected true or false"),
        ({"pool": True}, None, "missing 'path'"),
        ({**POOL_ROUTE, "path": "/pool"}, None, "must start with '/' and not shadow"),
        ({**POOL_ROUTE, "provider_path": "chat"}, None, "provider_path"),
        ({**POOL_ROUTE, "max_output_tokens": -1}, None, "max_output_tokens"),
        (POOL_ROUTE, {"accept": "everyone"}, '[pool].accept: expected "listed" or "any"'),
        (POOL_ROUTE, {"health_interval_ms": 0}, "[pool].health_interval_ms"),
        (POOL_ROUTE, {"failure_threshold": 0}, "[pool].failure_threshold"),
        (POOL_ROUTE, {"probe_timeout_ms": "1s"}, "[pool].probe_timeout_ms"),
        (POOL_ROUTE, {"retries": 3}, "[pool]: unknown key(s) retries"),
    ],
)
def test_a_bad_pool_config_is_refused_naming_the_key(route: dict[str, Any], pool: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(route, pool=pool)
    assert message in caught.value.message


def run(home: Path, *args: str) -> Any:
    env = {"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": "pool config tests", "INFERPAY_SCRYPT_N": "1024"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_gateway_check_accepts_a_pool_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    good = tmp_path / "good.toml"
    good.write_text(
        '[pool]\naccept = "any"\n\n[[routes]]\npath = "/v1/pool/chat/completions"\npool = true\n'
        '\n[[routes]]\npath = "/v1/flat"\nupstream = "http://127.0.0.1:9/v1/echo"\nprice = "0.001"\n'
    )
    found = run(home, "gateway", "--check", "--config", str(good), "--json")
    assert found.exit_code == 0, found.output
    pool = json.loads(found.stdout)["pool"]
    assert pool == {
        "routes": ["/v1/pool/chat/completions"],
        "accept": "any",
        "providers": 0,
        "routable": 0,
        "fee": {"feeBps": "0", "flatFee": "0", "feeId": "0x" + "00" * 32},
    }
    text = run(home, "gateway", "--check", "--config", str(good))
    assert "pool:        /v1/pool/chat/completions; accept any; 0 of 0 providers routable" in text.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routes]]\npath = "/v1/pool"\npool = true\nupstream = "http://127.0.0.1:9/v1"\n')
    refused = run(home, "gateway", "--check", "--config", str(bad))
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1 and "remove upstream" in refused.stderr

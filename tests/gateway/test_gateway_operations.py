"""Running a gateway: one JSON access-log line per call (never a secret), `inferpay gateway
--check`, and SIGHUP reloading the config without dropping calls (a bad config refused, the
running one kept). One real gateway process (gunicorn, 2 workers) of its own."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, decode_header
from tests.support.gateway import FLAT, GatewayEnv, start_gateway_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-operations"))) as started:
        yield started


def access_lines(env: GatewayEnv) -> list[dict[str, object]]:
    lines = []
    for line in env.gateway.log_text().splitlines():
        start = line.find('{"event":"access"')
        if start >= 0:
            lines.append(json.loads(line[start:]))
    return lines


def offered_amount(env: GatewayEnv) -> str:
    terms = decode_header(requests.post(env.route_url(FLAT), json={}, timeout=10).headers["PAYMENT-REQUIRED"])
    amount: str = terms["accepts"][0]["amount"]
    return amount


def test_one_json_access_line_per_call_with_the_payment_and_no_secret(env: GatewayEnv) -> None:
    header, payload = env.payment(env.alice)
    answer = requests.post(env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10)
    assert answer.status_code == 200
    settled = decode_header(answer.headers["PAYMENT-RESPONSE"])

    def logged() -> bool:
        return any(line.get("txId") == settled["transaction"] for line in access_lines(env))

    env.wait_for(logged, what="the call's access line")
    line = next(line for line in access_lines(env) if line.get("txId") == settled["transaction"])
    assert line["route"] == FLAT and line["status"] == 200 and line["method"] == "POST"
    assert line["payer"] == env.alice.address and line["charged"] == settled["amount"]
    assert line["units"] == "base units"
    assert isinstance(line["upstreamMs"], float) and isinstance(line["overheadMs"], float)
    log = env.gateway.log_text()
    assert header not in log and payload["payload"]["signature"] not in log  # never the payment or its signature
    key = env.create_key("alice", "1", "1h")
    requests.post(env.route_url(FLAT), json={}, headers={"Authorization": f"Bearer {key['apiKey']}"}, timeout=10)
    env.wait_for(lambda: any(line.get("keyPrefix") for line in access_lines(env)), what="an API-key call's line")
    assert key["apiKey"] not in env.gateway.log_text()  # the prefix, never the key
    refused = [line for line in access_lines(env) if line["status"] == 402]
    assert refused and all("charged" not in line for line in refused)


def test_gateway_check_opens_what_the_config_names(env: GatewayEnv, tmp_path: Path) -> None:
    found = json.loads(env.cli("gateway", "--check", "--config", str(env.config_path), "--json").stdout)
    assert found["ok"] and FLAT in found["routes"] and found["payTo"] == env.operator
    assert found["checkpointKey"].startswith("inferpay.local/ledger/")
    bad = tmp_path / "bad.toml"
    bad.write_text(env.config_path.read_text().replace('pay_to = "operator"', 'pay_to = "nobody"'))
    refused = env.cli("gateway", "--check", "--config", str(bad), ok=False)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1 and "nobody" in refused.stderr


def test_sighup_reloads_the_config_without_dropping_calls_and_keeps_it_when_bad(env: GatewayEnv) -> None:
    before = offered_amount(env)
    original = env.config_path.read_text()
    failures: list[str] = []
    stop = threading.Event()

    def keep_calling() -> None:  # paid calls, each paying the terms offered at that moment
        while not stop.is_set():
            try:
                header, _ = env.payment(env.alice)
                answer = requests.post(
                    env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10
                )
                if answer.status_code >= 500:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))

    callers = [threading.Thread(target=keep_calling) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(0.5)
        env.config_path.write_text(original.replace('price = "0.001"', 'price = "0.002"', 1))
        env.gateway.process.send_signal(signal.SIGHUP)
        env.wait_for(lambda: offered_amount(env) != before, timeout=30, what="the reloaded price")
        assert offered_amount(env) == str(2 * int(before))
        time.sleep(1.0)  # calls keep flowing on the new workers
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
    assert failures == []

    # A bad config: refused with its reason in the log, the running one kept.
    env.config_path.write_text(original.replace('price = "0.001"', 'price = "-1"', 1))
    env.gateway.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: "config reload refused" in env.gateway.log_text(), timeout=30, what="the refusal")
    assert offered_amount(env) == str(2 * int(before))
    assert requests.get(env.url + "/health", timeout=5).status_code == 200
    env.config_path.write_text(original)
    env.gateway.process.send_signal(signal.SIGHUP)
    env.wait_for(lambda: offered_amount(env) == before, timeout=30, what="the original price back")

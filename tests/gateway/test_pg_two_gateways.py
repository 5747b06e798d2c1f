"""Two real gateway processes on one PostgreSQL ledger (issue #6: gateways on several hosts).

One home (wallets, sealer key) and one schema of its own in the server at
``$INFERPAY_TEST_POSTGRES`` (dropped afterwards); two ``inferpay gateway --config`` servers
(gunicorn, 2 workers each, ports picked at run time) whose TOML configs differ only in the port
and both say ``database = "postgresql://..."``, in front of the same test upstreams, built with
``tests.support.gateway``' template and launcher. Payments go through both at the same moment:
exactly what the payer can afford is charged, never a base unit more, whichever gateway took
the call; the ledger verifies with the CLI and both gateways serve the same signed head.
Skipped, saying why, when that PostgreSQL server does not answer.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from gateway.server.home import Home
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, decode_header
from inferpay_cli.main import cli
from ledger.ledger import Ledger
from ledger.storage import open_store
from tests.support.gateway import (
    _LAUNCHER,
    FLAT,
    FLAT_PRICE,
    PASSWORD,
    SCRYPT_N,
    GatewayEnv,
    _quick_stop,
    error_code,
    gateway_config,
    start_upstreams,
)
from tests.support.ledger import drop_schema, new_postgres_url, postgres_unavailable
from tests.support.servers import ServerHandle, run_server_command

pytestmark = pytest.mark.skipif(postgres_unavailable() is not None, reason=str(postgres_unavailable()))

AFFORDABLE = 10  # flat calls alice's funds pay for, exactly
CALLS = 32  # paid calls fired at once, half through each gateway: far more than she can pay for
TIMEOUT = 60.0


@dataclass
class TwoGateways:
    url: str  # the ledger: the PostgreSQL URL naming this module's schema
    gateways: list[ServerHandle]
    env: GatewayEnv  # the first gateway, the home's wallets, and the ledger read from PostgreSQL
    runner_env: dict[str, str]

    def cli(self, *args: str) -> Result:
        """The CLI as a user runs it against this ledger (``$INFERPAY_DATABASE`` names it)."""
        return CliRunner().invoke(cli, list(args), env=self.runner_env, catch_exceptions=False)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoGateways]:
    with start_two_gateways(Path(tmp_path_factory.mktemp("pg-two-gateways")), AFFORDABLE * FLAT_PRICE) as started:
        yield started


@contextlib.contextmanager
def start_two_gateways(directory: Path, alice_funds: int, extra_config: str = "") -> Iterator[TwoGateways]:
    """One home, one fresh schema, two 2-worker gateways; ``extra_config`` is appended to their TOML."""
    url = new_postgres_url()
    home = directory / "home"
    runner_env = {
        "INFERPAY_HOME": str(home),
        "INFERPAY_PASSWORD": PASSWORD,
        "INFERPAY_SCRYPT_N": SCRYPT_N,
        "INFERPAY_DATABASE": url,
    }

    def run(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args), env=runner_env, catch_exceptions=False)
        assert result.exit_code == 0, f"inferpay {' '.join(args)} failed: {result.output}"

    try:
        run("init")
        run("wallet", "create", "alice")
        run("mint", "alice", f"{alice_funds / 1_000_000:.6f}")
        with contextlib.ExitStack() as stack:
            echo, chat = stack.enter_context(start_upstreams())
            template = gateway_config(echo.url, chat.url, database=url)  # one ledger for both
            (directory / "gateway.toml.in").write_text(template + extra_config)
            gateways = []
            for name in ("gateway-a", "gateway-b"):
                config = directory / f"{name}.toml"
                argv = [
                    sys.executable,
                    "-c",
                    _LAUNCHER,
                    str(directory / "gateway.toml.in"),
                    str(config),
                    "{port}",
                    "--home",
                    str(home),
                    "gateway",
                    "--config",
                    str(config),
                ]
                gateway = stack.enter_context(run_server_command(argv, ready_path="/health", env=runner_env))
                stack.callback(_quick_stop, gateway)
                gateways.append(gateway)
            store = open_store(url)
            stack.callback(store.close)
            env = GatewayEnv(
                directory=directory,
                home=home,
                config_path=directory / "gateway-a.toml",
                gateway=gateways[0],
                echo=echo,
                chat=chat,
                store=store,  # type: ignore[arg-type]  # a PostgresStore reads like the SQLite one
                ledger=Ledger(store),
                wallets={n: Home(home).wallets.load(n, PASSWORD) for n in ("alice", "operator")},
            )
            yield TwoGateways(url, gateways, env, runner_env)
    finally:
        drop_schema(url)


def head_of(gateway: ServerHandle) -> dict[str, Any]:
    response = requests.get(gateway.url + "/ledger/head", timeout=10)
    assert response.status_code == 200, response.text
    head: dict[str, Any] = response.json()
    return head


def test_two_gateways_charge_exactly_what_the_payer_can_afford(two: TwoGateways) -> None:
    env, alice = two.env, two.env.alice
    assert env.available(alice) == AFFORDABLE * FLAT_PRICE
    terms = env.requirement(FLAT)
    payments = [env.payment(alice, FLAT, accepted=terms)[0] for _ in range(CALLS)]
    lowest_seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # alice's balance as each gateway reports it, all along
        turn = 0
        while not stop.is_set():
            gateway = two.gateways[turn % 2]
            turn += 1
            with contextlib.suppress(requests.RequestException):
                body = requests.get(f"{gateway.url}/ledger/accounts/{alice.address}", timeout=5).json()
                lowest_seen.append(min(int(body["available"]), int(body["held"])))

    barrier = threading.Barrier(CALLS)
    answers: list[requests.Response | None] = [None] * CALLS

    def pay(index: int) -> None:
        gateway = two.gateways[index % 2]
        barrier.wait(TIMEOUT)
        answers[index] = requests.post(
            gateway.url + FLAT,
            json={"call": index},
            headers={PAYMENT_SIGNATURE_HEADER: payments[index]},
            timeout=TIMEOUT,
        )

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=pay, args=(i,)) for i in range(CALLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    env.wait_quiet(timeout=20)
    stop.set()
    watcher.join(10)

    assert all(a is not None for a in answers), "a call never came back"
    paid = [a for a in answers if a is not None and a.status_code == 200]
    refused = [a for a in answers if a is not None and a.status_code != 200]
    assert len(paid) == AFFORDABLE, [(a.status_code, a.text[:200]) for a in answers if a is not None]
    assert {(a.status_code, error_code(a)) for a in refused} == {(402, "insufficient_funds")}
    receipts = [Receipt.from_dict(decode_header(a.headers["PAYMENT-RESPONSE"])["receipt"]) for a in paid]
    for receipt in receipts:
        receipt.verify(env.chain.sealer)
        assert receipt.payer == alice.address and receipt.charged == FLAT_PRICE
    assert len({r.tx_id for r in receipts}) == AFFORDABLE
    # Never negative, as either gateway reported it while the calls ran, and nothing left over.
    assert lowest_seen and min(lowest_seen) >= 0
    account = env.account(alice)
    assert (account.available, account.held) == (0, 0)
    assert env.available(env.operator) == AFFORDABLE * FLAT_PRICE

    # The CLI verifies the PostgreSQL ledger, and both gateways serve the head it replayed to.
    result = two.cli("verify", "--json")
    assert result.exit_code == 0, result.output
    verified = json.loads(result.stdout)
    assert verified["ok"] is True and verified["problems"] == []
    heads = [head_of(g) for g in two.gateways]
    assert heads[0] == heads[1]
    assert heads[0]["hash"] == verified["head"]["hash"]
    assert heads[0]["header"]["treeSize"] == verified["transactions"]


def test_a_payment_taken_by_one_gateway_is_refused_by_the_other(two: TwoGateways) -> None:
    env = two.env
    two.cli("mint", "alice", f"{FLAT_PRICE / 1_000_000:.6f}")
    header, _ = env.payment(env.alice, FLAT)
    first = requests.post(two.gateways[0].url + FLAT, json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
    again = requests.post(two.gateways[1].url + FLAT, json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
    assert first.status_code == 200, first.text
    assert (again.status_code, error_code(again)) == (402, "payment_already_used")
    env.wait_quiet()
    assert head_of(two.gateways[0]) == head_of(two.gateways[1])

"""The one ledger-API client (``gateway.client.ledger_api``) against a real gateway on 127.0.0.1:
a node's error bodies come back as their classes, an unreachable node is ``storage_unavailable``
(never the user's ``invalid_input``), and the CLI's ``--node`` commands and ``RemoteChain`` read
through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from click.testing import CliRunner

from gateway.client.ledger_api import LedgerApiClient, RemoteChain
from inferpay_cli.main import cli
from ledger.audit import audit
from ledger.errors import InferpayError, InvalidAddress, NotFound, StorageUnavailable
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.servers import free_port

UNKNOWN_TX = "0x" + "ab" * 32
ADDRESS = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-ledger-client"))) as started:
        started.wait_quiet()
        yield started


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound once, then released: nothing listens


def test_reads_are_the_ledgers(env: GatewayEnv) -> None:
    with LedgerApiClient.for_node(env.url) as api:
        assert api.base_url == env.ledger_url == LedgerApiClient.for_node(env.ledger_url + "/").base_url
        assert api.chain_info() == env.chain
        assert api.head() == env.store.head()
        assert int(api.account(env.alice.address)["available"]) == env.available(env.alice)
        entries = api.history(env.alice.address, limit=2)["entries"]
        assert [e["txId"] for e in entries] == [s.tx_id for s in env.history(env.alice, limit=2)]
        heights = [b["header"]["height"] for b in api.blocks(0, 2)]
        assert heights == list(range(len(heights))) and heights
        assert api.block(0)["header"]["height"] == 0


def test_an_error_body_comes_back_as_its_class_with_its_details(env: GatewayEnv) -> None:
    served = requests.get(f"{env.ledger_url}/transactions/{UNKNOWN_TX}", timeout=10)
    assert served.status_code == 404
    with LedgerApiClient(env.ledger_url) as api:
        with pytest.raises(NotFound) as caught:
            api.transaction(UNKNOWN_TX)
        assert type(caught.value) is NotFound and caught.value.to_dict() == served.json()["error"]
        assert caught.value.details == {"tx_id": UNKNOWN_TX}
        with pytest.raises(NotFound, match="no block at height"):
            api.block(10**9)
        with pytest.raises(InvalidAddress):
            api.account("0x1234")
        with pytest.raises(NotFound):  # werkzeug's own 404 has the same shape and code
            api.get_json("/no/such/route")


def test_an_httpx_client_works_the_same(env: GatewayEnv) -> None:
    with httpx.Client() as session:
        assert LedgerApiClient(env.ledger_url, session).chain_info() == env.chain
        with pytest.raises(NotFound):
            LedgerApiClient(env.ledger_url, session).transaction(UNKNOWN_TX)
        with pytest.raises(StorageUnavailable, match="cannot reach"):
            LedgerApiClient(closed_url(), session).head()


def test_an_answer_that_is_not_an_inferpay_error_keeps_its_status(env: GatewayEnv) -> None:
    # The echo upstream is a Flask app without inferpay's handlers: its 404 is HTML.
    with pytest.raises(InferpayError, match="HTTP 404") as caught:
        LedgerApiClient(env.echo.url + "/ledger").head()
    assert type(caught.value) is InferpayError and caught.value.details["status"] == 404


def test_an_unreachable_node_is_storage_unavailable() -> None:
    url = closed_url()
    with pytest.raises(StorageUnavailable, match=f"cannot reach {url}/ledger/head"):
        LedgerApiClient.for_node(url).head()


def test_cli_balance_on_an_unreachable_node_blames_the_node_not_the_user(tmp_path: Path) -> None:
    runner = CliRunner(env={"INFERPAY_HOME": str(tmp_path / "home")})
    result = runner.invoke(cli, ["balance", "--node", closed_url(), ADDRESS])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach ") and "Traceback" not in result.output
    assert lines[0].endswith("[storage_unavailable]") and "invalid_input" not in lines[0]


def test_cli_node_commands_read_through_the_client(env: GatewayEnv) -> None:
    balance = json.loads(env.cli("balance", "--node", env.url, "alice", "--json").stdout)
    assert int(balance["available"]) == env.available(env.alice)
    history = json.loads(env.cli("history", "--node", env.url, "alice", "--json", "--limit", "3").stdout)
    assert [e["txId"] for e in history["entries"]] == [s.tx_id for s in env.history(env.alice, limit=3)]
    verified = env.cli("verify", "--node", env.url)
    assert "chain valid" in verified.stdout


def test_remote_chain_and_verify_node_raise_the_nodes_error(env: GatewayEnv) -> None:
    remote = RemoteChain(LedgerApiClient.for_node(env.url))
    report = audit(remote)
    assert report.ok and report.head == env.store.head()
    with pytest.raises(NotFound):  # a URL where no ledger is mounted: the gateway's own 404 body
        RemoteChain(LedgerApiClient(env.url + "/nothing/here"))
    refused = env.cli("verify", "--node", env.url + "/nothing", ok=False)
    lines = refused.stderr.strip().splitlines()
    assert refused.exit_code == 1 and len(lines) == 1 and lines[0].endswith("[not_found]"), refused.output

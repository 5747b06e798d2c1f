"""The compute pool's commands as an operator, a provider and a payer meet them: `inferpay
provider register|update|withdraw|approve|list|show|earnings`, `inferpay pool-fee`, `inferpay
redeem`, `inferpay refund`, on a real home (SQLite); each mistake one line on stderr with its
code, exit 1, and nothing written. (The same over ``--node``: tests/gateway/test_gateway_pool_api.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from inferpay_cli.home import Home
from inferpay_cli.main import cli
from tests.support.ledger import dump

PASSWORD = "correct horse"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("INFERPAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INFERPAY_PASSWORD", PASSWORD)
    monkeypatch.setenv("INFERPAY_SCRYPT_N", "1024")
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke("init")
    invoke("wallet", "create", "gpu")
    invoke("wallet", "create", "alice")
    invoke("mint", "alice", "10")
    return invoke


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def fails(run: Any, home: Path, code: str, *args: str) -> str:
    """The command exits 1 with one line on stderr naming ``code``, and the ledger is unchanged."""
    before = dump(home / "ledger.db")
    result = run(*args, ok=False)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(f"[{code}]"), result.stderr
    assert "Traceback" not in result.output
    assert dump(home / "ledger.db") == before
    return lines[0]


def register(run: Any) -> dict[str, Any]:
    result = run(
        "provider",
        "register",
        "gpu",
        "--endpoint",
        "http://127.0.0.1:8101/v1",
        "--model",
        "tiny-chat",
        "--model",
        "tiny-embed",
        "--price-per-call",
        "0.001",
        "--price-per-1k-output",
        "0.0003",
        "--json",
    )
    data: dict[str, Any] = as_json(result)
    return data


def test_a_provider_registers_updates_withdraws_and_is_listed(run: Any) -> None:
    registered = register(run)
    assert registered["kind"] == "provider_registration" and isinstance(registered["blockHeight"], int)
    shown = as_json(run("provider", "show", "gpu", "--json"))
    assert shown["registrationId"] == registered["txId"]
    assert shown["registration"]["models"] == ["tiny-chat", "tiny-embed"]
    assert (shown["registration"]["pricePerCall"], shown["registration"]["pricePer1kOutput"]) == ("1000", "300")
    run("provider", "update", "gpu", "--price-per-call", "0.002", "--capacity", "8")
    updated = as_json(run("provider", "show", "gpu", "--json"))["registration"]
    assert (updated["pricePerCall"], updated["capacity"], updated["models"]) == (
        "2000",
        "8",
        ["tiny-chat", "tiny-embed"],
    )
    text = run("provider", "list").output
    assert "tiny-chat,tiny-embed" in text and "0.002" in text and "active" in text
    run("provider", "withdraw", "gpu")
    assert as_json(run("provider", "list", "--json"))[0]["registration"]["status"] == "withdrawn"
    assert "status:        withdrawn" in run("provider", "show", "gpu").output


def test_the_operator_approves_providers_and_sets_the_pool_fee(run: Any) -> None:
    register(run)
    assert as_json(run("provider", "show", "gpu", "--json"))["approved"] is False
    run("provider", "approve", "gpu")
    assert as_json(run("provider", "show", "gpu", "--json"))["approved"] is True
    run("provider", "approve", "gpu", "--revoke")
    assert as_json(run("provider", "show", "gpu", "--json"))["approved"] is False
    assert as_json(run("pool-fee", "--json"))["feeBps"] == "0"
    run("pool-fee", "--bps", "250", "--flat", "0.00001")
    fee = as_json(run("pool-fee", "--json"))
    assert (fee["feeBps"], fee["flatFee"], fee["operatorFees"]) == ("250", "10", "0")
    assert "250 bp (2.5%)" in run("pool-fee").output


def test_earnings_refunds_and_redeems(run: Any, tmp_path: Path) -> None:
    home_dir = tmp_path / "home"
    register(run)
    run("pool-fee", "--bps", "1000")
    # A pool call as the gateway settles it: alice's hold, split between the provider and the operator.
    home = Home(home_dir)
    ledger = home.open_ledger()
    alice = home.wallets.load("alice", PASSWORD)
    auth, signature = alice.authorize_transfer(ledger.chain, ledger.chain.operator, 10_000)
    held = ledger.hold(auth, signature)
    split = ledger.settle_split(
        held.tx_id,
        provider=home.wallets.address("gpu"),
        registration_id=ledger.provider(home.wallets.address("gpu")).registration_id,
        input_tokens=40,
        output_tokens=1000,
        usage_capped=False,
    )
    ledger.seal_all()
    ledger.store.close()
    earnings = as_json(run("provider", "earnings", "gpu", "--json"))
    assert (earnings["calls"], earnings["earned"]) == ("1", "1300")  # 1000 + ceil(1000 * 300 / 1000)
    assert "earned:   0.0013" in run("provider", "earnings", "gpu").output
    assert as_json(run("pool-fee", "--json"))["operatorFees"] == "130"
    run("refund", "gpu", split.tx_id, "0.0003")
    assert as_json(run("provider", "earnings", "gpu", "--json"))["refunded"] == "300"
    fails(run, home_dir, "refund_exceeds_credit", "refund", "gpu", split.tx_id, "0.0011")
    fails(run, home_dir, "not_a_payee", "refund", "alice", split.tx_id, "0.0001")
    supply = int(as_json(run("info", "--json"))["supply"])
    run("redeem", "gpu", "0.001", "--reference", "bank-transfer-1")
    assert int(as_json(run("info", "--json"))["supply"]) == supply - 1000
    assert as_json(run("history", "gpu", "--json"))["entries"][0]["kind"] == "redeem"
    assert as_json(run("history", "gpu", "--json"))["entries"][0]["availableChange"] == "-1000"
    fails(run, home_dir, "insufficient_funds", "redeem", "gpu", "1", "--reference", "too-much")


@pytest.mark.parametrize(
    ("code", "args"),
    [
        ("invalid_input", ("provider", "register", "gpu", "--endpoint", "http://127.0.0.1:1/v1")),
        ("invalid_input", ("provider", "register", "gpu", "--model", "m", "--endpoint", "ftp://host/v1")),
        ("invalid_input", ("provider", "register", "gpu", "--model", "m", "--endpoint", "http://u:p@h/v1")),
        (
            "invalid_amount",
            ("provider", "register", "gpu", "--model", "m", "--endpoint", "http://h/v1", "--price-per-call", "-1"),
        ),
        ("not_found", ("provider", "show", "alice")),
        ("not_found", ("provider", "update", "alice", "--price-per-call", "1")),
        ("malformed_record", ("refund", "alice", "0x1234", "1")),
        ("not_found", ("refund", "alice", "0x" + "ab" * 32, "1")),
        ("invalid_input", ("redeem", "alice", "1", "--reference", "caf\u00e9")),
        ("invalid_amount", ("redeem", "alice", "0", "--reference", "r")),
        ("invalid_input", ("pool-fee", "--bps", "1", "--node", "http://127.0.0.1:9")),
    ],
)
def test_mistakes_are_one_line_errors_and_change_nothing(
    run: Any, tmp_path: Path, code: str, args: tuple[str, ...]
) -> None:
    fails(run, tmp_path / "home", code, *args)


def test_every_pool_command_has_help(run: Any) -> None:
    for args in (
        ("provider",),
        *(("provider", c) for c in ("register", "update", "withdraw", "approve", "list", "show", "earnings")),
        ("pool-fee",),
        ("redeem",),
        ("refund",),
    ):
        result = run(*args, "--help")
        assert "Usage:" in result.output and len(result.output.splitlines()) > 3, args

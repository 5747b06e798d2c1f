"""The `inferpay` command as a user meets it: the README walkthrough, errors, docs coverage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import wallets
from inferpay_cli.main import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def all_commands(group: click.Group, prefix: str = "inferpay") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize("path,command", all_commands(cli))
def test_every_command_has_help_and_is_in_the_readme(path: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), f"{path} has no help text"
    assert f"`{path}" in README.read_text(), f"{path} is not documented in README.md"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("INFERPAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INFERPAY_PASSWORD", "correct horse")
    runner = CliRunner()

    def invoke(*args: str, **kw: object):
        return runner.invoke(cli, list(args), catch_exceptions=False, **kw)  # type: ignore[arg-type]

    return invoke


def test_readme_walkthrough(run) -> None:
    assert run("init").exit_code == 0
    alice = run("wallet", "create", "alice").output.strip()
    bob = run("wallet", "create", "bob").output.strip()
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", alice) and alice != bob
    assert run("mint", "alice", "100").exit_code == 0
    assert run("transfer", "alice", bob, "30").exit_code == 0
    assert run("balance", "alice").output.strip() == "70"
    assert run("balance", bob).output.strip() == "30"
    history = run("history", "alice", "--json")
    entries = json.loads(history.output)["entries"]
    assert [e["kind"] for e in entries] == ["transfer", "mint"]
    assert all(isinstance(e["blockHeight"], int) for e in entries)
    csv_out = run("history", "alice", "--csv").output.splitlines()
    assert csv_out[0].startswith("seq,blockHeight,kind") and len(csv_out) == 3
    verify = run("verify")
    assert verify.exit_code == 0 and "chain valid" in verify.output
    info = json.loads(run("info", "--json").output)
    assert info["supply"] == "100000000" and info["name"] == "inferpay"
    tx = json.loads(run("tx", entries[0]["txId"], "--json").output)
    assert tx["inclusionProof"]["block"]["header"]["height"] == entries[0]["blockHeight"]
    assert run("blocks", "--json").exit_code == 0
    assert json.loads(run("wallet", "show", "alice", "--json").output)["available"] == "70000000"


@pytest.mark.parametrize(
    "args,message",
    [
        (["mint", "alice", "0"], "positive"),
        (["mint", "alice", "--", "-1"], "not a decimal amount"),
        (["mint", "alice", "1.0000001"], "too many decimals"),
        (["mint", "alice", "9223372036855"], "too large"),
        (["mint", "alice", "1e3"], "not a decimal amount"),
        (["mint", "alice", "12abc"], "not a decimal amount"),
        (["transfer", "alice", "0x000000000000000000000000000000000000dEaD", "1000"], "available"),
        (["balance", "nobody"], "nobody"),
        (["tx", "0x" + "ab" * 32], "no transaction"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_changes_nothing(run, tmp_path: Path, args, message) -> None:
    run("init")
    run("wallet", "create", "alice")
    run("mint", "alice", "10")
    db = tmp_path / "home" / "ledger.db"
    from tests.support.ledger import dump

    before = dump(db)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines() if hasattr(result, "stderr") else result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
    assert dump(db) == before


def test_wrong_password_is_one_line_and_changes_nothing(run, tmp_path: Path, monkeypatch) -> None:
    run("init")
    bob = run("wallet", "create", "bob").output.strip()
    run("wallet", "create", "alice")
    run("mint", "alice", "5")
    from tests.support.ledger import dump

    before = dump(tmp_path / "home" / "ledger.db")
    monkeypatch.setenv("INFERPAY_PASSWORD", "wrong")
    result = CliRunner().invoke(cli, ["transfer", "alice", bob, "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "password" in result.output.lower()
    assert dump(tmp_path / "home" / "ledger.db") == before


def test_usage_error_exits_2(run) -> None:
    assert CliRunner().invoke(cli, ["transfer", "alice"]).exit_code == 2


def test_password_file_and_no_ledger(run, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("INFERPAY_PASSWORD")
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    result = CliRunner().invoke(cli, ["balance", "0x000000000000000000000000000000000000dEaD"])
    assert result.exit_code == 1 and "inferpay init" in result.output
    assert CliRunner().invoke(cli, ["--password-file", str(secret), "init"]).exit_code == 0
    created = CliRunner().invoke(cli, ["wallet", "create", "carol", "--password-file", str(secret)])
    assert created.exit_code == 0
    assert CliRunner().invoke(cli, ["mint", "carol", "1", "--password-file", str(secret)]).exit_code == 0
    assert "s3cret" not in created.output


# ---- one $INFERPAY_HOME rule (wallets.default_home) for the CLI, the wallets and the gateway ----


@pytest.fixture
def blank_inferpay_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``INFERPAY_HOME`` set to blanks: it means "not set", so ``~/.inferpay`` (under a test HOME)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("INFERPAY_HOME", "  ")
    assert wallets.default_home() == tmp_path / ".inferpay"
    return tmp_path / ".inferpay"


def test_a_blank_inferpay_home_is_the_default_home_for_the_gateway_config(blank_inferpay_home: Path) -> None:
    from gateway.server.config import parse_config

    config = parse_config({"routes": [{"path": "/v1/x", "upstream": "http://127.0.0.1:1", "price": "0.001"}]})
    assert config.home == blank_inferpay_home


def test_a_blank_inferpay_home_is_the_default_home_for_the_cli(blank_inferpay_home: Path) -> None:
    with cli.make_context("inferpay", ["wallet", "list"]) as ctx:
        assert Path(ctx.params["home"]).expanduser() == blank_inferpay_home


def test_a_blank_inferpay_home_is_the_default_home_for_the_facilitator_config(blank_inferpay_home: Path) -> None:
    from gateway.server.facilitator_app import parse_facilitator_config

    assert parse_facilitator_config({"facilitator": {}}).home == blank_inferpay_home


@pytest.mark.parametrize("table", ["gateway", "facilitator"])
def test_a_home_that_is_not_a_path_is_a_config_error_in_both_configs(table: str) -> None:
    from gateway.server.config import parse_config
    from gateway.server.facilitator_app import parse_facilitator_config
    from gateway.wire.errors import ConfigError

    routes = [{"path": "/v1/x", "upstream": "http://127.0.0.1:1", "price": "0.001"}]
    with pytest.raises(ConfigError, match=rf"\[{table}\]\.home: expected a directory path"):
        if table == "gateway":
            parse_config({"gateway": {"home": 5}, "routes": routes})
        else:
            parse_facilitator_config({"facilitator": {"home": 5}})

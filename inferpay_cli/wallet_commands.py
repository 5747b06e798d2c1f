"""Wallet commands: create, list, show, import and export Web3 v3 keystores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from inferpay_cli.home import Home
from inferpay_cli.options import json_option, pass_home, password_file_option
from inferpay_cli.output import emit_json, table
from ledger.amounts import format_amount
from ledger.errors import KeystoreInvalid


@click.group()
def wallet() -> None:
    """Create, list, show, import and export wallets (scrypt-encrypted keystores)."""


@wallet.command("create")
@click.argument("name")
@password_file_option
@json_option
@pass_home
def wallet_create(home: Home, name: str, as_json: bool) -> None:
    """Create wallet NAME with a new key; prints its address."""
    home.ensure()
    created = home.wallets.create(name, home.password(f"Password for new wallet {name!r}", confirm=True))
    if as_json:
        emit_json({"name": created.name, "address": created.address})
    else:
        click.echo(created.address)


@wallet.command("list")
@json_option
@pass_home
def wallet_list(home: Home, as_json: bool) -> None:
    """List wallets and their addresses."""
    found = home.wallets.list()
    if as_json:
        emit_json([{"name": n, "address": a} for n, a in found])
    else:
        table([[n, a] for n, a in found], ["NAME", "ADDRESS"])


@wallet.command("show")
@click.argument("name")
@json_option
@pass_home
def wallet_show(home: Home, name: str, as_json: bool) -> None:
    """Show wallet NAME: address, keystore file and balance."""
    address = home.wallets.address(name)
    data = {"name": name, "address": address, "keystore": str(home.wallets.path(name))}
    if home.database or home.ledger_path.exists():
        account = home.open_ledger(with_sealer=False).balance(address)
        data.update(available=str(account.available), held=str(account.held))
    if as_json:
        emit_json(data)
        return
    for key in ("name", "address", "keystore"):
        click.echo(f"{key + ':':<10} {data[key]}")
    if "available" in data:
        click.echo(
            f"{'balance:':<10} {format_amount(int(data['available']))} (held {format_amount(int(data['held']))})"
        )


@wallet.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Wallet name (default: the file name without extension).")
@password_file_option
@pass_home
def wallet_import(home: Home, file: Path, name: str | None) -> None:
    """Import a Web3 v3 keystore FILE (from eth-account, geth, MetaMask...) after checking its password."""
    try:
        keystore = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeystoreInvalid(f"{file} is not a JSON keystore: {exc}") from exc
    wallet_name = name or re.sub(r"[^a-z0-9_-]", "-", file.stem.lower()).strip("-_")[:64]
    home.ensure()
    imported = home.wallets.import_keystore(wallet_name, keystore, home.password(f"Password of {file.name}"))
    click.echo(f"{imported.name} {imported.address}")


@wallet.command("export")
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the keystore here (mode 0600) instead of printing it.",
)
@pass_home
def wallet_export(home: Home, name: str, output: Path | None) -> None:
    """Export wallet NAME's encrypted keystore (Web3 v3 JSON; eth-account can decrypt it)."""
    text = json.dumps(home.wallets.export(name), indent=2)
    if output is None:
        click.echo(text)
        return
    import os

    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    click.echo(f"wrote {output}")


COMMANDS = [wallet]

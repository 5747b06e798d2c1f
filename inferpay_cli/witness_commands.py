"""``inferpay witness``: serve a tlog witness (witness/), make its key, print its vkey."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from inferpay_cli.options import json_option
from inferpay_cli.output import emit_json

_CONFIG = click.Path(dir_okay=False, path_type=Path)


@click.group("witness", invoke_without_command=True)
@click.option("--config", "config_path", type=_CONFIG, help="Witness configuration (TOML with a [witness] table).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen on this port instead of listen's.")
@click.pass_context
def witness_group(ctx: click.Context, config_path: Path | None, port: int | None) -> None:
    """Serve a c2sp.org/tlog-witness witness: POST /add-checkpoint cosigns each checkpoint of the
    configured logs that extends the last one it cosigned (gunicorn). Its key is made on first start."""
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("inferpay witness needs --config FILE (or a subcommand: init, vkey)")
    from witness.config import load_witness_config
    from witness.serve import serve_witness

    config = load_witness_config(config_path)
    if port is not None:
        config = dataclasses.replace(config, port=port)
    click.echo(f"inferpay witness {config.name} on http://{config.host}:{config.port}/add-checkpoint", err=True)
    serve_witness(config)


@witness_group.command("init")
@click.option("--config", "config_path", type=_CONFIG, required=True, help="Witness configuration (TOML).")
@json_option
def witness_init(config_path: Path, as_json: bool) -> None:
    """Make the witness's cosignature/v1 key (mode 0600) if it has none, and print its vkey."""
    from witness.config import load_witness_config
    from witness.keys import load_or_create_key

    config = load_witness_config(config_path)
    signer, made = load_or_create_key(config.key_file, config.name)
    if as_json:
        emit_json({"name": signer.name, "vkey": signer.vkey, "keyFile": str(config.key_file), "created": made})
        return
    if not made:
        click.echo(f"{config.key_file} already holds the witness key", err=True)
    click.echo(signer.vkey)


@witness_group.command("vkey")
@click.option("--config", "config_path", type=_CONFIG, required=True, help="Witness configuration (TOML).")
@json_option
def witness_vkey(config_path: Path, as_json: bool) -> None:
    """Print the witness's verifier key (name+keyID+base64 of 0x04 and the Ed25519 public key)."""
    from witness.config import load_witness_config
    from witness.keys import load_key

    config = load_witness_config(config_path)
    signer = load_key(config.key_file, config.name)
    if as_json:
        emit_json({"name": signer.name, "vkey": signer.vkey, "keyId": signer.key_id.hex()})
        return
    click.echo(signer.vkey)

"""``inferpay facilitator``: serve the x402 facilitator on its own (gateway.server.facilitator_app)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from inferpay_cli.home import Home
from inferpay_cli.ledger_commands import pass_home


@click.command("facilitator")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Facilitator configuration (TOML with a [facilitator] table).",
)
@pass_home
def facilitator_command(home: Home, config_path: Path) -> None:
    """Serve an x402 v2 facilitator (scheme exact) that verifies and settles on this ledger."""
    from gateway.server.facilitator_app import load_facilitator_config, serve_facilitator

    config = load_facilitator_config(config_path, home=home.path)
    if config.database is None and home.database:  # [facilitator] database wins over --database
        config = dataclasses.replace(config, database=home.database)
    click.echo(
        f"inferpay facilitator on http://{config.host}:{config.port}/facilitator ({config.workers} workers)", err=True
    )
    serve_facilitator(config)

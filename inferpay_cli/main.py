"""The `inferpay` click group: global options, error handling, and command registration.

Errors a user can cause (``InferpayError``, bad files) become one line on stderr and exit 1:
``error: <message> [<code>]``, the code from the one error tree (``ledger.errors``), as the
auditor prints its problems. Click's own usage errors exit 2. Nothing else is caught: the
storage backends translate their drivers' errors into that tree, so a traceback means a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from inferpay_cli.home import Home
from ledger.errors import InferpayError
from wallets import default_home


class InferpayGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InferpayError as exc:
            click.echo(f"error: {_one_line(exc.message)} [{exc.code}]", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            ctx.exit(1)


def _one_line(message: str) -> str:
    return " ".join(message.split())


@click.group(cls=InferpayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_home,
    show_default="$INFERPAY_HOME or ~/.inferpay",
    help="Directory holding the ledger database, wallets and sealer key.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read wallet passwords from this file (else $INFERPAY_PASSWORD, else a prompt).",
)
@click.option(
    "--database",
    envvar="INFERPAY_DATABASE",
    default=None,
    metavar="URL",
    show_envvar=True,
    help="Where the ledger lives: postgresql://user@host/db[?schema=NAME] or a SQLite file "
    "(default: ledger.db in --home). Wallets and the sealer key stay in --home.",
)
@click.pass_context
def cli(ctx: click.Context, home: Path, password_file: Path | None, database: str | None) -> None:
    """inferpay: pay-per-inference with a signed, verifiable token ledger."""
    ctx.obj = Home(home.expanduser(), database=database or None, password_file=password_file)


def _register() -> None:
    from inferpay_cli import (
        chain_commands,
        gateway_commands,
        ledger_commands,
        pool_commands,
        tlog_commands,
        wallet_commands,
    )

    for module in (ledger_commands, chain_commands, tlog_commands, wallet_commands, gateway_commands, pool_commands):
        for command in module.COMMANDS:
            cli.add_command(command)
    from inferpay_cli.demo import demo

    cli.add_command(demo)
    from inferpay_cli.facilitator_commands import facilitator_command

    cli.add_command(facilitator_command)
    from inferpay_cli.witness_commands import witness_group

    cli.add_command(witness_group)
    from inferpay_cli.mirror_commands import mirror_command

    cli.add_command(mirror_command)


_register()

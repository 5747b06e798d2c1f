"""Options every command group shares (``--json``, ``--node``, ``--password-file``), the home
object they pass, and the one way a ``--node`` command reaches a remote ledger API.

It must never open a ledger or a network connection itself: commands do, when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from inferpay_cli.home import Home

if TYPE_CHECKING:
    from gateway.client.ledger_api import LedgerApiClient

pass_home = click.make_pass_decorator(Home)
NODE_TIMEOUT_SECONDS = 30.0


def password_file_option(func: Callable[..., Any]) -> Callable[..., Any]:
    def remember(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.ensure_object(Home).password_file = value

    return click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=remember,
        help="Read the wallet password from this file.",
    )(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def node_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--node", default=None, metavar="URL", help="Ask a remote gateway (its base URL) instead of the local ledger."
    )(func)


def node_api(node: str) -> LedgerApiClient:
    """The ledger API of the gateway at ``node``: the SDK's one client, so an unreachable node is
    ``storage_unavailable`` and the node's own errors come back as their classes."""
    from gateway.client.ledger_api import LedgerApiClient

    return LedgerApiClient.for_node(node, timeout_s=NODE_TIMEOUT_SECONDS)

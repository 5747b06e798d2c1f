"""Whole-chain commands: verify (locally or a remote node's), export and import.

Each reads or writes the entire ledger, so each shows a progress bar on a terminal and stays
quiet when piped. They never write to a ledger that already holds one: import refuses, export
and verify only read.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from inferpay_cli.home import Home
from inferpay_cli.options import json_option, node_api, node_option, pass_home
from inferpay_cli.output import emit_json
from ledger.audit import AuditReport, ChainSource, audit
from ledger.errors import WalletExists
from ledger.types import parse_address


@click.command()
@click.option(
    "--independent",
    is_flag=True,
    help="Also re-check every signature with a second, pure-Python ECDSA implementation (slow).",
)
@click.option(
    "--expect-sealer",
    "expected_sealer",
    metavar="ADDRESS",
    help="The sealer address you trust (the operator publishes it; 402 offers name it): a chain"
    " re-signed from genesis by another key is reported instead of passing.",
)
@node_option
@json_option
@pass_home
def verify(home: Home, independent: bool, expected_sealer: str | None, node: str | None, as_json: bool) -> None:
    """Replay the whole chain from genesis and report every problem; exit 1 if there is any.

    With --node URL, download a remote gateway's sealed chain and verify it here, independently."""
    if expected_sealer is not None:
        expected_sealer = parse_address(expected_sealer, "--expect-sealer")
    source: ChainSource
    with contextlib.ExitStack() as stack:
        if node is not None:
            from gateway.client.ledger_api import RemoteChain

            remote = RemoteChain(stack.enter_context(node_api(node)))
            source, total = remote, remote.head.header.tree_size
        else:
            ledger = home.open_ledger(with_sealer=False)
            source, total = ledger.store, ledger.head().header.tree_size + ledger.store.unsealed()[0]
        report = _audit(source, total, independent, expected_sealer, as_json)
    if as_json:
        emit_json(report.to_dict())
    elif report.ok:
        head = report.head
        click.echo(
            f"chain valid: {report.blocks} blocks, {report.transactions} transactions"
            + (f", head {head.block_hash}" if head else "")
            + (", signatures re-checked independently" if independent else "")
        )
    else:
        click.echo(f"chain INVALID: {len(report.problems)} problem(s), first one first:", err=True)
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
    if not report.ok:
        sys.exit(1)


@click.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@pass_home
def export_command(home: Home, file: Path, as_json: bool) -> None:
    """Write the whole ledger to FILE ('-': stdout) as JSON Lines: chain, blocks, transactions, API keys.

    Stop the gateway first: the dump is the ledger as of its head. `inferpay import` rebuilds it
    in another database (SQLite or PostgreSQL)."""
    from ledger import export_ledger

    store = home.open_store()
    try:
        total = store.head().header.tree_size + store.unsealed()[0]
        if str(file) == "-":
            result = _with_progress(total, "exporting", lambda progress: export_ledger(store, sys.stdout, progress))
        else:
            partial = file.with_name(file.name + ".partial")  # never leave half a dump under FILE
            with open(partial, "w", encoding="utf-8") as handle:
                result = _with_progress(total, "exporting", lambda progress: export_ledger(store, handle, progress))
            partial.replace(file)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True), err=str(file) == "-")
        return
    click.echo(
        f"exported {result.transactions} transactions, {result.blocks} blocks and {result.api_keys} API keys "
        f"from {home.ledger_description}; head {result.head.block_hash}",
        err=True,
    )


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@pass_home
def import_command(home: Home, file: Path, as_json: bool) -> None:
    """Rebuild a ledger from an `inferpay export` FILE ('-': stdin) in --database (or ledger.db).

    Every transaction is replayed through the target's own rules (balances, nonces, holds and
    allowances are rebuilt, never copied), then the signed blocks are re-attached. The target
    must hold no ledger yet; wallets, sealer.key and checkpoint.key are not in the dump: copy
    them to --home."""
    from ledger import import_ledger, read_header

    if home.has_local_ledger_file():
        raise WalletExists(f"{home.ledger_description} already holds a ledger; import into a new one")
    with contextlib.ExitStack() as stack:
        source = sys.stdin if str(file) == "-" else stack.enter_context(open(file, encoding="utf-8"))
        lines: Iterator[str] = iter(source)
        first = next(lines, "")
        total = int(read_header([first]).get("transactions", 0))  # a bad file fails before the target is made
        store = home.empty_store()
        stack.callback(store.close)
        result = _with_progress(
            total, "importing", lambda progress: import_ledger(store, itertools.chain([first], lines), progress)
        )
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(
        f"imported {result.transactions} transactions, {result.blocks} blocks and {result.api_keys} API keys "
        f"into {home.ledger_description}; head {result.head.block_hash}"
    )


def _audit(
    source: ChainSource, total: int, independent: bool, expected_sealer: str | None, as_json: bool
) -> AuditReport:
    if sys.stderr.isatty() and not as_json:
        with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
            return audit(source, independent=independent, progress=bar.update, expected_sealer=expected_sealer)
    return audit(source, independent=independent, expected_sealer=expected_sealer)


def _with_progress(total: int, label: str, work: Callable[[Callable[[int], None] | None], Any]) -> Any:
    """Run ``work(progress)`` with a progress bar on a terminal's stderr, quietly otherwise."""
    if not sys.stderr.isatty():
        return work(None)
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr) as bar:
        return work(bar.update)


COMMANDS = [verify, export_command, import_command]
__all__ = ["COMMANDS"]

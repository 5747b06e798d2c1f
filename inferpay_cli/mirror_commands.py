"""``inferpay mirror URL``: follow a ledger's transparency log into a verified local copy
(``gateway.mirror``), and optionally serve the same read API from it.

The mirror's home holds its own ledger (``ledger.db``, or ``--database``), the pinned
checkpoint key (``source.vkey``), the newest checkpoint seen and any evidence. A pass that finds
the source rewriting history stops the command: one line on stderr naming the evidence file,
exit 1. An unreachable source only delays the next poll (``--once``: exit 1).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from inferpay_cli.home import Home
from inferpay_cli.options import NODE_TIMEOUT_SECONDS, json_option, pass_home
from inferpay_cli.output import emit_json
from ledger import LedgerStore
from ledger.errors import HistoryRewritten, InconsistentCheckpoints, LedgerNotInitialized, StorageUnavailable

if TYPE_CHECKING:
    from gateway.mirror import Mirror, SyncResult


WITNESS_KEY_FILE = "witness.key"
WITNESS_STATE_FILE = "witness.db"


@click.command("mirror")
@click.argument("url")
@click.option(
    "--home",
    "mirror_home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The mirror's directory: its ledger, the pinned key, the last checkpoint, evidence "
    "(default: the global --home).",
)
@click.option(
    "--vkey",
    default=None,
    metavar="VKEY",
    help="The source's checkpoint key, as its `inferpay info` prints it. Without it, the key the "
    "source names is pinned on first use.",
)
@click.option("--once", is_flag=True, help="Sync up to the source's current checkpoint, then exit.")
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between polls of the source's checkpoint.",
)
@click.option(
    "--serve",
    "serve_at",
    metavar="HOST:PORT",
    default=None,
    help="Also serve the ledger and tlog read API (/ledger/...) from the copy, read-only.",
)
@click.option(
    "--witness",
    "witness_name",
    metavar="NAME",
    default=None,
    help="With --serve: also witness the source's log (c2sp.org/tlog-witness POST /add-checkpoint) "
    "under the key name NAME; the key is made in the home on first start (witness.key, mode 0600) "
    "and its vkey printed, for the source's [[checkpoints.witnesses]].",
)
@json_option
@pass_home
def mirror_command(
    home: Home,
    url: str,
    mirror_home: Path | None,
    vkey: str | None,
    once: bool,
    interval_s: float,
    serve_at: str | None,
    witness_name: str | None,
    as_json: bool,
) -> None:
    """Follow the ledger of the gateway at URL: verify every checkpoint and entry and replay it
    into a local ledger by the same rules, until the source rewrites history (exit 1, evidence
    kept in the home) or forever; --once stops at the current checkpoint."""
    from gateway.client.ledger_api import LedgerApiClient
    from gateway.mirror import Mirror, Source, locked_home, pinned_vkey

    if once and serve_at is not None:
        raise click.UsageError("--serve keeps running: use it without --once")
    if witness_name is not None and serve_at is None:
        raise click.UsageError("--witness answers over the mirror's server: give --serve HOST:PORT too")
    listen = _host_port(serve_at) if serve_at is not None else None
    data_home = Home(mirror_home.expanduser(), database=home.database) if mirror_home is not None else home
    with contextlib.ExitStack() as stack:
        stack.enter_context(locked_home(data_home.path))
        source = Source(stack.enter_context(LedgerApiClient.for_node(url, timeout_s=NODE_TIMEOUT_SECONDS)))
        store = data_home.create_store()
        stack.callback(store.close)
        vkey, learned = pinned_vkey(data_home.path, store, source, vkey)
        if learned:
            click.echo(f"trusting the source's checkpoint key on first use: {vkey} (--vkey for another)", err=True)
        mirror = Mirror(data_home.path, store, source, vkey)
        serving = False
        while True:
            try:
                result = _sync(mirror, as_json)
            except (HistoryRewritten, InconsistentCheckpoints) as exc:
                evidence = exc.details.get("evidence")
                exc.message += f" (evidence: {evidence})" if evidence else ""
                raise
            except StorageUnavailable as exc:
                if once:
                    raise
                click.echo(f"warning: {' '.join(exc.message.split())} [{exc.code}]; retrying", err=True)
            else:
                _report(url, result, once, as_json)
                if once:
                    return
            if listen is not None and not serving and _holds_a_ledger(store):
                _serve(stack, data_home, vkey, *listen, witness_name=witness_name)
                serving = True
            time.sleep(interval_s)


def _sync(mirror: Mirror, as_json: bool) -> SyncResult:
    target, note = mirror.observe()
    todo = target.size - mirror.size()
    if todo <= 0 or as_json or not sys.stderr.isatty():
        return mirror.sync_to(target, note)
    with click.progressbar(length=todo, label="mirroring", file=sys.stderr) as bar:
        return mirror.sync_to(target, note, bar.update)


def _report(url: str, result: SyncResult, once: bool, as_json: bool) -> None:
    head = result.head.header
    if as_json:
        if once:
            emit_json(result.to_dict())
        elif result.replayed:
            click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    line = (
        f"mirror of {url}: {head.tree_size} entries, block {head.height} {result.head.block_hash}, "
        f"checkpoint of {result.checkpoint.size} verified (+{result.replayed} in {result.elapsed_ms} ms)"
    )
    if once:
        click.echo(line)
    elif result.replayed:
        click.echo(line, err=True)


def _holds_a_ledger(store: LedgerStore) -> bool:
    with contextlib.suppress(LedgerNotInitialized):
        store.chain_info()
        return True
    return False


def _serve(
    stack: contextlib.ExitStack, home: Home, vkey: str, host: str, port: int, *, witness_name: str | None
) -> None:
    """Serve the read API (and the witness, if asked) until the command ends (stopped before the
    store is closed)."""
    from gateway.server.mirror_app import close_mirror_app, create_mirror_app, serve_in_thread
    from witness.keys import load_or_create_key

    witness_key = None
    if witness_name is not None:
        witness_key, made = load_or_create_key(home.path / WITNESS_KEY_FILE, witness_name)
        click.echo(f"{'made' if made else 'using'} the witness key {witness_key.vkey}", err=True)
    app = create_mirror_app(home.ledger_location, vkey, witness_key, home.path / WITNESS_STATE_FILE)
    stack.callback(close_mirror_app, app)
    server = serve_in_thread(app, host, port)
    stack.callback(server.shutdown)
    click.echo(f"serving the mirror's read API on http://{host}:{server.server_port}/ledger", err=True)
    if witness_key is not None:
        click.echo(f"witnessing at http://{host}:{server.server_port}/add-checkpoint", err=True)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--serve")
    return host.strip("[]"), int(port)


COMMANDS = [mirror_command]
__all__ = ["COMMANDS"]

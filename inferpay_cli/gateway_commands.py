"""Gateway commands: gateway, model-server, key create|list|revoke, call."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from inferpay_cli.home import Home
from inferpay_cli.options import json_option, pass_home, password_file_option
from inferpay_cli.output import emit_json, table
from ledger.amounts import format_amount, parse_amount
from ledger.errors import InvalidInput
from ledger.types import Allowance

if TYPE_CHECKING:
    from gateway.server.config import GatewayConfig

_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"not a duration: {text!r} (write e.g. 90s, 30m, 24h, 7d)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


@click.command("gateway")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Gateway configuration (TOML).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check the config and open what it names (home, ledger, payee, keys), print what was found, and exit.",
)
@json_option
@pass_home
def gateway_command(home: Home, config_path: Path, check: bool, as_json: bool) -> None:
    """Serve the paid gateway described by --config (gunicorn, `workers` processes).

    SIGHUP to the gateway's master process reloads the config file without dropping calls
    (routes, prices, rate limits, witnesses); a bad new config is refused, logged with its
    reason, and the running one kept. Host, port, workers and threads need a restart."""
    from gateway.server.config import load_config
    from gateway.server.serve import check_config, serve_gateway

    def read() -> GatewayConfig:
        config = load_config(config_path, home=home.path)
        if config.database is None and home.database:  # [gateway] database wins over --database
            config = dataclasses.replace(config, database=home.database)
        return config

    config = read()
    if check:
        found = check_config(config)
        if as_json:
            emit_json({"ok": True, **found})
            return
        click.echo(f"config ok: {config_path}")
        click.echo(f"routes:      {', '.join(found['routes'])}")
        click.echo(f"ledger:      {found['ledger']} (head at block {found['headHeight']})")
        click.echo(f"pays to:     {found['payTo']}")
        click.echo(f"checkpoints: {found['checkpointKey'] or 'no checkpoint key'}; {len(found['witnesses'])} witnesses")
        click.echo(f"rate limits: {found['rateLimits']}")
        if (pool := found["pool"]) is not None:
            click.echo(
                f"pool:        {', '.join(pool['routes'])}; accept {pool['accept']}; "
                f"{pool['routable']} of {pool['providers']} providers routable"
            )
        return
    click.echo(
        f"inferpay gateway on http://{config.host}:{config.port} ({len(config.routes)} routes, "
        f"{config.workers} workers)",
        err=True,
    )
    serve_gateway(config, read)


@click.command("model-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9000, show_default=True, help="Port to listen on.")
def model_server(host: str, port: int) -> None:
    """Serve all-MiniLM-L6-v2 as an OpenAI-compatible POST /v1/embeddings (needs inferpay[model])."""
    from model_server.app import serve_model

    serve_model(host, port)


@click.group()
def key() -> None:
    """API keys for clients that cannot sign: a wallet-signed spending allowance behind a bearer key."""


@key.command("create")
@click.option("--wallet", "wallet_name", required=True, help="Wallet whose funds the key spends.")
@click.option("--cap", required=True, help="Most the key may spend in total, e.g. 5 or 0.25.")
@click.option("--expires", default="24h", show_default=True, help="Lifetime: 90s, 30m, 24h, 7d.")
@click.option(
    "--pay-to",
    default="operator",
    show_default=True,
    help="The gateway's payee (wallet name or address): the only spender the key allows.",
)
@click.option("--label", default="", help="A note to recognise the key by.")
@password_file_option
@json_option
@pass_home
def key_create(home: Home, wallet_name: str, cap: str, expires: str, pay_to: str, label: str, as_json: bool) -> None:
    """Sign a spending allowance with --wallet and print a new API key for it (shown once)."""
    from gateway.server.api_keys import register_key

    cap_units = parse_amount(cap)
    lifetime = parse_duration(expires)
    ledger = home.open_ledger()
    spender = home.wallets.resolve(pay_to)
    wallet = home.wallets.load(wallet_name, home.password(f"Password for wallet {wallet_name!r}"))
    allowance = Allowance(wallet.address, spender, cap_units, ledger.now_s() + lifetime, "0x" + secrets.token_hex(32))
    api_key, result = register_key(ledger, allowance, wallet.sign(ledger.chain, allowance), label)
    ledger.seal_all()
    if as_json:
        emit_json(
            {
                "apiKey": api_key,
                "allowanceId": result.tx_id,
                "cap": str(cap_units),
                "validBefore": allowance.valid_before,
                "owner": wallet.address,
                "spender": spender,
            }
        )
        return
    click.echo(api_key)
    click.echo(
        f"allowance {result.tx_id}: {wallet_name} lets {spender} charge up to {format_amount(cap_units)} "
        f"until {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(allowance.valid_before))}",
        err=True,
    )


@key.command("list")
@json_option
@pass_home
def key_list(home: Home, as_json: bool) -> None:
    """List API keys (by prefix; the keys themselves are stored only as hashes)."""
    ledger = home.open_ledger(with_sealer=False)
    rows = ledger.store.api_keys.all()
    now = ledger.now_s()
    data: list[dict[str, Any]] = [
        {
            "prefix": r.key_prefix,
            "label": r.label,
            "owner": r.allowance.owner,
            "cap": str(r.allowance.cap),
            "spent": str(r.allowance.spent),
            "validBefore": r.allowance.valid_before,
            "revoked": r.revoked,
            "allowanceId": r.allowance.allowance_id,
            "status": "revoked" if r.revoked else "expired" if now >= r.allowance.valid_before else "active",
        }
        for r in rows
    ]
    if as_json:
        emit_json(data)
        return
    table(
        [
            [
                f"{d['prefix']}…",
                str(d["status"]),
                format_amount(int(d["spent"])),
                format_amount(int(d["cap"])),
                str(d["owner"]),
                str(d["label"]),
            ]
            for d in data
        ],
        ["KEY", "STATUS", "SPENT", "CAP", "OWNER", "LABEL"],
    )


@key.command("revoke")
@click.argument("key_prefix")
@pass_home
def key_revoke(home: Home, key_prefix: str) -> None:
    """Revoke the API key with this prefix (as `key list` shows it) or allowance id."""
    count = home.open_ledger(with_sealer=False).store.api_keys.revoke(key_prefix.rstrip("…"))
    if not count:
        raise InvalidInput(f"no API key with prefix or allowance {key_prefix!r}")
    click.echo(f"revoked {count} key(s)")


@click.command("call")
@click.option("--wallet", "wallet_name", required=True, help="Wallet that pays.")
@click.option("--max", "max_per_call", default=None, help="Refuse to pay more than this per call, e.g. 0.05.")
@click.option("--data", default=None, help="JSON body to POST (default: GET without a body).")
@click.option("--method", default=None, help="HTTP method (default: POST with --data, else GET).")
@password_file_option
@json_option
@click.argument("url")
@pass_home
def call(
    home: Home,
    wallet_name: str,
    max_per_call: str | None,
    data: str | None,
    method: str | None,
    url: str,
    as_json: bool,
) -> None:
    """Call a paid URL, paying with --wallet over x402; prints the response and the verified receipt."""
    import requests

    from gateway.client import PaymentAuth, receipt_of

    limit = parse_amount(max_per_call) if max_per_call is not None else None
    body = None
    if data is not None:
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"--data is not JSON: {exc}") from exc
    wallet = home.wallets.load(wallet_name, home.password(f"Password for wallet {wallet_name!r}"))
    auth = PaymentAuth(wallet, max_per_call=limit)
    try:
        response = requests.request(
            method or ("POST" if body is not None else "GET"), url, json=body, auth=auth, timeout=120
        )
    except requests.RequestException as exc:
        raise InvalidInput(f"cannot reach {url}: {type(exc).__name__}") from exc
    receipt = receipt_of(response)
    if as_json:
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        emit_json({"status": response.status_code, "body": payload, "receipt": receipt.to_dict() if receipt else None})
    else:
        click.echo(response.text)
        if receipt is not None:
            click.echo(
                f"receipt: charged {format_amount(receipt.charged)} of {format_amount(receipt.authorized)} "
                f"authorized, tx {receipt.tx_id}, balance "
                f"{'unknown' if receipt.balance_after is None else format_amount(receipt.balance_after)} "
                f"(signed by {receipt.sealer}, verified)",
                err=True,
            )
            if receipt.provider:  # a pool call: who got what
                click.echo(
                    f"split:   provider {receipt.provider} {format_amount(receipt.provider_amount)}, "
                    f"operator {receipt.pay_to} {format_amount(receipt.fee)}",
                    err=True,
                )
    if not response.ok:
        sys.exit(1)


COMMANDS = [gateway_command, model_server, key, call]

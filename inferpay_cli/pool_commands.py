"""Compute-pool commands: `inferpay provider register|update|withdraw|approve|list|show|earnings`,
`inferpay pool-fee`, `inferpay redeem`, `inferpay refund`.

A provider, holder or payee signs with its own wallet and submits either to the local ledger
(the home's, sealed before the command exits, like every CLI write) or, with ``--node URL``, to
a remote gateway's ledger API (``POST /ledger/providers``, ``/redeems``, ``/refunds``): the way a
provider who is not the operator joins. Approvals and the pool fee are the operator's: signed by
the sealer key of the home, on the local ledger only. Reads take ``--node`` and ``--json``.
"""

from __future__ import annotations

import secrets
from typing import Any

import click

from inferpay_cli.home import Home
from inferpay_cli.ledger_commands import _after_write, _print_result
from inferpay_cli.options import json_option, node_api, node_option, pass_home, password_file_option
from inferpay_cli.output import emit_json, table
from ledger.amounts import INT64_MAX, format_amount, parse_amount
from ledger.errors import InvalidInput
from ledger.types import (
    PoolFeeInForce,
    ProviderEarnings,
    ProviderRecord,
    ProviderRegistration,
    Redeem,
    Refund,
    Transaction,
    TxKind,
    parse_bytes32,
)
from wallets import Wallet


def _nonce() -> str:
    return "0x" + secrets.token_hex(32)


def _price(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_amount(text, allow_zero=True)
    except InvalidInput as exc:  # the same error (its code kept), saying which option
        raise type(exc)(f"{what}: {exc.message}", **exc.details) from exc


def _submit(
    home: Home,
    node: str | None,
    as_json: bool,
    kind: TxKind,
    wallet: Wallet,
    message: ProviderRegistration | Redeem | Refund,
) -> None:
    """Sign ``message`` with ``wallet`` (under the ledger's domain: the node's, when given) and
    submit it to the local ledger or to ``node``; print the result."""
    if node is not None:
        with node_api(node) as api:
            signature = wallet.sign(api.chain_info(), message)
            answer = api.post_json(_WIRE_PATH[kind], {_WIRE_FIELD[kind]: message.to_dict(), "signature": signature})
        if as_json:
            emit_json(answer)
        else:
            note = " (already recorded)" if answer.get("duplicate") else ""
            click.echo(f"{answer.get('kind')} {answer.get('txId')} submitted to {node}{note}")
        return
    ledger = home.open_ledger()
    result = ledger.submit(Transaction(kind, message, wallet.address, wallet.sign(ledger.chain, message)))
    _after_write(ledger)
    _print_result(result, ledger, as_json)


_WIRE_PATH = {"provider_registration": "/providers", "redeem": "/redeems", "refund": "/refunds"}
_WIRE_FIELD = {"provider_registration": "registration", "redeem": "redeem", "refund": "refund"}


def _load_wallet(home: Home, name: str) -> Wallet:
    return home.wallets.load(name, home.password(f"Password for wallet {name!r}"))


def _record_of(home: Home, node: str | None, who: str) -> ProviderRecord:
    address = home.wallets.resolve(who)
    if node is not None:
        with node_api(node) as api:
            return api.provider(address)
    return home.open_ledger(with_sealer=False).provider(address)


# ---- provider ----


@click.group()
def provider() -> None:
    """Join the compute pool as a provider (signed registrations on the ledger), and read who is in it."""


def _registration_options(func: Any) -> Any:
    options = [
        click.option(
            "--endpoint", default=None, metavar="URL", help="OpenAI-compatible base URL, e.g. http://host:8101/v1."
        ),
        click.option("--model", "models", multiple=True, metavar="NAME", help="A model served (repeat for each)."),
        click.option("--price-per-call", default=None, metavar="AMOUNT", help="Tokens per call, e.g. 0.001."),
        click.option("--price-per-1k-input", default=None, metavar="AMOUNT", help="Tokens per 1000 input tokens."),
        click.option("--price-per-1k-output", default=None, metavar="AMOUNT", help="Tokens per 1000 output tokens."),
        click.option(
            "--capacity", type=click.IntRange(0, INT64_MAX), default=None, help="Most concurrent calls (0: unstated)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@provider.command("register")
@click.argument("wallet")
@_registration_options
@node_option
@password_file_option
@json_option
@pass_home
def provider_register(
    home: Home,
    wallet: str,
    endpoint: str | None,
    models: tuple[str, ...],
    price_per_call: str | None,
    price_per_1k_input: str | None,
    price_per_1k_output: str | None,
    capacity: int | None,
    node: str | None,
    as_json: bool,
) -> None:
    """Register WALLET as a provider: its endpoint, the models it serves and its prices (a
    registration WALLET signs; prices default to 0, so state at least one)."""
    if endpoint is None or not models:
        raise InvalidInput("--endpoint and at least one --model are required")
    signer = _load_wallet(home, wallet)
    registration = ProviderRegistration(
        provider=signer.address,
        endpoint=endpoint,
        models=models,
        price_per_call=_price(price_per_call, "--price-per-call") or 0,
        price_per_1k_input=_price(price_per_1k_input, "--price-per-1k-input") or 0,
        price_per_1k_output=_price(price_per_1k_output, "--price-per-1k-output") or 0,
        capacity=capacity or 0,
        status="active",
        nonce=_nonce(),
    )
    _submit(home, node, as_json, "provider_registration", signer, registration)


def _changed(current: ProviderRegistration, **changes: Any) -> ProviderRegistration:
    values = {
        "provider": current.provider,
        "endpoint": current.endpoint,
        "models": current.models,
        "price_per_call": current.price_per_call,
        "price_per_1k_input": current.price_per_1k_input,
        "price_per_1k_output": current.price_per_1k_output,
        "capacity": current.capacity,
        "status": current.status,
        **{k: v for k, v in changes.items() if v is not None},
        "nonce": _nonce(),
    }
    return ProviderRegistration(**values)


@provider.command("update")
@click.argument("wallet")
@_registration_options
@node_option
@password_file_option
@json_option
@pass_home
def provider_update(
    home: Home,
    wallet: str,
    endpoint: str | None,
    models: tuple[str, ...],
    price_per_call: str | None,
    price_per_1k_input: str | None,
    price_per_1k_output: str | None,
    capacity: int | None,
    node: str | None,
    as_json: bool,
) -> None:
    """Sign a newer registration for WALLET: what is given changes, the rest stays as in force
    (an update of a withdrawn provider makes it active again)."""
    current = _record_of(home, node, wallet).registration
    signer = _load_wallet(home, wallet)
    updated = _changed(
        current,
        endpoint=endpoint,
        models=models or None,
        price_per_call=_price(price_per_call, "--price-per-call"),
        price_per_1k_input=_price(price_per_1k_input, "--price-per-1k-input"),
        price_per_1k_output=_price(price_per_1k_output, "--price-per-1k-output"),
        capacity=capacity,
        status="active",
    )
    _submit(home, node, as_json, "provider_registration", signer, updated)


@provider.command("withdraw")
@click.argument("wallet")
@node_option
@password_file_option
@json_option
@pass_home
def provider_withdraw(home: Home, wallet: str, node: str | None, as_json: bool) -> None:
    """Take WALLET out of the pool: a newer registration, signed by it, with status withdrawn
    (gateways stop routing to it within one health interval)."""
    current = _record_of(home, node, wallet).registration
    signer = _load_wallet(home, wallet)
    withdrawn = _changed(current, status="withdrawn")
    _submit(home, node, as_json, "provider_registration", signer, withdrawn)


@provider.command("approve")
@click.argument("who")
@click.option("--revoke", is_flag=True, help="Withdraw the approval instead.")
@json_option
@pass_home
def provider_approve(home: Home, who: str, revoke: bool, as_json: bool) -> None:
    """As the operator, approve WHO (a wallet name or address) for gateways that route to listed
    providers only (accept = "listed"); signed by this home's sealer key."""
    address = home.wallets.resolve(who)
    ledger = home.open_ledger()
    result = ledger.approve_provider(address, not revoke)
    _after_write(ledger)
    _print_result(result, ledger, as_json)


@provider.command("list")
@node_option
@json_option
@pass_home
def provider_list(home: Home, node: str | None, as_json: bool) -> None:
    """List every provider with its registration in force (withdrawn ones too) and approval."""
    if node is not None:
        with node_api(node) as api:
            records = api.providers()
    else:
        records = home.open_ledger(with_sealer=False).providers()
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    table(
        [
            [
                r.address,
                r.registration.status,
                "yes" if r.approved else "no",
                ",".join(r.registration.models),
                format_amount(r.registration.price_per_call),
                format_amount(r.registration.price_per_1k_input),
                format_amount(r.registration.price_per_1k_output),
                r.registration.endpoint,
            ]
            for r in records
        ],
        ["PROVIDER", "STATUS", "APPROVED", "MODELS", "PER CALL", "PER 1K IN", "PER 1K OUT", "ENDPOINT"],
    )


@provider.command("show")
@click.argument("who")
@node_option
@json_option
@pass_home
def provider_show(home: Home, who: str, node: str | None, as_json: bool) -> None:
    """Show WHO's registration in force (a wallet name or address) and the operator's approval."""
    record = _record_of(home, node, who)
    if as_json:
        emit_json(record.to_dict())
        return
    reg = record.registration
    rows = [
        ("provider", record.address),
        ("status", reg.status),
        ("approved", "yes" if record.approved else "no"),
        ("endpoint", reg.endpoint),
        ("models", ", ".join(reg.models)),
        ("per call", format_amount(reg.price_per_call)),
        ("per 1k input", format_amount(reg.price_per_1k_input)),
        ("per 1k output", format_amount(reg.price_per_1k_output)),
        ("capacity", str(reg.capacity) if reg.capacity else "unstated"),
        ("registration", record.registration_id),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':<14} {value}")


@provider.command("earnings")
@click.argument("who")
@node_option
@json_option
@pass_home
def provider_earnings(home: Home, who: str, node: str | None, as_json: bool) -> None:
    """Show what WHO earned as a provider: calls split-settled to it and their total, and what
    it refunded and redeemed."""
    address = home.wallets.resolve(who)
    earnings: ProviderEarnings
    if node is not None:
        with node_api(node) as api:
            earnings = api.provider_earnings(address)
    else:
        earnings = home.open_ledger(with_sealer=False).provider_earnings(address)
    if as_json:
        emit_json({"address": address, **earnings.to_dict()})
        return
    click.echo(f"calls:    {earnings.calls}")
    click.echo(f"earned:   {format_amount(earnings.earned)}")
    click.echo(f"refunded: {format_amount(earnings.refunded)}")
    click.echo(f"redeemed: {format_amount(earnings.redeemed)}")


# ---- the operator's fee ----


@click.command("pool-fee")
@click.option(
    "--bps", type=click.IntRange(0, 10_000), default=None, help="Set the fee: basis points of the provider's price."
)
@click.option("--flat", default=None, metavar="AMOUNT", help="Set the fee: tokens per call on top.")
@node_option
@json_option
@pass_home
def pool_fee(home: Home, bps: int | None, flat: str | None, node: str | None, as_json: bool) -> None:
    """Show the pool fee in force (the operator's part of every split), or, with --bps and/or
    --flat, set a new one (signed by this home's sealer key; unset parts become 0)."""
    if bps is not None or flat is not None:
        if node is not None:
            raise InvalidInput("the pool fee is set on the operator's own ledger, not over --node")
        ledger = home.open_ledger()
        result = ledger.set_pool_fee(bps or 0, _price(flat, "--flat") or 0)
        _after_write(ledger)
        _print_result(result, ledger, as_json)
        return
    if node is not None:
        with node_api(node) as api:
            data = api.pool()
        fee = PoolFeeInForce.from_dict(data["poolFee"])
        operator_fees = int(data["operatorFees"])
    else:
        ledger = home.open_ledger(with_sealer=False)
        fee, operator_fees = ledger.pool_fee_in_force(), ledger.operator_fees()
    if as_json:
        emit_json({**fee.to_dict(), "operatorFees": str(operator_fees)})
        return
    percent = f"{fee.fee_bps / 100:g}"  # display only: the ledger computes in integer basis points
    click.echo(
        f"fee:           {fee.fee_bps} bp ({percent}%) of the provider's price + {format_amount(fee.flat_fee)} per call"
    )
    click.echo(f"fee entry:     {fee.fee_id}")
    click.echo(f"fees credited: {format_amount(operator_fees)}")


# ---- redeems and refunds ----


@click.command("redeem")
@click.argument("wallet")
@click.argument("amount")
@click.option("--reference", required=True, metavar="TEXT", help="The payout reference the operator pays out under.")
@node_option
@password_file_option
@json_option
@pass_home
def redeem(home: Home, wallet: str, amount: str, reference: str, node: str | None, as_json: bool) -> None:
    """Burn AMOUNT of WALLET's tokens for an off-ledger payout under --reference (total supply
    goes down by AMOUNT); listed in history."""
    units = parse_amount(amount)
    signer = _load_wallet(home, wallet)
    message = Redeem(signer.address, units, reference, _nonce())
    _submit(home, node, as_json, "redeem", signer, message)


@click.command("refund")
@click.argument("wallet")
@click.argument("settle_id")
@click.argument("amount")
@node_option
@password_file_option
@json_option
@pass_home
def refund(home: Home, wallet: str, settle_id: str, amount: str, node: str | None, as_json: bool) -> None:
    """Give AMOUNT of what the settle SETTLE_ID paid WALLET back to its payer (never more, in
    total, than that settle paid WALLET)."""
    units = parse_amount(amount)
    settle = parse_bytes32(settle_id, "settle id")
    signer = _load_wallet(home, wallet)
    message = Refund(settle, signer.address, units, _nonce())
    _submit(home, node, as_json, "refund", signer, message)


COMMANDS = [provider, pool_fee, redeem, refund]

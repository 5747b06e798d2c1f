"""How the CLI prints: JSON for machines, short aligned text for people; amounts as "1.25"."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

from ledger import StoredTx
from ledger.amounts import format_amount
from ledger.types import (
    Address,
    Allowance,
    Authorization,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


def history_row(stored: StoredTx, address: Address) -> dict[str, Any]:
    """One history line from ``address``'s point of view: signed change of its available balance."""
    tx = stored.tx
    message = tx.message
    counterparty = ""
    delta: int | None = 0
    amount = 0
    if isinstance(message, Mint):
        amount, delta, counterparty = message.value, message.value, "mint"
    elif isinstance(message, Authorization):
        amount = message.value
        outgoing = message.from_ == address
        counterparty = message.to if outgoing else message.from_
        delta = (-amount if outgoing else amount) if tx.kind == "transfer" else (-amount if outgoing else 0)
    elif isinstance(message, Permit2Authorization):  # an x402 upto hold: reserves its most
        amount = message.amount
        outgoing = message.from_ == address
        counterparty = message.to if outgoing else message.from_
        delta = -amount if outgoing else 0
    elif isinstance(message, HoldResolution):
        amount = message.amount
        counterparty = message.hold_id
    elif isinstance(message, Allowance):
        amount, counterparty = message.cap, message.spender
    elif isinstance(message, Charge):  # an API-key call holding funds, like a hold
        amount, delta, counterparty = message.amount, -message.amount, message.allowance_id
    elif isinstance(message, SplitSettlement):  # a pool call's settle: the provider's part is its earning
        amount, counterparty = message.amount, message.hold_id
        delta = message.provider_amount if message.provider == address else None
    elif isinstance(message, Redeem):  # burnt for an off-ledger payout
        amount, delta, counterparty = message.value, -message.value, f"payout {message.payout_reference}"
    elif isinstance(message, Refund):
        outgoing = message.from_ == address
        amount, delta = message.value, -message.value if outgoing else message.value
        counterparty = message.settle_id if outgoing else message.from_
    elif isinstance(message, ProviderRegistration):
        amount, delta, counterparty = message.price_per_call, None, f"{message.status} at {message.endpoint}"
    elif isinstance(message, ProviderApproval):
        delta, counterparty = None, "approved" if message.approved else "not approved"
    elif isinstance(message, PoolFee):
        amount, delta, counterparty = message.flat_fee, None, f"{message.fee_bps} bp"
    if isinstance(message, HoldResolution | Allowance):
        delta = None
    return {
        "seq": stored.seq,
        "txId": stored.tx_id,
        "kind": tx.kind,
        "blockHeight": stored.block_height,
        "acceptedAt": tx.accepted_at_ms,
        "amount": str(amount),
        "counterparty": counterparty,
        "availableChange": None if delta is None else str(delta),
        "record": tx.to_dict(),
    }


def write_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)


def amount_text(units: int | str | None) -> str:
    if units is None:
        return ""
    return format_amount(int(units))

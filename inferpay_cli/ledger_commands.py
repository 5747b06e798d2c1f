"""Ledger commands: init, info, mint, transfer, balance, history, seal, blocks, tx.

One transaction or one read each; the whole-chain commands (verify, export, import) are
``inferpay_cli.chain_commands``. A write is sealed before the command exits (the CLI is
short-lived); a read never writes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import click

from inferpay_cli.home import OPERATOR_WALLET, Home
from inferpay_cli.options import json_option, node_api, node_option, pass_home, password_file_option
from inferpay_cli.output import amount_text, emit_json, history_row, table, write_csv
from inferpay_cli.tlog_commands import origin_option
from ledger import StoredTx, is_postgres_url
from ledger.amounts import INT64_MAX, format_amount, parse_amount
from ledger.blocks import verify_inclusion
from ledger.checkpoints import default_origin, tlog_proof
from ledger.errors import InvalidInput, WalletExists
from ledger.ledger import Ledger, TxResult
from ledger.tlog.note import parse_note
from ledger.tlog.proof import format_tlog_proof
from ledger.transparency import TransparencyLog
from ledger.types import Mint, Transaction


def _after_write(ledger: Ledger) -> None:
    """The CLI is short-lived: release expired holds and seal what it wrote before exiting."""
    ledger.expire_holds()
    ledger.seal_all()


def _print_result(result: TxResult, ledger: Ledger, as_json: bool) -> None:
    stored = ledger.transaction(result.tx_id)
    if as_json:
        emit_json({**result.to_dict(), "blockHeight": stored.block_height})
        return
    note = " (already recorded)" if result.duplicate else ""
    click.echo(f"{result.kind} {result.tx_id} in block {stored.block_height}{note}")


@click.command()
@click.option("--chain-id", type=click.IntRange(1, INT64_MAX), default=None, help="Fix the chain id (default: random).")
@origin_option
@password_file_option
@pass_home
def init(home: Home, chain_id: int | None, origin: str | None) -> None:
    """Create a new ledger, the operator (issuer) wallet, the sealer key and the checkpoint key
    in the home directory.

    With --database URL the ledger is created in that database instead of ledger.db; the
    wallets and the keys are still written to the home directory."""
    if home.sealer_path.exists() or home.checkpoint_key_path.exists() or home.has_local_ledger_file():
        raise WalletExists(f"{home.path} already holds a ledger; use another --home")
    home.ensure()
    if home.wallets.exists(OPERATOR_WALLET):
        raise WalletExists(f"a wallet named {OPERATOR_WALLET!r} already exists in {home.path}")
    store = None
    if is_postgres_url(home.ledger_location):  # reach the server before writing any key
        store = home.empty_store()
    try:
        password = home.password("Password for the operator wallet", confirm=True)
        operator = home.wallets.create(OPERATOR_WALLET, password)
        sealer = home.create_sealer_key()
        store = store or home.create_store()
        ledger = Ledger.create(store, operator=operator.address, sealer=sealer, chain_id=chain_id)
        chain = ledger.chain
        genesis = ledger.store.block(0)
        assert genesis is not None
        checkpoints = home.create_checkpoint_key(origin or default_origin(chain.chain_id, genesis.block_hash))
    finally:
        if store is not None:
            store.close()
    click.echo(f"ledger created in {home.path}")
    if home.database:
        click.echo(f"ledger database: {home.ledger_description}")
    click.echo(f"chain id:      {chain.chain_id}")
    click.echo(f"token address: {chain.token_address}")
    click.echo(f"operator:      {chain.operator}")
    click.echo(f"sealer:        {chain.sealer}")
    click.echo(f"checkpoints:   {checkpoints.vkey}")


@click.command()
@json_option
@pass_home
def info(home: Home, as_json: bool) -> None:
    """Show the chain id, token address (EIP-712 domain), keys, supply and head."""
    ledger = home.open_ledger(with_sealer=False)
    chain, head = ledger.chain, ledger.head()
    data = {
        **chain.to_dict(),
        "supply": str(ledger.store.supply()),
        "head": head.to_dict(),
        "home": str(home.path),
        "ledger": home.ledger_description,
        **_checkpoint_info(home, ledger),
        "pool": _pool_info(home, ledger),
    }
    if as_json:
        emit_json(data)
        return
    click.echo(f"home:          {home.path}")
    click.echo(f"ledger:        {home.ledger_description}")
    click.echo(f"chain id:      {chain.chain_id}  (x402 network eip155:{chain.chain_id})")
    click.echo(f"token address: {chain.token_address}")
    click.echo(f"EIP-712:       name={chain.name!r} version={chain.version!r}")
    click.echo(f"operator:      {chain.operator}")
    click.echo(f"sealer:        {chain.sealer}")
    click.echo(f"supply:        {format_amount(ledger.store.supply())}")
    click.echo(f"head:          block {head.header.height}, {head.header.tree_size} transactions, {head.block_hash}")
    _echo_pool(data["pool"])
    if data["checkpointKey"] is None:
        click.echo("checkpoints:   none (no checkpoint key: run `inferpay checkpoint-key` once)")
        return
    click.echo(f"checkpoint key: {data['checkpointKey']}")
    latest = data["checkpoint"]
    if latest is None:
        click.echo("checkpoint:    none published yet (a running gateway publishes them)")
    else:
        lag = head.header.tree_size - latest["size"]
        witnesses = ", ".join(latest["cosignedBy"]) or "no witness yet"
        click.echo(f"checkpoint:    {latest['size']} entries ({lag} behind the head), cosigned by {witnesses}")
    _echo_witnesses(data["witnesses"])


def _pool_info(home: Home, ledger: Ledger) -> dict[str, Any] | None:
    """The compute pool: providers in force and the fee (from the ledger), and the figures a
    gateway on this host last wrote (``<home>/pool-health.json``, by one of its workers)."""
    from gateway.server.pool.checker import read_pool_snapshot

    providers = ledger.providers()
    if not providers:
        return None
    return {
        "providers": [p.to_dict() for p in providers],
        "fee": ledger.pool_fee_in_force().to_dict(),
        "health": read_pool_snapshot(home.path),
    }


def _echo_pool(pool: dict[str, Any] | None) -> None:
    if pool is None:
        return
    fee = pool["fee"]
    click.echo(
        f"pool:          {len(pool['providers'])} providers; fee {fee['feeBps']} bps + {fee['flatFee']} base units"
    )
    health = pool["health"]
    figures = {f["address"]: f for f in health["providers"]} if health else {}
    for record in pool["providers"]:
        f = figures.get(record["address"])
        status = record["registration"]["status"] + ("" if record["approved"] else ", not approved")
        seen = (
            f"circuit {f['circuit']}, latency {f['latencyMs']} ms, {f['callsServed']} served, {f['callsFailed']} failed"
            if f
            else "no figures (no gateway on this host has probed it)"
        )
        click.echo(f"  {record['address']}  {status}; {seen}")


def _checkpoint_info(home: Home, ledger: Ledger) -> dict[str, Any]:
    signer = home.checkpoint_signer()
    if signer is None:
        return {"checkpointKey": None, "checkpoint": None, "witnesses": []}
    stored = ledger.store.checkpoints.latest()
    latest = None
    if stored is not None:
        note = parse_note(stored[1])
        cosigners = sorted({s.name for s in note.signatures if s.name != signer.name})
        latest = {"size": stored[0], "cosignedBy": cosigners, "units": {"size": "entries"}}
    from gateway.server.checkpoints import read_status

    status = read_status(home.path)
    witnesses = status["witnesses"] if status else []
    return {"checkpointKey": signer.vkey, "origin": signer.name, "checkpoint": latest, "witnesses": witnesses}


def _echo_witnesses(witnesses: list[dict[str, Any]]) -> None:
    """Each witness's last answer as this host's sealer wrote it: a refusal stands out."""
    for w in witnesses:
        outcome = w.get("lastOutcome") or "not asked yet"
        when = f" at {_utc(w['lastOutcomeAtMs'])}" if w.get("lastOutcomeAtMs") else ""
        line = f"witness:       {w['name']} ({w['url']}): {outcome}{when}, holds size {w['size']}"
        if w.get("refusals"):
            line += f"; REFUSED {w['refusals']} checkpoint(s)"
        if outcome != "cosigned" and w.get("lastError"):
            line += f"; last error: {w['lastError']}"
        click.echo(line)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


@click.command()
@click.argument("to")
@click.argument("amount")
@password_file_option
@json_option
@pass_home
def mint(home: Home, to: str, amount: str, as_json: bool) -> None:
    """Issue AMOUNT new tokens to TO (a wallet name or address), signed by the operator wallet."""
    units = parse_amount(amount)
    ledger = home.open_ledger()
    recipient = home.wallets.resolve(to)
    operator = home.wallets.load(OPERATOR_WALLET, home.password("Password for the operator wallet"))
    message = Mint(recipient, units, "0x" + secrets.token_hex(32))
    result = ledger.mint(message, operator.sign(ledger.chain, message))
    _after_write(ledger)
    _print_result(result, ledger, as_json)


@click.command()
@click.argument("sender")
@click.argument("to")
@click.argument("amount")
@click.option(
    "--valid-for",
    type=click.IntRange(1, 86400 * 365),
    default=600,
    show_default=True,
    help="Seconds the signed authorization stays valid.",
)
@password_file_option
@json_option
@pass_home
def transfer(home: Home, sender: str, to: str, amount: str, valid_for: int, as_json: bool) -> None:
    """Send AMOUNT from wallet SENDER to TO (a wallet name or address) with a signed EIP-3009 authorization."""
    units = parse_amount(amount)
    ledger = home.open_ledger()
    recipient = home.wallets.resolve(to)
    wallet = home.wallets.load(sender, home.password(f"Password for wallet {sender!r}"))
    auth, signature = wallet.authorize_transfer(ledger.chain, recipient, units, ttl_seconds=valid_for)
    result = ledger.transfer(auth, signature)
    _after_write(ledger)
    _print_result(result, ledger, as_json)


@click.command()
@click.argument("who")
@node_option
@json_option
@pass_home
def balance(home: Home, who: str, node: str | None, as_json: bool) -> None:
    """Show the balance of WHO (a wallet name or address): available, and held for open payments."""
    address = home.wallets.resolve(who)
    if node is not None:
        with node_api(node) as api:
            data = api.account(address)
        available, held = int(data["available"]), int(data["held"])
    else:
        ledger = home.open_ledger(with_sealer=False)
        account = ledger.balance(address)
        holds = [
            {"holdId": h.hold_id, "payee": h.payee, "amount": str(h.amount), "expiresAt": h.expires_at_s}
            for h in ledger.store.open_holds(address)
        ]
        data = {**account.to_dict(), "holds": holds}
        available, held = account.available, account.held
    if as_json:
        emit_json(data)
        return
    held_text = f"  (held: {format_amount(held)})" if held else ""
    click.echo(f"{format_amount(available)}{held_text}")


@click.command()
@click.argument("who")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Rows per page.")
@click.option("--before", type=click.IntRange(1), default=None, help="Page: only entries with seq below this.")
@node_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@pass_home
def history(
    home: Home, who: str, limit: int, before: int | None, node: str | None, as_json: bool, as_csv: bool
) -> None:
    """List the transactions of WHO, newest first, with their block heights."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    address = home.wallets.resolve(who)
    if node is not None:
        with node_api(node) as api:
            page = api.history(address, limit, before)
        entries = [
            StoredTx(e["seq"], e["txId"], Transaction.from_dict(e["transaction"]), b"", e["blockHeight"])
            for e in page["entries"]
        ]
    else:
        entries = home.open_ledger(with_sealer=False).store.history(address, limit, before)
    rows = [history_row(s, address) for s in entries]
    if as_json:
        emit_json({"address": address, "entries": rows})
    elif as_csv:
        write_csv(rows, ["seq", "blockHeight", "kind", "amount", "availableChange", "counterparty", "txId"])
    else:
        table(
            [
                [
                    str(r["blockHeight"] if r["blockHeight"] is not None else "-"),
                    str(r["seq"]),
                    r["kind"],
                    amount_text(r["availableChange"])
                    if r["availableChange"] is not None
                    else f"(cap {amount_text(r['amount'])})"
                    if r["kind"] == "allowance"
                    else f"(captured {amount_text(r['amount'])})",
                    r["counterparty"],
                    r["txId"][:18] + "…",
                ]
                for r in rows
            ],
            ["BLOCK", "SEQ", "KIND", "CHANGE", "COUNTERPARTY", "TX"],
        )


@click.command()
@json_option
@pass_home
def seal(home: Home, as_json: bool) -> None:
    """Release expired holds and seal every waiting transaction into signed blocks now."""
    ledger = home.open_ledger()
    expired = ledger.expire_holds()
    blocks = ledger.seal_all()
    if as_json:
        emit_json({"expiredHolds": len(expired), "blocks": [b.to_dict() for b in blocks]})
        return
    if not blocks:
        click.echo("nothing to seal")
    for block in blocks:
        click.echo(f"sealed block {block.header.height}: {block.header.tx_count} transactions, {block.block_hash}")


@click.command()
@click.option("--from", "start", type=click.IntRange(0), default=None, help="First height (default: the last 20).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@pass_home
def blocks(home: Home, start: int | None, limit: int, as_json: bool) -> None:
    """List blocks: height, transactions, time and hash."""
    ledger = home.open_ledger(with_sealer=False)
    head = ledger.head().header.height
    first = max(0, head - limit + 1) if start is None else start
    found = ledger.store.blocks(first, first + limit)
    if as_json:
        emit_json([b.to_dict() for b in found])
        return
    table(
        [[str(b.header.height), str(b.header.tx_count), str(b.header.timestamp_ms), b.block_hash] for b in found],
        ["HEIGHT", "TXS", "TIME_MS", "HASH"],
    )


@click.command("tx")
@click.argument("tx_id")
@click.option(
    "--proof",
    "as_tlog_proof",
    is_flag=True,
    help="Print an offline receipt instead: a c2sp.org/tlog-proof (check it with `inferpay receipt verify`).",
)
@node_option
@json_option
@pass_home
def tx_command(home: Home, tx_id: str, as_tlog_proof: bool, node: str | None, as_json: bool) -> None:
    """Show transaction TX_ID and its inclusion proof, checked against the signed block."""
    if as_tlog_proof:
        click.echo(_tlog_proof(home, tx_id, node).decode(), nl=False)
        return
    if node is not None:
        raise InvalidInput("--node is only for --proof here; `inferpay verify --node URL` checks a remote chain")
    ledger = home.open_ledger(with_sealer=False)
    stored = ledger.transaction(tx_id)
    proof = ledger.inclusion_proof(tx_id) if stored.block_height is not None else None
    if proof is not None:
        verify_inclusion(proof, ledger.chain)
    if as_json:
        emit_json(
            {
                "txId": stored.tx_id,
                "seq": stored.seq,
                "blockHeight": stored.block_height,
                "transaction": stored.tx.to_dict(),
                "inclusionProof": proof,
            }
        )
        return
    click.echo(f"tx:        {stored.tx_id}")
    click.echo(f"kind:      {stored.tx.kind}  (seq {stored.seq})")
    for key, value in stored.tx.message.to_dict().items():
        click.echo(f"  {key}: {value}")
    click.echo(f"signer:    {stored.tx.signer}")
    if proof is None:
        click.echo("block:     not sealed yet")
        return
    click.echo(f"block:     {stored.block_height} ({proof['block']['hash']})")
    click.echo(
        f"proof:     leaf {proof['leafIndex']} of {proof['block']['header']['txCount']}, "
        f"{len(proof['auditPath'])} hashes, verified against the sealer's signature"
    )


def _tlog_proof(home: Home, tx_id: str, node: str | None) -> bytes:
    if node is not None:
        return node_api(node).tlog_proof(tx_id)
    ledger = home.open_ledger(with_sealer=False)
    signer = home.checkpoint_signer()
    if signer is None:
        raise InvalidInput(f"{home.path} has no checkpoint key: run `inferpay checkpoint-key` once")
    return format_tlog_proof(tlog_proof(TransparencyLog(ledger.store), signer, tx_id))


COMMANDS = [init, info, mint, transfer, balance, history, seal, blocks, tx_command]
__all__ = ["COMMANDS", "json_option", "node_option", "pass_home", "password_file_option"]

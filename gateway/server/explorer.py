"""The explorer: the public ledger as web pages, mounted at ``/explorer``.

The head (height, supply, transactions per minute, latest blocks), a block (its header, checks
and transactions), a transaction (parties, amounts, its hold's story, its inclusion proof
checked), an account (balance, open holds, spend per hour, history with CSV and JSON
downloads), an account's API keys, calls and revenue per route, and search.

It shows only what the ledger API already publishes (``gateway.server.explorer_data`` says
how it reads it), works offline (one bundled stylesheet, no script, charts drawn as SVG on the
server) and is served under a strict Content-Security-Policy. Jinja escapes everything it
prints. A bad query parameter or an unknown path is a 400 or 404 page, never a 500; a server
fault shows its code only, never its message (it could name a database URL).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException, NotFound

from gateway.server import explorer_charts
from gateway.server.error_handlers import status_for
from gateway.server.explorer_data import CSV_HEADER, HOUR_MS, Reader, route_usage, utc_ms, utc_s
from gateway.server.ledger_api import MAX_PAGE, api_key_summary, query_int
from gateway.server.services import services
from ledger.amounts import INT64_MAX, format_amount
from ledger.errors import InferpayError, InvalidInput
from ledger.errors import NotFound as LedgerNotFound
from ledger.tlog.note import parse_note
from ledger.types import parse_address, parse_bytes32

log = logging.getLogger("inferpay.explorer")
explorer = Blueprint(
    "explorer", __name__, template_folder="templates", static_folder="static/explorer", static_url_path="/static"
)

# No script at all, styles and images from this origin only, never framed, forms post back here.
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE = 25  # rows per page of history and blocks
MAX_QUERY = 200  # characters of a search query kept (and shown back)
_TX_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


# ---- filters the templates print with ----


@explorer.app_template_filter("tokens")
def tokens(units: int) -> str:
    return format_amount(units)


@explorer.app_template_filter("amount")
def amount(units: int) -> Markup:
    """Both exact forms: token text and base units (integers only, so nothing to escape)."""
    units = int(units)
    return Markup(
        f'<span class="amount"><span class="tokens">{format_amount(units)}</span> '
        f'<span class="unit">tokens</span> <span class="base">{units:,} base units</span></span>'
    )


@explorer.app_template_filter("utc")
def utc(ms: int | None) -> str:
    return utc_ms(ms)


@explorer.app_template_filter("utc_s")
def utc_seconds(seconds: int) -> str:
    return utc_s(seconds)


@explorer.app_template_filter("short")
def short(hex_text: str) -> str:
    return hex_text if len(hex_text) <= 14 else f"{hex_text[:8]}…{hex_text[-4:]}"


# ---- errors, headers ----


@explorer.after_request
def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@explorer.errorhandler(InferpayError)
def inferpay_error(error: InferpayError) -> Any:
    status = status_for(error)
    message = error.message if status < 500 else "the server could not answer; try again later"
    return _error_page(status, error.code, message)


@explorer.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Any:
    status = error.code or 500
    return _error_page(status, (error.name or "error").lower().replace(" ", "_"), error.description or "")


@explorer.errorhandler(Exception)
def unexpected_error(error: Exception) -> Any:
    log.exception("explorer page failed")
    return _error_page(500, "internal_error", "the server could not answer; try again later")


def _error_page(status: int, code: str, message: str, query: str | None = None) -> Any:
    return render_template("explorer/error.html", status=status, code=code, message=message, query=query), status


# ---- pages ----


@explorer.get("/")
def head() -> Any:
    ledger = services().ledger
    reader = Reader(ledger)
    top = ledger.head()
    before = query_int("before", top.header.height + 1, 1, INT64_MAX)
    assert before is not None
    start = max(0, before - PAGE)
    blocks = list(reversed(ledger.store.blocks(start, before)))
    now_ms = ledger.now_ms()
    sealed = reader.sealed_in_last(10 * 60_000, now_ms)
    waiting, _ = ledger.store.unsealed()
    return render_template(
        "explorer/head.html",
        checkpoint=_checkpoint_facts(top.header.tree_size),
        chain=ledger.chain,
        head=top,
        supply=ledger.store.supply(),
        sealed_10min=sealed,
        per_minute=f"{sealed // 10}.{sealed % 10}",  # sealed / 10 minutes, exact to a tenth
        waiting=waiting,
        blocks=blocks,
        older=start if start > 0 else None,
        newer=min(before + PAGE, top.header.height + 1) if before <= top.header.height else None,
    )


def _checkpoint_facts(head_size: int) -> dict[str, Any] | None:
    """The latest signed checkpoint as the head page shows it: its size, how far it is behind
    the head, the log's key and which witnesses cosigned it (all public: /ledger/checkpoint)."""
    svc = services()
    if svc.checkpoint_signer is None:
        return None
    latest = svc.ledger.store.checkpoints.latest()
    if latest is None:
        return None
    size, note = latest
    names = {s.name for s in parse_note(note).signatures}
    configured = [w.vkey.split("+", 1)[0] for w in svc.config.checkpoints.witnesses]
    return {
        "origin": svc.checkpoint_signer.name,
        "vkey": svc.checkpoint_signer.vkey,
        "size": size,
        "behind": head_size - size,
        "witnesses": [(name, name in names) for name in configured],
        "others": sorted(names - set(configured) - {svc.checkpoint_signer.name}),
    }


@explorer.get("/blocks/<int:height>")
def block(height: int) -> Any:
    ledger = services().ledger
    found = ledger.store.block(height) if height <= INT64_MAX else None
    if found is None:
        raise LedgerNotFound(f"no block at height {height}")
    reader = Reader(ledger)
    txs = ledger.store.block_transactions(height)
    return render_template(
        "explorer/block.html",
        block=found,
        check=reader.check_block(found),
        rows=[reader.row(s) for s in txs],
        head_height=ledger.head().header.height,
    )


@explorer.get("/tx/<tx_id>")
def transaction(tx_id: str) -> Any:
    ledger = services().ledger
    stored = ledger.transaction(_tx_id(tx_id))
    return render_template("explorer/transaction.html", view=Reader(ledger).view(stored))


@explorer.get("/accounts/<address>")
def account(address: str) -> Any:
    ledger = services().ledger
    who = parse_address(address)
    limit = query_int("limit", PAGE, 1, 200)
    before = query_int("before", None, 1, INT64_MAX)
    assert limit is not None
    reader = Reader(ledger)
    found = ledger.balance(who)
    entries = ledger.store.history(who, limit, before)
    now_ms = ledger.now_ms()
    spend = reader.spend_per_hour(who, now_ms)
    first_hour = now_ms - len(spend) * HOUR_MS
    labels = [utc(first_hour + (i + 1) * HOUR_MS)[11:16] if i % 4 == 3 else "" for i in range(len(spend))]
    chart = explorer_charts.columns(
        "Spend per hour, last 24 hours",
        "What this account paid (captured by settles of its holds) per hour; hours end at the times shown (UTC).",
        spend,
        labels,
        lambda units: f"{format_amount(units)} tokens",
    )
    return render_template(
        "explorer/account.html",
        account=found,
        holds=ledger.store.open_holds(who),
        rows=[reader.row(s, who) for s in entries],
        limit=limit,
        before=before,
        next_before=entries[-1].seq if len(entries) == limit else None,
        chart=chart,
        spent_24h=sum(spend),
        is_operator=who == ledger.chain.operator,
        is_sealer=who == ledger.chain.sealer,
    )


@explorer.get("/accounts/<address>/history.csv")
def history_csv(address: str) -> Any:
    who, entries, reader = _download(address)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for stored in entries:
        writer.writerow(reader.row(stored, who).csv_row())
    return _attachment(out.getvalue(), "text/csv", f"{who}-history.csv")


@explorer.get("/accounts/<address>/history.json")
def history_json(address: str) -> Any:
    """Exactly ``GET /ledger/accounts/<address>/history`` with the same parameters, as a file."""
    from gateway.server.ledger_api import history

    who, _, _ = _download(address)
    document = history(who)
    return _attachment(json.dumps(document, indent=1) + "\n", "application/json", f"{who}-history.json")


def _download(address: str) -> tuple[str, list[Any], Reader]:
    ledger = services().ledger
    who = parse_address(address)
    limit = query_int("limit", 100, 1, MAX_PAGE)
    before = query_int("before", None, 1, INT64_MAX)
    assert limit is not None
    return who, ledger.store.history(who, limit, before), Reader(ledger)


def _attachment(body: str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@explorer.get("/accounts/<address>/keys")
def api_keys(address: str) -> Any:
    ledger = services().ledger
    who = parse_address(address)
    now_s = ledger.now_s()
    keys = [api_key_summary(row, now_s) for row in ledger.store.api_keys.of_owner(who)]
    return render_template("explorer/keys.html", address=who, keys=keys)


@explorer.get("/routes")
def routes() -> Any:
    svc = services()
    now_ms = svc.ledger.now_ms()
    since_ms = now_ms - 24 * HOUR_MS
    usage = route_usage(Reader(svc.ledger), svc.config.routes, svc.pay_to, since_ms)
    labels = [u.label for u in usage]
    calls = explorer_charts.rows(
        "Paid calls per route, last 24 hours", "", [u.calls for u in usage], labels, lambda n: f"{n:,} calls"
    )
    revenue = explorer_charts.rows(
        "Revenue per route, last 24 hours",
        "",
        [u.revenue for u in usage],
        labels,
        lambda units: f"{format_amount(units)} tokens",
    )
    return render_template(
        "explorer/routes.html",
        usage=usage,
        calls=calls,
        revenue=revenue,
        pay_to=svc.pay_to,
        since_ms=since_ms,
        free_routes=[r.path for r in svc.config.routes if r.free],
    )


@explorer.get("/search")
def search() -> Any:
    """An address, a transaction id or a block height; anything else is a "not found" page."""
    query = request.args.get("q", "").strip()[:MAX_QUERY]
    if not query:
        raise InvalidInput("type an address, a transaction id or a block height")
    ledger = services().ledger
    if query.isascii() and query.isdigit():
        height = int(query)
        if height <= INT64_MAX and ledger.store.block(height) is not None:
            return redirect(url_for("explorer.block", height=height))
        return _not_found(query, f"no block at height {query}")
    if _TX_ID.fullmatch(query):
        if ledger.store.get(query.lower()) is not None:
            return redirect(url_for("explorer.transaction", tx_id=query.lower()))
        return _not_found(query, "no transaction with this id")
    if _ADDRESS.fullmatch(query):
        try:
            return redirect(url_for("explorer.account", address=parse_address(query)))
        except InferpayError:
            return _not_found(query, "not a valid address (its capitals do not match the EIP-55 checksum)")
    return _not_found(query, "not an address (0x and 40 hex digits), a transaction id (0x and 64) or a block height")


def _not_found(query: str, why: str) -> Any:
    return _error_page(404, "not_found", f"Nothing found: {why}.", query=query)


@explorer.get("/<path:_rest>")
def unknown(_rest: str) -> Any:
    raise NotFound("there is no explorer page at this address")


def _tx_id(text: str) -> str:
    if not _TX_ID.fullmatch(text):
        raise InvalidInput("a transaction id is 0x followed by 64 hex digits")
    return parse_bytes32(text.lower(), "transaction id")

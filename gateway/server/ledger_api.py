"""The ledger over HTTP: read accounts, history, transactions with proofs, blocks, heads and
consistency proofs; submit signed transfers. Mounted at ``/ledger``.

The compute pool: providers submit their signed registrations (``POST /providers``; an update
or a withdrawal is a newer registration), anyone reads who is in force, at what prices, with
what earnings; holders submit signed redeems and payees signed refunds; an operator's payment
backend submits operator-signed mints (``POST /mints``). Each POST takes ``{<record>,
"signature"}``, answers 201 with the transaction's id (200 for a retry of one already recorded),
and refuses anything malformed, unsigned or against the rules with the error tree's JSON.

Everything here is public, as a block explorer is: anyone can download the chain and verify it
(``inferpay verify --node URL``). Amounts are base-unit strings, as on the x402 wire.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from gateway.server.services import ledger_reads
from ledger import ApiKeyRow
from ledger.amounts import INT64_MAX
from ledger.errors import InvalidInput, MalformedRecord, NotFound
from ledger.types import (
    Authorization,
    Mint,
    ProviderRegistration,
    Redeem,
    Refund,
    Transaction,
    TxKind,
    parse_address,
    parse_signature,
)

ledger_api = Blueprint("ledger_api", __name__)
MAX_PAGE = 1000


def query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(f"query parameter {name!r} must be an integer from {low} to {high}")
    return int(raw)


def _stored(stored: Any) -> dict[str, Any]:
    return {
        "txId": stored.tx_id,
        "seq": stored.seq,
        "blockHeight": stored.block_height,
        "transaction": stored.tx.to_dict(),
    }


@ledger_api.get("/info")
def info() -> Any:
    ledger = ledger_reads().ledger
    return {**ledger.chain.to_dict(), "supply": str(ledger.store.supply()), "head": ledger.head().to_dict()}


@ledger_api.get("/head")
def head() -> Any:
    return ledger_reads().ledger.head().to_dict()


@ledger_api.get("/accounts/<address>")
def account(address: str) -> Any:
    ledger = ledger_reads().ledger
    found = ledger.balance(parse_address(address))
    holds = [
        {"holdId": h.hold_id, "payee": h.payee, "amount": str(h.amount), "expiresAt": h.expires_at_s}
        for h in ledger.store.open_holds(found.address)
    ]
    return {**found.to_dict(), "holds": holds}


@ledger_api.get("/accounts/<address>/history")
def history(address: str) -> Any:
    ledger = ledger_reads().ledger
    limit = query_int("limit", 100, 1, MAX_PAGE)
    before = query_int("before", None, 1, INT64_MAX)
    assert limit is not None
    entries = ledger.store.history(parse_address(address), limit, before)
    return {
        "address": parse_address(address),
        "entries": [_stored(s) for s in entries],
        "next": entries[-1].seq if len(entries) == limit else None,
    }


@ledger_api.get("/accounts/<address>/api-keys")
def account_api_keys(address: str) -> Any:
    """The API keys standing for allowances this account signed: each allowance is a public
    ledger transaction; of the key, only its prefix (``ipk_`` and 8 of its 43 random characters,
    what ``inferpay key list`` shows) and whether the operator revoked it. Never the key, its hash
    or its label (free text the operator chose)."""
    owner = parse_address(address)
    now_s = ledger_reads().ledger.now_s()
    return {
        "address": owner,
        "apiKeys": [api_key_summary(row, now_s) for row in ledger_reads().ledger.store.api_keys.of_owner(owner)],
    }


def api_key_summary(row: ApiKeyRow, now_s: int) -> dict[str, Any]:
    allowance = row.allowance
    if row.revoked:
        status = "revoked"
    elif now_s >= allowance.valid_before:
        status = "expired"
    elif allowance.spent >= allowance.cap:
        status = "exhausted"
    else:
        status = "active"
    return {
        "prefix": row.key_prefix,
        "allowanceId": allowance.allowance_id,
        "spender": allowance.spender,
        "cap": str(allowance.cap),
        "spent": str(allowance.spent),
        "validBefore": allowance.valid_before,
        "createdAt": row.created_at_ms,
        "status": status,
    }


@ledger_api.get("/transactions/<tx_id>")
def transaction(tx_id: str) -> Any:
    ledger = ledger_reads().ledger
    try:
        stored = ledger.transaction(tx_id)
    except MalformedRecord as exc:
        raise InvalidInput(exc.message) from exc
    proof = ledger.inclusion_proof(stored.tx_id) if stored.block_height is not None else None
    return {**_stored(stored), "inclusionProof": proof}


@ledger_api.get("/blocks")
def blocks() -> Any:
    ledger = ledger_reads().ledger
    start = query_int("from", 0, 0, INT64_MAX)
    limit = query_int("limit", 100, 1, MAX_PAGE)
    assert start is not None and limit is not None
    return {"blocks": [b.to_dict() for b in ledger.store.blocks(start, min(start + limit, INT64_MAX))]}


@ledger_api.get("/blocks/<int:height>")
def block(height: int) -> Any:
    ledger = ledger_reads().ledger
    found = ledger.store.block(height) if height <= INT64_MAX else None
    if found is None:
        raise NotFound(f"no block at height {height}")
    return {**found.to_dict(), "transactions": [_stored(s) for s in ledger.store.block_transactions(height)]}


@ledger_api.get("/consistency")
def consistency() -> Any:
    old = query_int("old", None, 0, INT64_MAX)
    new = query_int("new", None, 0, INT64_MAX)
    if old is None or new is None:
        raise InvalidInput("query parameters 'old' and 'new' (block heights) are required")
    return ledger_reads().ledger.consistency_proof(old, new)


def _signed_body(field: str) -> tuple[Any, str]:
    """The ``{field: {...}, "signature": "0x..."}`` a POST carries (nothing else in it)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError as exc:  # json recurses once per nesting level
        raise InvalidInput("the request body is nested too deeply") from exc
    if not isinstance(body, dict) or set(body) != {field, "signature"}:
        raise InvalidInput(f'expected a JSON object {{"{field}": {{...}}, "signature": "0x..."}}')
    return body[field], parse_signature(body["signature"])


def _recorded(result: Any) -> Any:
    return result.to_dict(), 200 if result.duplicate else 201


@ledger_api.post("/transfers")
def submit_transfer() -> Any:
    record, signature = _signed_body("authorization")
    return _recorded(ledger_reads().ledger.transfer(Authorization.from_dict(record), signature))


@ledger_api.post("/mints")
def submit_mint() -> Any:
    """An operator-signed mint (a top-up an operator's payment backend signed)."""
    record, signature = _signed_body("mint")
    return _recorded(ledger_reads().ledger.mint(Mint.from_dict(record), signature))


def _submit_signed(kind: TxKind, message: ProviderRegistration | Redeem | Refund, signer: str, signature: str) -> Any:
    return _recorded(ledger_reads().ledger.submit(Transaction(kind, message, signer, signature)))


@ledger_api.post("/providers")
def submit_registration() -> Any:
    """A provider's signed registration: joining, an update (a newer one) or a withdrawal."""
    record, signature = _signed_body("registration")
    registration = ProviderRegistration.from_dict(record)
    return _submit_signed("provider_registration", registration, registration.provider, signature)


@ledger_api.post("/redeems")
def submit_redeem() -> Any:
    record, signature = _signed_body("redeem")
    redeem = Redeem.from_dict(record)
    return _submit_signed("redeem", redeem, redeem.from_, signature)


@ledger_api.post("/refunds")
def submit_refund() -> Any:
    record, signature = _signed_body("refund")
    refund = Refund.from_dict(record)
    return _submit_signed("refund", refund, refund.from_, signature)


@ledger_api.get("/providers")
def providers() -> Any:
    """Every provider that ever registered, with its registration in force (withdrawn ones
    too) and approval; the pool fee in force and the pool version (it changes with every
    registration, approval and fee)."""
    ledger = ledger_reads().ledger
    return {
        "providers": [p.to_dict() for p in ledger.providers()],
        "poolFee": ledger.pool_fee_in_force().to_dict(),
        "poolVersion": str(ledger.pool_version()),
    }


@ledger_api.get("/pool")
def pool() -> Any:
    """The pool fee in force, the pool version and the sum of every fee ever credited."""
    ledger = ledger_reads().ledger
    return {
        "poolFee": ledger.pool_fee_in_force().to_dict(),
        "poolVersion": str(ledger.pool_version()),
        "operatorFees": str(ledger.operator_fees()),
    }


@ledger_api.get("/providers/<address>")
def provider(address: str) -> Any:
    return ledger_reads().ledger.provider(parse_address(address, "provider")).to_dict()


@ledger_api.get("/providers/<address>/earnings")
def provider_earnings(address: str) -> Any:
    found = parse_address(address, "provider")
    return {"address": found, **ledger_reads().ledger.provider_earnings(found).to_dict()}

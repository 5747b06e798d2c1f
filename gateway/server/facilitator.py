"""The x402 v2 facilitator (scheme ``exact``), settling on the inferpay ledger.

An x402 resource server (the official SDK's middleware, or anyone's) asks us over HTTP:

    GET  /facilitator/supported   what we settle: exact on eip155:<chainId>; the sealer signs
    POST /facilitator/verify      verify the payment, and HOLD its amount on the ledger
    POST /facilitator/settle      verify (or find the hold /verify placed), then CAPTURE it

Money rules. ``/verify`` places a hold for the signed EIP-3009 authorization, expiring at its
validBefore or at now + maxTimeoutSeconds, whichever is sooner; a hold never settled is
released by the auto-sealer when it expires. The hold's id is the ledger id of that signed
hold, so verifying the same payload again finds the same hold (for a payload signed by the
SDK, whose validBefore is its signing time + maxTimeoutSeconds, the expiry and thus the id
come out the same every time; otherwise the open hold is looked up by its authorization).
``/settle`` captures the required amount once: the capture's own id is deterministic too, so
a second settle of the same payload, in turn or at the same moment, finds it already made
and is refused (``duplicate_settlement``). Funds are reserved by ``/verify``, so of many
payments at once only those the payer can afford verify, and only verified ones settle.

Every refusal of a payment is an HTTP 200 whose reason comes from the one table in
``gateway.wire.facilitator``; only a request that is not x402 at all is a 400. This module
never talks SQL and never decides a money rule the ledger enforces itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, request

from gateway.server.services import Services, services
from gateway.wire.errors import DuplicateSettlement, MalformedPayment, PaymentAlreadyUsed
from gateway.wire.facilitator import (
    MAX_REQUEST_BYTES,
    FacilitatorRequest,
    check_exact_payment,
    parse_payment,
    reason_for,
    resource_url,
    settle_answer,
    settle_refusal,
    supported_answer,
    verify_answer,
)
from gateway.wire.receipts import Receipt
from ledger.errors import HoldNotOpen, InferpayError, NonceReused
from ledger.ledger import Ledger
from ledger.types import Address, Authorization, TxId

facilitator = Blueprint("facilitator", __name__)
HISTORY_SCAN = 500  # how far back a settled hold is looked for, to name a replay precisely


@dataclass(frozen=True)
class VerifiedHold:
    """An open hold for a verified payment: what ``/settle`` captures."""

    hold_id: TxId
    authorization: Authorization
    network: str
    amount: int  # what the requirements ask; `exact`: the authorized value itself
    resource: str


@facilitator.get("/supported")
def supported() -> Any:
    return jsonify(supported_answer(services().ledger.chain))


@facilitator.post("/verify")
def verify() -> Any:
    svc = services()
    asked = _facilitator_request()
    try:
        held = verified_hold(svc, asked, settling=False)
    except InferpayError as exc:
        if reason_for(exc) is None:
            raise  # not a refusal of the payment: storage down, a bug (a JSON 5xx)
        return jsonify(verify_answer(asked.payer_hint(), exc))
    return jsonify(verify_answer(held.authorization.from_))


@facilitator.post("/settle")
def settle() -> Any:
    svc = services()
    asked = _facilitator_request()
    network = str(asked.requirements.get("network", ""))
    try:
        # 1. Verify, and hold the amount (or find the hold /verify placed for this payload).
        held = verified_hold(svc, asked, settling=True)
        # 2. Capture what the requirements ask. The capture's id is deterministic: a second
        #    one, in turn or at the same moment, is answered as already made, and refused.
        settled = svc.ledger.settle(held.hold_id, held.amount)
        if settled.duplicate:
            raise DuplicateSettlement("this payment is already settled", tx_id=settled.tx_id)
    except InferpayError as exc:
        if reason_for(exc) is None:
            raise
        return jsonify(settle_refusal(asked.payer_hint(), network, exc))
    # 3. Answer with the ledger transaction and a sealer-signed receipt the buyer can check.
    receipt = _receipt(svc, held, settled.tx_id)
    extensions = {"inferpay": {"receipt": receipt.to_dict(), "ledger": request.host_url.rstrip("/") + "/ledger"}}
    return jsonify(settle_answer(receipt.payer, held.network, settled.tx_id, held.amount, extensions))


def _facilitator_request() -> FacilitatorRequest:
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise MalformedPayment(f"a facilitator request is at most {MAX_REQUEST_BYTES} bytes")
    return FacilitatorRequest.from_body(request.get_data(cache=False))


def verified_hold(svc: Services, asked: FacilitatorRequest, *, settling: bool) -> VerifiedHold:
    """Check the payment against its requirements and hold its amount; raise the first reason not to."""
    payment, requirement = parse_payment(asked)
    check_exact_payment(payment, requirement, svc.ledger.chain)
    auth = payment.authorization
    # The ledger checks the signature, the window, the nonce and the funds as it places the hold.
    expires_at_s = min(auth.valid_before, svc.ledger.now_s() + requirement.max_timeout_seconds)
    try:
        hold_id = svc.ledger.hold(auth, payment.signature, expires_at_s=expires_at_s).tx_id
    except NonceReused:
        hold_id = _earlier_hold(svc.ledger, auth)  # held before, under another expiry
    row = svc.ledger.store.hold(hold_id)
    assert row is not None, hold_id  # the ledger just placed it or found it
    if row.status == "settle":
        if settling:
            raise DuplicateSettlement("this payment is already settled", tx_id=row.resolution_tx or "")
        raise PaymentAlreadyUsed("this payment is already settled; sign a new one", tx_id=row.resolution_tx or "")
    if row.status != "open":
        raise HoldNotOpen(f"the hold for this payment was released ({row.status}); sign a new one", hold_id=hold_id)
    return VerifiedHold(hold_id, auth, payment.network, requirement.amount, resource_url(asked))


def _earlier_hold(ledger: Ledger, auth: Authorization) -> TxId:
    """The hold placed earlier for exactly ``auth`` (its nonce is taken, so there is at most one)."""
    for row in ledger.store.open_holds(auth.from_):
        if row.payee == auth.to and row.amount == auth.value:
            stored = ledger.store.get(row.hold_id)
            if stored is not None and stored.tx.kind == "hold" and stored.tx.message == auth:
                return row.hold_id
    for stored in ledger.store.history(auth.from_, HISTORY_SCAN):
        if stored.tx.kind == "hold" and stored.tx.message == auth:
            return stored.tx_id
    raise NonceReused("this authorization's nonce was already used by another payment", payer=auth.from_)


def _receipt(svc: Services, held: VerifiedHold, tx_id: TxId) -> Receipt:
    """The gateway's receipt for a facilitated payment: ``path`` is the resource the payer
    accepted (its payload's resource.url); ``method`` is "", the request is the resource
    server's, never seen here."""
    auth = held.authorization
    payer: Address = auth.from_
    return Receipt(
        tx_id=tx_id,
        hold_id=held.hold_id,
        nonce=auth.nonce,
        payer=payer,
        pay_to=auth.to,
        network=held.network,
        authorized=auth.value,
        charged=held.amount,
        balance_after=svc.ledger.balance(payer).available,
        method="",
        path=held.resource,
        issued_at_ms=svc.ledger.now_ms(),
    ).signed(svc.sealer)

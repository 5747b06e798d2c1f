"""The x402 v2 facilitator (schemes ``exact`` and ``upto``), settling on the inferpay ledger.

An x402 resource server (the official SDK's middleware, or anyone's) asks us over HTTP:

    GET  /facilitator/supported   what we settle: exact and upto on eip155:<chainId>; the sealer
                                  signs, and is the facilitator upto's Permit2 witness names
    POST /facilitator/verify      verify the payment, and HOLD its amount on the ledger
    POST /facilitator/settle      verify (or find the hold /verify placed), then CAPTURE it

Money rules. ``/verify`` places a hold for the signed authorization (``exact``: an EIP-3009
one, its value; ``upto``: x402's Permit2, its permitted maximum), expiring at its validBefore
(or the Permit2's deadline) or at now + maxTimeoutSeconds, whichever is sooner; a hold never
settled is released by the auto-sealer when it expires. ``/settle`` captures what the
requirements ask: ``exact`` the value; ``upto`` the call's actual cost (the SDK's resource
server sends its settlement override as the amount), never above the maximum, the rest
released. The facilitator captures only holds it placed itself: the first facilitator request
for a (payer, nonce key) claims it in ``facilitator_records`` before the ledger places the
hold, and later ones (a /settle after its /verify, twins at the same moment) find the hold
through that claim. A nonce the ledger had already used (the same authorization presented to
the gateway's paid proxy, say) is refused as already used, and that hold is left alone.
``/settle`` captures the required amount once: the capture's id is deterministic, so a second
settle of the same payload, in turn or at the same moment, finds it already made and is refused
(``duplicate_settlement``; for upto, a settle of another amount too).
Funds are reserved by ``/verify``, so of many payments at once only those the payer can
afford verify, and only verified ones settle.

Under the x402 ``payment-identifier`` extension (advertised in /supported), the same id with
the same request is answered as it was the first time, verify and settle alike, across the
workers of a host; the same id with another request is refused (payment_identifier_conflict).

Every refusal of a payment is an HTTP 200 whose reason comes from the scheme's table in
``gateway.wire.facilitator``; only a request that is not x402 at all is a 400. This module
never talks SQL and never decides a money rule the ledger enforces itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from gateway.server.facilitator_records import FacilitatorRecords
from gateway.server.services import Services, services
from gateway.wire.errors import DuplicateSettlement, MalformedPayment, PaymentAlreadyUsed
from gateway.wire.facilitator import (
    MAX_REQUEST_BYTES,
    FacilitatorRequest,
    parse_payment,
    payment_identifier,
    reason_for,
    request_digest,
    resource_url,
    settle_answer,
    settle_refusal,
    supported_answer,
    verify_answer,
)
from gateway.wire.facilitator_schemes import check_payment
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import PaymentPayload
from ledger.errors import HoldNotOpen, IdempotencyConflict, InferpayError, NonceReused
from ledger.types import TxId, used_nonce
from ledger.validation import check_signature

facilitator = Blueprint("facilitator", __name__)
RECORDS_EXTENSION = "inferpay.facilitator_records"
_records_lock = threading.Lock()


@dataclass(frozen=True)
class VerifiedHold:
    """An open hold for a verified payment: what ``/settle`` captures."""

    hold_id: TxId
    payment: PaymentPayload
    network: str
    amount: int  # what the requirements ask: `exact` the value; `upto` at settle the cost, <= the maximum
    resource: str


@facilitator.get("/supported")
def supported() -> Any:
    return jsonify(supported_answer(services().ledger.chain))


@facilitator.post("/verify")
def verify() -> Any:
    svc = services()
    asked = _facilitator_request()
    scheme = asked.scheme

    def answer() -> dict[str, Any]:
        try:
            held = verified_hold(svc, asked, settling=False)
        except InferpayError as exc:
            if reason_for(exc, scheme) is None:
                raise  # not a refusal of the payment: storage down, a bug (a JSON 5xx)
            return verify_answer(asked.payer_hint(), exc, scheme)
        return verify_answer(held.payment.payer)

    return jsonify(_once(svc, asked, "verify", answer, lambda exc: verify_answer(asked.payer_hint(), exc, scheme)))


@facilitator.post("/settle")
def settle() -> Any:
    svc = services()
    asked = _facilitator_request()
    network = str(asked.requirements.get("network", ""))
    scheme = asked.scheme

    def answer() -> dict[str, Any]:
        try:
            # 1. Verify, and hold the amount (or find the hold /verify placed for this payload).
            held = verified_hold(svc, asked, settling=True)
            # 2. Capture what the requirements ask (upto: the cost, the rest of the maximum goes
            #    back to the payer). The capture's id is deterministic: a second one, in turn or
            #    at the same moment, is answered as already made, and refused.
            try:
                settled = svc.ledger.settle(held.hold_id, held.amount)
            except IdempotencyConflict as exc:  # upto: settled at the same moment for another amount
                raise DuplicateSettlement(
                    "this payment is already settled", tx_id=str(exc.details.get("resolution") or "")
                ) from exc
            if settled.duplicate:
                raise DuplicateSettlement("this payment is already settled", tx_id=settled.tx_id)
        except InferpayError as exc:
            if reason_for(exc, scheme) is None:
                raise
            return settle_refusal(asked.payer_hint(), network, exc, scheme)
        # 3. Answer with the ledger transaction and a sealer-signed receipt the buyer can check.
        receipt = _receipt(svc, held, settled.tx_id)
        ledger = request.host_url.rstrip("/") + "/ledger"
        extensions: dict[str, Any] = {"inferpay": {"receipt": receipt.to_dict(), "ledger": ledger}}
        if svc.checkpoint_signer is not None:
            # Sealed within a seal interval: then the offline proof (c2sp.org/tlog-proof) is here,
            # provable against the log's checkpoint key with `inferpay receipt verify`.
            extensions["inferpay"]["tlogProof"] = f"{ledger}/transactions/{settled.tx_id}/tlog-proof"
            extensions["inferpay"]["checkpointKey"] = svc.checkpoint_signer.vkey
        return settle_answer(receipt.payer, held.network, settled.tx_id, held.amount, extensions)

    return jsonify(
        _once(svc, asked, "settle", answer, lambda exc: settle_refusal(asked.payer_hint(), network, exc, scheme))
    )


def _once(
    svc: Services,
    asked: FacilitatorRequest,
    operation: str,
    answer: Callable[[], dict[str, Any]],
    refusal: Callable[[InferpayError], dict[str, Any]],
) -> dict[str, Any]:
    """``answer()``, or under a ``payment-identifier`` the answer given first for the same id and
    the same request; the same id with another request is refused (payment_identifier_conflict).
    Every 200 answer is kept, refusals too (as the spec's cached response); a 5xx is not."""
    try:
        payment_id = payment_identifier(asked)
    except MalformedPayment as exc:
        return refusal(exc)
    if payment_id is None:
        return answer()
    records = facilitator_records(svc)
    try:
        first = records.claim_payment_id(payment_id, operation, request_digest(asked))
    except IdempotencyConflict as exc:
        return refusal(exc)
    if first is not None:
        return first
    try:
        given = answer()
    except BaseException:
        records.release_payment_id(payment_id, operation)
        raise
    records.answered(payment_id, operation, given)
    return given


def _facilitator_request() -> FacilitatorRequest:
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise MalformedPayment(f"a facilitator request is at most {MAX_REQUEST_BYTES} bytes")
    return FacilitatorRequest.from_body(request.get_data(cache=False))


def verified_hold(svc: Services, asked: FacilitatorRequest, *, settling: bool) -> VerifiedHold:
    """Check the payment against its requirements and hold its amount; raise the first reason not to."""
    payment, requirement = parse_payment(asked, settling=settling)
    check_payment(payment, requirement, svc.ledger.chain, settling=settling)
    hold_id = _our_hold(svc, payment, requirement.max_timeout_seconds)
    row = svc.ledger.store.hold(hold_id)
    assert row is not None, hold_id  # the ledger placed it for one of our claims
    if row.status == "settle":
        if settling:
            raise DuplicateSettlement("this payment is already settled", tx_id=row.resolution_tx or "")
        raise PaymentAlreadyUsed("this payment is already settled; sign a new one", tx_id=row.resolution_tx or "")
    if row.status != "open":
        raise HoldNotOpen(f"the hold for this payment was released ({row.status}); sign a new one", hold_id=hold_id)
    return VerifiedHold(hold_id, payment, payment.network, requirement.amount, resource_url(asked))


def _our_hold(svc: Services, payment: PaymentPayload, max_timeout_seconds: int) -> TxId:
    """The hold the facilitator placed for ``payment``'s authorization: placed now, or by an
    earlier request.

    Only a hold the facilitator placed itself is ever returned. The same signed authorization
    may be presented to the gateway's paid proxy too, which holds it while its upstream call
    runs; capturing that hold here would take the proxy's payment from under it. So the first
    facilitator request for a nonce claims it (``facilitator_records``) before asking the
    ledger, and the hold is ours only if the ledger created it for that claim. The claim is
    keyed as the ledger keys the nonce (a Permit2's under ``permit2:``), so an EIP-3009 and a
    Permit2 nonce of the same payer never share one."""
    auth, signature = payment.authorization, payment.signature
    nonce = used_nonce(auth)
    assert nonce is not None  # both kinds of payment authorization use one
    records = facilitator_records(svc)
    claim = records.claim_nonce(auth.from_, nonce)
    if claim.state == "foreign":
        raise NonceReused("this authorization's nonce was already used by another payment", payer=auth.from_)
    if claim.state == "placed":
        assert claim.hold_id is not None
        stored = svc.ledger.store.get(TxId(claim.hold_id))
        # The same nonce under another authorization (another value, payee or window) is not this payment.
        if stored is None or stored.tx.message != auth:
            raise NonceReused("this authorization's nonce was already used by another payment", payer=auth.from_)
        # Presented again, it must still be signed by the payer (not just copied with any signature).
        check_signature(svc.ledger.chain, replace(stored.tx, signature=signature))
        return TxId(claim.hold_id)
    # Ours to place. The ledger checks the signature, the window, the nonce and the funds, and
    # ends the hold no later than the authorization's validBefore or deadline.
    try:
        placed = svc.ledger.hold(auth, signature, expires_at_s=svc.ledger.now_s() + max_timeout_seconds)
    except NonceReused:
        records.nonce_foreign(auth.from_, nonce)
        raise
    except BaseException:
        records.release_nonce(auth.from_, nonce)  # refused: the nonce stays unused
        raise
    if placed.duplicate:  # this very hold was in the ledger before our claim: not ours
        records.nonce_foreign(auth.from_, nonce)
        raise NonceReused("this authorization's nonce was already used by another payment", payer=auth.from_)
    records.nonce_held(auth.from_, nonce, placed.tx_id)
    return placed.tx_id


def facilitator_records(svc: Services) -> FacilitatorRecords:
    """This app's records (in the ledger's database), made on first use."""
    records = current_app.extensions.get(RECORDS_EXTENSION)
    if records is None:
        with _records_lock:
            records = current_app.extensions.get(RECORDS_EXTENSION)
            if records is None:
                records = FacilitatorRecords(svc.ledger.store.facilitator, clock_ms=svc.ledger.now_ms)
                current_app.extensions[RECORDS_EXTENSION] = records
    assert isinstance(records, FacilitatorRecords)
    return records


def _receipt(svc: Services, held: VerifiedHold, tx_id: TxId) -> Receipt:
    """The gateway's receipt for a facilitated payment: ``path`` is the resource the payer
    accepted (its payload's resource.url); ``method`` is "", the request is the resource
    server's, never seen here."""
    payment = held.payment
    return Receipt(
        tx_id=tx_id,
        hold_id=held.hold_id,
        nonce=payment.receipt_nonce,
        payer=payment.payer,
        pay_to=payment.pay_to,
        network=held.network,
        authorized=payment.authorized,
        charged=held.amount,
        balance_after=svc.balance_after_settle(payment.payer),
        method="",
        path=held.resource,
        issued_at_ms=svc.ledger.now_ms(),
    ).signed(svc.sealer)

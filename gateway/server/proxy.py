"""The paid proxy: one function per call, readable top to bottom.

    verify the payment (and admit it under the rate limits) -> hold the authorized amount ->
    call the upstream -> settle the cost on a 2xx / void on anything else -> answer with a
    signed receipt

A payment is charged at most once: the ledger records each (payer, nonce) once, so the same
payment presented twice, in sequence or at the same moment, finds its hold already placed and
is refused (``payment_already_used``). The upstream failing, timing out or answering 5xx
voids the hold: nothing is charged. Holds expire by themselves (the auto-sealer releases them)
if a worker dies between hold and settle.

Streams pass through event by event. The cost is settled when the upstream's final usage chunk
arrives (we ask for it with ``stream_options.include_usage``), and the signed receipt is sent
as an SSE comment (``: inferpay-receipt <base64 JSON>``) before ``data: [DONE]``; SSE parsers
ignore comments. If the client disconnects mid-stream, the call costs the route's flat
``price`` only (the tokens already generated are not billed, because their count is unknown
until the upstream finishes); the rest of the hold is released.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
from flask import Blueprint, Response, current_app, request, stream_with_context
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from gateway.server import access_log, api_keys
from gateway.server.config import Route
from gateway.server.error_handlers import error_body, status_for
from gateway.server.metrics import model_label
from gateway.server.payments import RequestFacts, check_payment, payment_required_body
from gateway.server.rate_limits import check_payer
from gateway.server.services import Services, services
from gateway.server.upstream import response_headers, sse_events, usage_from_body
from gateway.wire.errors import PaymentAlreadyUsed, UpstreamError
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    V1_PAYMENT_HEADER,
    V1_PAYMENT_RESPONSE_HEADER,
    PaymentPayload,
    encode_header,
    network_id,
)
from ledger.errors import AuthorizationError, InferpayError, InsufficientFunds, NonceReused, NotFound

log = logging.getLogger("inferpay.gateway")
proxy = Blueprint("proxy", __name__)
OVERHEAD_HEADER = "X-Inferpay-Overhead-Ms"
RECEIPT_COMMENT = b": inferpay-receipt "


def request_facts() -> RequestFacts:
    """What a bound payment commits to: the request target exactly as sent on the wire
    (gunicorn and werkzeug keep it in RAW_URI), the method, and the body bytes."""
    target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not target:
        query = request.query_string.decode("latin-1")
        target = request.path + (f"?{query}" if query else "")
    return RequestFacts(request.method, target, request.get_data(cache=True), request.base_url)


def payment_credentials() -> tuple[str | None, bool, str | None]:
    """What pays for this request: an x402 payment header (and whether it is the v1 one), else
    an inferpay API key from ``Authorization: Bearer``. A signed payment wins over a bearer token,
    and only inferpay keys are keys: SDKs such as openai always send their api_key, even when an
    x402 auth pays for the call."""
    header = request.headers.get(PAYMENT_SIGNATURE_HEADER)
    v1 = header is None and V1_PAYMENT_HEADER in request.headers
    header = header if header is not None else request.headers.get(V1_PAYMENT_HEADER)
    token = api_keys.bearer_token(request.headers.get("Authorization")) if header is None else None
    if token is not None and not api_keys.looks_like_key(token):
        token = None
    return header, v1, token


def ledger_url() -> str:
    return request.host_url.rstrip("/") + "/ledger"


def payment_required(svc: Services, route: Route, error: InferpayError | None = None) -> Response:
    """402 with the route's signed terms in PAYMENT-REQUIRED; the body says why."""
    reason = f"{error.code}: {error.message}" if error else "payment required"
    terms = payment_required_body(
        route,
        svc.ledger.chain,
        svc.pay_to,
        request.base_url,
        svc.sealer,
        ledger_url(),
        svc.config.hold_seconds,
        reason,
        checkpoint_key=svc.checkpoint_signer.vkey if svc.checkpoint_signer is not None else None,
    )
    body: dict[str, Any] = error_body(error) if error else terms
    status = status_for(error) if error else 402
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers[PAYMENT_REQUIRED_HEADER] = encode_header(terms)
    return response


@dataclass(frozen=True)
class PaidHold:
    """Funds reserved for one call: by a signed x402 payment, or by an API key's allowance."""

    hold_id: str
    payer: str
    authorized: int
    network: str
    v1: bool = False
    nonce: str = ""  # the paying authorization's nonce (bytes32 hex; a Permit2's as 32 bytes); "" for an API key
    model: str = ""  # the metrics' model label (gateway.server.metrics.model_label)
    started: float = 0.0  # perf_counter() when the request arrived


@proxy.route("/<path:_subpath>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def paid_call(_subpath: str) -> Response:
    started = time.perf_counter()
    svc = services()
    route = svc.config.route_for(request.path)
    if route is None:
        if served := _methods_served_elsewhere(request.path):
            raise MethodNotAllowed(valid_methods=served)  # e.g. POST /ledger/info: the catch-all took it
        raise NotFound(f"no paid route at {request.path}")
    if route.free:
        return _free_call(svc, route, started)
    if route.pool:  # served by the compute pool's providers: the same steps, over candidates
        from gateway.server.pool.call import pool_call

        return pool_call(svc, route, started)
    facts = request_facts()
    header, v1, token = payment_credentials()
    if token is None and header is None:
        svc.metrics.payment(route.path, "required")
        return payment_required(svc, route)

    # 1-2. Verify the payment (or API key) and hold what the call may cost.
    try:
        paid = (
            _hold_for_key(svc, route, token) if token is not None else _hold_for_payment(svc, route, header, facts, v1)
        )
    except (AuthorizationError, InsufficientFunds) as exc:
        svc.metrics.payment(route.path, "refused", exc.code)
        return payment_required(svc, route, exc)  # the JSON error, and the terms a signing client could pay
    except InferpayError as exc:
        svc.metrics.payment(route.path, "refused", exc.code)
        raise
    paid = replace(paid, model=model_label(facts.body), started=started)
    access_log.note(payer=paid.payer, holdId=paid.hold_id)

    # 3. Call the upstream; anything but a 2xx releases the hold.
    body, stream, client_wants_usage = _ask_for_usage(facts.body) if route.metered else (facts.body, False, False)
    upstream_url = _upstream_url(route)
    upstream_started = time.perf_counter()
    try:
        upstream = svc.upstream.send(request.method, upstream_url, dict(request.headers), body, stream=stream)
    except UpstreamError:
        svc.ledger.void(paid.hold_id)
        svc.metrics.payment(route.path, "voided", UpstreamError.code)
        raise
    upstream_ms = (time.perf_counter() - upstream_started) * 1000
    svc.metrics.upstream(route.path, paid.model, upstream_ms / 1000)
    if not 200 <= upstream.status_code < 300:
        svc.ledger.void(paid.hold_id)
        svc.metrics.payment(route.path, "voided", f"upstream_{upstream.status_code // 100}xx")
        return _failed_upstream(upstream)
    if stream and upstream.headers.get("content-type", "").startswith("text/event-stream"):
        access_log.note(stream=True, upstreamMs=round(upstream_ms, 3))
        return _stream_and_settle(svc, route, paid, upstream, client_wants_usage)

    # 4. Settle what the call cost (flat, or metered from the upstream's usage) and sign a receipt.
    content = upstream.read() if stream else upstream.content
    upstream.close()
    usage = usage_from_body(content) if route.metered else None
    receipt = _settle(svc, route, paid, usage, request.method)
    response = Response(content, status=upstream.status_code, headers=response_headers(upstream))
    _attach_receipt(response, receipt, paid.v1)
    overhead = (time.perf_counter() - started) * 1000 - upstream_ms
    response.headers[OVERHEAD_HEADER] = f"{overhead:.3f}"
    access_log.note(
        charged=str(receipt.charged),
        txId=receipt.tx_id,
        upstreamMs=round(upstream_ms, 3),
        overheadMs=round(overhead, 3),
    )
    return response


def _upstream_url(route: Route) -> str:
    """The route's upstream, with the query string the client sent (and may have paid for)."""
    return route.upstream + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")


def _methods_served_elsewhere(path: str) -> list[str]:
    """The methods another route (the ledger API, the OpenAPI document, health) serves ``path``
    with: a request this catch-all took only because of its method is a 405, not a 404."""
    adapter = current_app.url_map.bind("localhost")
    served = []
    for method in ("GET", "POST"):
        try:
            endpoint, _ = adapter.match(path, method=method)
        except HTTPException:
            continue
        if endpoint != request.endpoint:
            served.append(method)
    return served


def _free_call(svc: Services, route: Route, started: float) -> Response:
    """A route configured ``free = true``: forwarded as it came (payment headers stripped, as
    on every route), answered as the upstream answered, streams included; nothing is held,
    charged or signed. Serves free models and health checks, and is the benchmark's baseline:
    the same gateway with payment switched off."""
    upstream_url = _upstream_url(route)
    upstream_started = time.perf_counter()
    upstream = svc.upstream.send(
        request.method, upstream_url, dict(request.headers), request.get_data(cache=False), stream=True
    )
    headers = response_headers(upstream)
    if upstream.headers.get("content-type", "").startswith("text/event-stream"):

        def relay() -> Iterator[bytes]:
            try:
                yield from upstream.iter_raw()
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the model stream broke off: {type(exc).__name__}") from exc
            finally:
                upstream.close()

        return Response(stream_with_context(relay()), status=upstream.status_code, headers=headers)
    try:
        content = upstream.read()
    except httpx.HTTPError as exc:
        raise UpstreamError(f"the model endpoint broke off its answer: {type(exc).__name__}") from exc
    finally:
        upstream.close()
    upstream_ms = (time.perf_counter() - upstream_started) * 1000
    response = Response(content, status=upstream.status_code, headers=headers)
    response.headers[OVERHEAD_HEADER] = f"{(time.perf_counter() - started) * 1000 - upstream_ms:.3f}"
    return response


def _hold_for_payment(svc: Services, route: Route, header: str | None, facts: RequestFacts, v1: bool) -> PaidHold:
    assert header is not None
    payment = PaymentPayload.from_header(header)
    check_payment(payment, route, svc.ledger.chain, svc.pay_to, facts)
    auth = payment.authorization
    # Rate limits, before anything is held (a per-payer limit trusts only a signed payer).
    if svc.rate_limiter.needs_payer_check(route):
        check_payer(svc.ledger.chain, auth, payment.signature)
    svc.rate_limiter.admit(route, payer=payment.payer, api_key=None, amount=payment.authorized)
    # The ledger checks the signature, the window, the nonce and the funds as it places the hold.
    try:
        hold = svc.ledger.hold(
            payment.authorization, payment.signature, expires_at_s=svc.ledger.now_s() + svc.config.hold_seconds
        )
    except NonceReused as exc:  # the same authorization, held earlier under another expiry
        raise PaymentAlreadyUsed("this payment was already presented; sign a new one for each call") from exc
    if hold.duplicate:
        raise PaymentAlreadyUsed("this payment was already presented; sign a new one for each call", tx_id=hold.tx_id)
    return PaidHold(hold.tx_id, payment.payer, payment.authorized, payment.network, v1, payment.receipt_nonce)


def _hold_for_key(svc: Services, route: Route, token: str) -> PaidHold:
    key = api_keys.lookup_key(svc.ledger, token, svc.pay_to)
    # Hold what the call may cost, but no more than the key has left: a metered call usually
    # costs far less than its maximum, and the capture never exceeds what is held.
    remaining = key.allowance.cap - key.allowance.spent
    amount = max(route.price, min(route.authorized_amount, remaining))
    owner = key.allowance.owner
    access_log.note(keyPrefix=key.key_prefix)  # the prefix `inferpay key list` shows, never the key
    svc.rate_limiter.admit(route, payer=owner, api_key=key.allowance.allowance_id, amount=amount)  # before the hold
    hold = svc.ledger.charge(
        key.allowance.allowance_id, amount, expires_at_s=svc.ledger.now_s() + svc.config.hold_seconds
    )
    return PaidHold(hold.tx_id, owner, amount, network_id(svc.ledger.chain.chain_id))


def _ask_for_usage(body: bytes) -> tuple[bytes, bool, bool]:
    """For streamed metered calls, make the upstream report usage in its last chunk.
    Returns (the body to send, whether it streams, whether the client asked for usage itself)."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return body, False, False
    if not isinstance(payload, dict) or payload.get("stream") is not True:
        return body, False, False
    options = payload.get("stream_options")
    options = options if isinstance(options, dict) else {}
    wanted = options.get("include_usage") is True
    payload["stream_options"] = {**options, "include_usage": True}
    return json.dumps(payload).encode(), True, wanted


def _failed_upstream(upstream: httpx.Response) -> Response:
    """A 4xx is the client's own request failing: pass it through. A 5xx is ours: 502."""
    status = upstream.status_code
    try:
        content = upstream.read()
    finally:
        upstream.close()
    if 400 <= status < 500:
        return Response(content, status=status, headers=response_headers(upstream))
    error = UpstreamError(f"the model endpoint answered {status}; nothing was charged", upstream_status=status)
    return Response(json.dumps(error_body(error)), status=502, mimetype="application/json")


def _settle(svc: Services, route: Route, paid: PaidHold, usage: tuple[int, int] | None, method: str) -> Receipt:
    """Capture the call's cost (never above what was authorized) and sign the receipt."""
    cost = min(route.cost(*usage) if usage else route.price, paid.authorized)
    settled = svc.ledger.settle(paid.hold_id, cost)
    svc.metrics.settled(route.path, svc.pay_to, paid.model, cost, usage, time.perf_counter() - paid.started)
    return Receipt(
        tx_id=settled.tx_id,
        hold_id=paid.hold_id,
        nonce=paid.nonce,
        payer=paid.payer,
        pay_to=svc.pay_to,
        network=paid.network,
        authorized=paid.authorized,
        charged=cost,
        balance_after=svc.balance_after_settle(paid.payer),
        method=method,
        path=route.path,
        issued_at_ms=svc.ledger.now_ms(),
    ).signed(svc.sealer)


def payment_response(receipt: Receipt) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "success": True,
        "transaction": receipt.tx_id,
        "network": receipt.network,
        "payer": receipt.payer,
        "amount": str(receipt.charged),
        "charged": str(receipt.charged),
        "receipt": receipt.to_dict(),
    }
    if receipt.balance_after is not None:
        answer["balanceAfter"] = str(receipt.balance_after)
    if services().checkpoint_signer is not None:  # the offline receipt, once sealed
        answer["tlogProof"] = f"{ledger_url()}/transactions/{receipt.tx_id}/tlog-proof"
    return answer


def _attach_receipt(response: Response, receipt: Receipt, v1: bool) -> None:
    response.headers[V1_PAYMENT_RESPONSE_HEADER if v1 else PAYMENT_RESPONSE_HEADER] = encode_header(
        payment_response(receipt)
    )
    response.headers["Access-Control-Expose-Headers"] = "PAYMENT-RESPONSE, X-PAYMENT-RESPONSE, X-Inferpay-Overhead-Ms"


def _stream_and_settle(
    svc: Services, route: Route, paid: PaidHold, upstream: httpx.Response, client_wants_usage: bool
) -> Response:
    method = request.method

    def receipt_comment(usage: tuple[int, int] | None) -> bytes:
        receipt = _settle(svc, route, paid, usage, method)
        return RECEIPT_COMMENT + encode_header(payment_response(receipt)).encode() + b"\n\n"

    def events() -> Iterator[bytes]:
        usage: tuple[int, int] | None = None
        settled = False
        try:
            for chunk, chunk_usage, done, usage_only in sse_events(upstream):
                usage = chunk_usage or usage
                if done:
                    settled = True
                    yield receipt_comment(usage)
                if usage_only and not client_wants_usage:
                    continue  # we asked for it to bill; a client that did not expects no such chunk
                yield chunk
            if not settled:  # the upstream ended without [DONE]: bill what it reported
                settled = True
                yield receipt_comment(usage)
        except UpstreamError:
            if not settled:
                settled = True
                svc.ledger.void(paid.hold_id)
                svc.metrics.payment(route.path, "voided", UpstreamError.code)
            raise
        finally:
            upstream.close()
            if not settled:  # the client went away mid-stream: the flat price only (module docstring)
                try:
                    flat = min(route.price, paid.authorized)
                    svc.ledger.settle(paid.hold_id, flat)
                    elapsed = time.perf_counter() - paid.started
                    svc.metrics.settled(route.path, svc.pay_to, paid.model, flat, None, elapsed)
                except InferpayError:
                    log.exception("could not settle hold %s after a client disconnect", paid.hold_id)

    pending = {
        "success": True,
        "transaction": paid.hold_id,
        "network": paid.network,
        "payer": paid.payer,
        "status": "pending",
        "amount": str(paid.authorized),
    }
    response = Response(stream_with_context(events()), status=upstream.status_code, headers=response_headers(upstream))
    response.headers[V1_PAYMENT_RESPONSE_HEADER if paid.v1 else PAYMENT_RESPONSE_HEADER] = encode_header(pending)
    response.headers["X-Accel-Buffering"] = "no"
    return response

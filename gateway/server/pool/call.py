"""A paid call on a ``pool = true`` route, readable top to bottom:

    parse the request (its model, its ``provider`` preferences, its bounds) -> choose the
    candidates (none: 503 / 402 ``no_provider_within_price``, nothing held) -> quote or verify
    the payment for the hold they need -> hold -> try the candidates in order under that one
    hold -> exactly one ``settle_split`` for the provider that served, or void if none did ->
    answer with a receipt naming the provider, the operator and both amounts

Failover: a provider that refuses the connection, times out, answers 5xx, or breaks off before
the first byte reaches the client is skipped and the next one tried (all before anything is
sent back, so the client sees one answer). A streamed answer is committed once its first event
arrived; after that, a break ends the stream and the call is voided (as on any route). A 4xx is
the client's own request failing: passed through, the hold voided, no other provider tried.
``allow_fallbacks: false`` tries the first candidate only and returns its failure.

Usage is held to the request's bounds (``routing.Bounds.cap``); a report above them is capped
and the split flagged ``usageCapped``. A client leaving mid-stream pays the per-call price only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
from flask import Response, request, stream_with_context

from gateway.server import access_log, api_keys
from gateway.server.config import Route
from gateway.server.error_handlers import error_body
from gateway.server.metrics import model_label
from gateway.server.pool.bounded import AnswerOutOfBounds, read_bounded
from gateway.server.pool.preferences import ProviderPreferences
from gateway.server.pool.routing import Bounds, Candidate, candidates, hold_for, request_bounds
from gateway.server.pool.runtime import PoolRuntime
from gateway.server.proxy import (
    OVERHEAD_HEADER,
    RECEIPT_COMMENT,
    PaidHold,
    _hold_for_payment,
    payment_credentials,
    payment_required,
    payment_response,
    request_facts,
)
from gateway.server.services import Services
from gateway.server.upstream import response_headers, sse_events, usage_from_body
from gateway.wire.errors import UpstreamError
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import (
    PAYMENT_RESPONSE_HEADER,
    V1_PAYMENT_RESPONSE_HEADER,
    PaymentPayload,
    encode_header,
    network_id,
)
from ledger.errors import AuthorizationError, InferpayError, InsufficientFunds, InvalidInput, RegistrationNotInForce
from ledger.ledger import TxResult
from ledger.types import SplitSettlement

log = logging.getLogger("inferpay.pool")
PROVIDER_HEADER = "X-Inferpay-Provider"


@dataclass(frozen=True)
class PoolRequest:
    model: str
    prefs: ProviderPreferences
    bounds: Bounds
    forward: bytes  # the body sent to providers: without ``provider``, asking for usage when streaming
    stream: bool
    client_wants_usage: bool


def parse_pool_request(body: bytes, route: Route) -> PoolRequest:
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise InvalidInput(f'{route.path} takes a JSON object naming a model, e.g. {{"model": ...}}')
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model: name the model to call (the providers' registrations list theirs)")
    prefs = ProviderPreferences.from_dict(payload.pop("provider", None))
    bounds = request_bounds(body, payload, route.max_output_tokens)
    stream = payload.get("stream") is True
    wanted = False
    if stream:
        options = payload.get("stream_options")
        options = options if isinstance(options, dict) else {}
        wanted = options.get("include_usage") is True
        payload["stream_options"] = {**options, "include_usage": True}
    return PoolRequest(model, prefs, bounds, json.dumps(payload).encode(), stream, wanted)


def pool_call(svc: Services, route: Route, started: float) -> Response:
    pool = svc.pool
    assert pool is not None  # Services builds it whenever a route has pool = true
    facts = request_facts()

    # 1. What the request asks for, and who could serve it: decided before anything is held.
    asked = parse_pool_request(facts.body, route)
    chosen = candidates(pool.directory.current(), asked.model, asked.prefs, asked.bounds, pool.board)
    priced = replace(route, max_amount=hold_for(chosen))  # this request's terms: the hold its candidates need

    # 2. Verify the payment (or API key) against those terms and hold them.
    header, v1, token = payment_credentials()
    if token is None and header is None:
        svc.metrics.payment(route.path, "required")
        return payment_required(svc, priced)
    if header is not None:
        chosen = _within_authorization(chosen, header)
        priced = replace(route, max_amount=hold_for(chosen))
    try:
        paid = (
            _hold_for_key(svc, priced, token)
            if token is not None
            else _hold_for_payment(svc, priced, header, facts, v1)
        )
    except (AuthorizationError, InsufficientFunds) as exc:
        svc.metrics.payment(route.path, "refused", exc.code)
        return payment_required(svc, priced, exc)
    except InferpayError as exc:
        svc.metrics.payment(route.path, "refused", exc.code)
        raise
    paid = replace(paid, model=model_label(facts.body), started=started)
    access_log.note(payer=paid.payer, holdId=paid.hold_id)

    # 3. Try the candidates in order under this one hold; the first to answer serves the call.
    attempts: list[dict[str, str]] = []
    for index, candidate in enumerate(chosen):
        if index:
            svc.metrics.pool_failover(route.path)
        pool.board.begin(candidate.address)  # ended when its answer is read, or its stream ends
        outcome = _try(svc, pool, route, candidate, asked)
        if not isinstance(outcome, _Served) or outcome.events is None:
            pool.board.end(candidate.address)
        if isinstance(outcome, str):
            attempts.append({"provider": candidate.address, "error": outcome})
            pool.board.failed(candidate.address, outcome, probe=False)
            svc.metrics.pool_call(candidate.address, "failed")
            continue
        if isinstance(outcome, _ClientError):  # the request itself is wrong: no other provider will take it
            svc.ledger.void(paid.hold_id)
            svc.metrics.payment(route.path, "voided", f"upstream_{outcome.status // 100}xx")
            return Response(outcome.content, status=outcome.status, headers=outcome.headers)
        access_log.note(provider=candidate.address, attempts=len(attempts) + 1)
        if asked.stream and outcome.events is not None:
            return _stream_and_settle(svc, pool, route, paid, candidate, asked, outcome)
        return _answer(svc, pool, route, paid, candidate, asked, outcome, started)

    # 4. Nobody served it: void, nothing charged; the failures say why.
    svc.ledger.void(paid.hold_id)
    svc.metrics.payment(route.path, "voided", UpstreamError.code)
    tried = "; ".join(f"{a['provider']}: {a['error']}" for a in attempts)
    error = UpstreamError(f"no provider could serve the call ({tried}); nothing was charged", attempts=attempts)
    return Response(json.dumps(error_body(error)), status=502, mimetype="application/json")


@dataclass
class _Served:
    status: int
    headers: list[tuple[str, str]]
    content: bytes | None  # a whole answer
    events: Iterator[tuple[bytes, tuple[int, int] | None, bool, bool]] | None  # or a stream, first event read
    first: tuple[bytes, tuple[int, int] | None, bool, bool] | None
    response: httpx.Response
    upstream_ms: float


@dataclass
class _ClientError:
    status: int
    headers: list[tuple[str, str]]
    content: bytes


def _try(
    svc: Services, pool: PoolRuntime, route: Route, candidate: Candidate, asked: PoolRequest
) -> _Served | _ClientError | str:
    """One provider's attempt: what it served, the client's own error it answered, or why it failed."""
    url = candidate.record.registration.endpoint.rstrip("/") + route.provider_path
    sent = time.perf_counter()
    try:
        response = pool.upstream.send(request.method, url, dict(request.headers), asked.forward, stream=True)
    except UpstreamError as exc:
        return exc.message
    status = response.status_code
    limits = pool.config
    deadline = time.monotonic() + limits.answer_timeout_ms / 1000
    try:
        if 400 <= status < 500:
            body = read_bounded(response, max_bytes=limits.max_answer_bytes, deadline=deadline)
            response.close()
            return _ClientError(status, response_headers(response), body)
        if not 200 <= status < 300:  # a redirect (never followed: a provider names no other host) or a 5xx
            response.close()
            return f"answered HTTP {status}"
        if asked.stream and response.headers.get("content-type", "").startswith("text/event-stream"):
            events = sse_events(response)
            first = next(events, None)  # failover is still possible until the first event is read
            if first is None:
                return "ended its stream before the first event"
            return _Served(status, response_headers(response), None, events, first, response, _ms(sent))
        content = read_bounded(response, max_bytes=limits.max_answer_bytes, deadline=deadline)
    except AnswerOutOfBounds as exc:
        response.close()
        return str(exc)
    except UpstreamError as exc:
        response.close()
        return exc.message
    except httpx.HTTPError as exc:
        response.close()
        return f"broke off its answer: {type(exc).__name__}"
    response.close()
    return _Served(status, response_headers(response), content, None, None, response, _ms(sent))


def _within_authorization(chosen: list[Candidate], header: str) -> list[Candidate]:
    """The candidates a signed payment can pay for. The pool may have changed between the 402
    that quoted the dearest candidate and the paid retry (a circuit closed, a provider joined):
    a payment that covers some candidates is served by those, in the same order, never above
    what it authorized. When it covers none, or cannot be read, all stay (and the payment check
    refuses it with the new quote)."""
    try:
        authorized = PaymentPayload.from_header(header).authorized
    except InferpayError:
        return chosen
    affordable = [c for c in chosen if c.max_price <= authorized]
    return affordable or chosen


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def _hold_for_key(svc: Services, route: Route, token: str) -> PaidHold:
    """An API key pays a pool call by holding the whole quote against its allowance (the ledger
    refuses, changing nothing, if the key has less left)."""
    key = api_keys.lookup_key(svc.ledger, token, svc.pay_to)
    owner = key.allowance.owner
    access_log.note(keyPrefix=key.key_prefix)
    amount = route.authorized_amount
    svc.rate_limiter.admit(route, payer=owner, api_key=key.allowance.allowance_id, amount=amount)
    hold = svc.ledger.charge(
        key.allowance.allowance_id, amount, expires_at_s=svc.ledger.now_s() + svc.config.hold_seconds
    )
    return PaidHold(hold.tx_id, owner, amount, network_id(svc.ledger.chain.chain_id))


def _settle(
    svc: Services,
    pool: PoolRuntime,
    route: Route,
    paid: PaidHold,
    candidate: Candidate,
    asked: PoolRequest,
    usage: tuple[int, int] | None,
    method: str,
) -> tuple[Receipt, SplitSettlement] | None:
    """The one split settle of this call, and its signed receipt; None if the ledger refused it
    (the provider withdrew mid-call, or its newer prices exceed the hold: the hold is voided, the
    payer charged nothing, the refusal logged).

    A provider that re-registered while its call ran is paid under the registration now in
    force, the only one the ledger prices a split by, if that still serves the model and the
    call's price under it fits the hold the payer authorized (the ledger refuses a split above
    its hold)."""
    inputs, outputs, capped = asked.bounds.cap(usage)

    def settle(registration_id: str) -> TxResult:
        return svc.ledger.settle_split(
            paid.hold_id,
            provider=candidate.address,
            registration_id=registration_id,
            input_tokens=inputs,
            output_tokens=outputs,
            usage_capped=capped,
        )

    try:
        try:
            settled = settle(candidate.record.registration_id)
        except RegistrationNotInForce:
            now = svc.ledger.provider(candidate.address)
            if now.registration.status != "active" or asked.model not in now.registration.models:
                raise
            log.warning("provider %s re-registered mid-call: settling under %s", candidate.address, now.registration_id)
            settled = settle(now.registration_id)
    except InferpayError as refused:
        log.error("split settle of hold %s refused (%s): voiding it", paid.hold_id, refused.code)
        try:
            svc.ledger.void(paid.hold_id)
            svc.metrics.payment(route.path, "voided", refused.code)
        except InferpayError:  # resolved meanwhile, or storage down: it expires by itself if still open
            log.exception("could not void hold %s after a refused split settle", paid.hold_id)
        return None
    split: object = settled.split  # what the ledger recorded (it prices the split, never the gateway)
    if split is None:  # a retry of an already recorded split: read it back
        stored = svc.ledger.store.get(settled.tx_id)
        split = stored.tx.message if stored is not None else None
    assert isinstance(split, SplitSettlement)
    elapsed = time.perf_counter() - paid.started
    svc.metrics.settled(route.path, svc.pay_to, paid.model, split.amount, (inputs, outputs), elapsed)
    svc.metrics.pool_earned(candidate.address, split.provider_amount)
    receipt = Receipt(
        tx_id=settled.tx_id,
        hold_id=paid.hold_id,
        nonce=paid.nonce,
        payer=paid.payer,
        pay_to=svc.pay_to,
        network=paid.network,
        authorized=paid.authorized,
        charged=split.amount,
        balance_after=svc.balance_after_settle(paid.payer),
        method=method,
        path=route.path,
        issued_at_ms=svc.ledger.now_ms(),
        provider=split.provider,
        provider_amount=split.provider_amount,
        fee=split.fee,
    ).signed(svc.sealer)
    return receipt, split


def split_response(receipt: Receipt, split: SplitSettlement) -> dict[str, Any]:
    """PAYMENT-RESPONSE for a pool call: the usual fields and ``split``, naming both payees and
    what the ledger recorded (the registration it priced by, the usage after capping)."""
    return {
        **payment_response(receipt),
        "split": {
            "provider": receipt.provider,
            "providerAmount": str(receipt.provider_amount),
            "operator": receipt.pay_to,
            "fee": str(receipt.fee),
            "registrationId": split.registration_id,
            "inputTokens": split.input_tokens,
            "outputTokens": split.output_tokens,
            "usageCapped": split.usage_capped,
        },
    }


def _answer(
    svc: Services,
    pool: PoolRuntime,
    route: Route,
    paid: PaidHold,
    candidate: Candidate,
    asked: PoolRequest,
    served: _Served,
    started: float,
) -> Response:
    assert served.content is not None
    usage = usage_from_body(served.content)
    pool.board.succeeded(candidate.address, served.upstream_ms, usage[1] if usage else None, probe=False)
    svc.metrics.pool_call(candidate.address, "served")
    svc.metrics.upstream(route.path, paid.model, served.upstream_ms / 1000)
    settled = _settle(svc, pool, route, paid, candidate, asked, usage, request.method)
    response = Response(served.content, status=served.status, headers=served.headers)
    response.headers[PROVIDER_HEADER] = candidate.address
    if settled is not None:
        receipt, split = settled
        answer = split_response(receipt, split)
        response.headers[V1_PAYMENT_RESPONSE_HEADER if paid.v1 else PAYMENT_RESPONSE_HEADER] = encode_header(answer)
        response.headers["Access-Control-Expose-Headers"] = (
            "PAYMENT-RESPONSE, X-PAYMENT-RESPONSE, X-Inferpay-Overhead-Ms, X-Inferpay-Provider"
        )
        access_log.note(charged=str(receipt.charged), txId=receipt.tx_id)
    overhead = (time.perf_counter() - started) * 1000 - served.upstream_ms
    response.headers[OVERHEAD_HEADER] = f"{overhead:.3f}"
    access_log.note(upstreamMs=round(served.upstream_ms, 3), overheadMs=round(overhead, 3))
    return response


def _stream_and_settle(
    svc: Services,
    pool: PoolRuntime,
    route: Route,
    paid: PaidHold,
    candidate: Candidate,
    asked: PoolRequest,
    served: _Served,
) -> Response:
    method = request.method
    assert served.events is not None and served.first is not None
    events_in, first = served.events, served.first

    def receipt_comment(usage: tuple[int, int] | None) -> bytes:
        settled = _settle(svc, pool, route, paid, candidate, asked, usage, method)
        if settled is None:
            return b": inferpay-receipt-refused\n\n"
        answer = split_response(*settled)
        return RECEIPT_COMMENT + encode_header(answer).encode() + b"\n\n"

    def all_events() -> Iterator[tuple[bytes, tuple[int, int] | None, bool, bool]]:
        yield first
        yield from events_in

    def events() -> Iterator[bytes]:
        usage: tuple[int, int] | None = None
        settled = False
        began = time.perf_counter()
        try:
            for chunk, chunk_usage, done, usage_only in all_events():
                usage = chunk_usage or usage
                if done:
                    settled = True
                    pool.board.succeeded(
                        candidate.address, served.upstream_ms + _ms(began), usage[1] if usage else None, probe=False
                    )
                    svc.metrics.pool_call(candidate.address, "served")
                    yield receipt_comment(usage)
                if usage_only and not asked.client_wants_usage:
                    continue
                yield chunk
            if not settled:
                settled = True
                svc.metrics.pool_call(candidate.address, "served")
                yield receipt_comment(usage)
        except UpstreamError as exc:
            if not settled:  # committed to this provider: the stream ends, nothing is charged
                settled = True
                pool.board.failed(candidate.address, exc.message, probe=False)
                svc.metrics.pool_call(candidate.address, "failed")
                svc.ledger.void(paid.hold_id)
                svc.metrics.payment(route.path, "voided", UpstreamError.code)
            raise
        finally:
            served.response.close()
            if not settled:  # the client went away mid-stream: the per-call price only
                try:
                    _settle(svc, pool, route, paid, candidate, asked, None, method)
                except InferpayError:
                    log.exception("could not settle hold %s after a client disconnect", paid.hold_id)

    pending = {
        "success": True,
        "transaction": paid.hold_id,
        "network": paid.network,
        "payer": paid.payer,
        "status": "pending",
        "amount": str(paid.authorized),
        "provider": candidate.address,
    }
    response = Response(stream_with_context(events()), status=served.status, headers=served.headers)
    # When the server closes the answer (also if the client left before its first chunk, when
    # the generator's own ``finally`` never runs): the call no longer counts against capacity.
    response.call_on_close(lambda: pool.board.end(candidate.address))
    response.headers[V1_PAYMENT_RESPONSE_HEADER if paid.v1 else PAYMENT_RESPONSE_HEADER] = encode_header(pending)
    response.headers[PROVIDER_HEADER] = candidate.address
    response.headers["X-Accel-Buffering"] = "no"
    return response

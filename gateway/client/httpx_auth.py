"""``HttpxPaymentAuth``: x402 payment for httpx (sync and async clients), and so for the openai
SDK (``OpenAI(http_client=httpx.Client(auth=HttpxPaymentAuth(wallet)))``).

Each request runs its own ``auth_flow`` generator, so every request gets its own nonce and its
own single retry, however many threads share the client and the auth (x402's own httpx hook
kept the pending payment on shared state and lost concurrent ones). Bodies of successful paid
responses are never read here, so streamed completions stay streamed. The verified receipt is
on ``response.extensions["inferpay_receipt"]``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from gateway.client.payer import RECEIPT_KEY, Payer, Payment
from gateway.wire.x402 import PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER
from ledger.errors import InferpayError


class HttpxPaymentAuth(Payer, httpx.Auth):
    """Pays a 402 once per request, within the spend policy, and verifies the receipt.

    ``HttpxPaymentAuth(wallet, *, max_per_call=None, max_total=None, trusted_sealer=None,
    verify_receipts=True)``; see ``gateway.client.Payer``."""

    requires_request_body = True  # the binding nonce hashes the body

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if not self._should_pay(request, response):
            return
        if PAYMENT_REQUIRED_HEADER not in response.headers:
            response.read()
        payment = self._sign_retry(request, response)
        if payment is None:
            return
        paid = yield request
        if not paid.is_success:
            paid.read()
        self._settle(payment, paid)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        response = yield request
        if not self._should_pay(request, response):
            return
        if PAYMENT_REQUIRED_HEADER not in response.headers:
            await response.aread()
        payment = self._sign_retry(request, response)
        if payment is None:
            return
        paid = yield request
        if not paid.is_success:
            await paid.aread()
        self._settle(payment, paid)

    # ---- shared by both flows; the payment in flight is a local of the flow, never shared ----

    @staticmethod
    def _should_pay(request: httpx.Request, response: httpx.Response) -> bool:
        return response.status_code == 402 and PAYMENT_SIGNATURE_HEADER not in request.headers

    def _sign_retry(self, request: httpx.Request, response: httpx.Response) -> Payment | None:
        body = response.content if PAYMENT_REQUIRED_HEADER not in response.headers else b""
        try:
            challenge = self.challenge(response.headers, body)
            if challenge is None:
                return None
            payment = self.pay(challenge, request.method, str(request.url), request.content)
        except InferpayError as exc:  # refused to pay: the caller may want the 402 it answered
            exc.response = response  # type: ignore[attr-defined]
            raise
        request.headers[PAYMENT_SIGNATURE_HEADER] = payment.header
        return payment

    def _settle(self, payment: Payment, paid: httpx.Response) -> None:
        try:
            receipt = self.finish(payment, paid.status_code, paid.headers, b"" if paid.is_success else paid.content)
        except InferpayError as exc:
            exc.response = paid  # type: ignore[attr-defined]
            raise
        paid.extensions = {**paid.extensions, RECEIPT_KEY: receipt}

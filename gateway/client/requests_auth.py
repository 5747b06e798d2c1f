"""``PaymentAuth``: x402 payment for requests, as a response hook (the way requests' digest auth
answers a 401). Use ``requests.get(url, auth=PaymentAuth(wallet))`` or set ``session.auth``.

One auth object may be shared by any number of threads: the hook keeps nothing about a request
on the auth (unlike digest auth's thread-locals, it needs none), only the locked spend policy.
The paid response carries its verified receipt as ``response.inferpay_receipt``.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.cookies import extract_cookies_to_jar

from gateway.client.payer import RECEIPT_KEY, Payer
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from ledger.errors import InferpayError


class PaymentAuth(Payer, requests.auth.AuthBase):
    """Pays a 402 once per request, within the spend policy, and verifies the receipt.

    ``PaymentAuth(wallet, *, max_per_call=None, max_total=None, trusted_sealer=None,
    verify_receipts=True)``; see ``gateway.client.Payer``."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.register_hook("response", self.handle_402)
        return request

    def handle_402(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.status_code != 402 or PAYMENT_SIGNATURE_HEADER in request.headers:
            return response  # not asked to pay, or already paid: never pay twice for one request
        retry = request.copy()
        try:
            challenge = self.challenge(response.headers, response.content)
            if challenge is None:
                return response
            payment = self.pay(challenge, retry.method or "GET", retry.url or "", _body_bytes(retry))
        except InferpayError as exc:  # refused to pay: the caller may want the 402 it answered
            exc.response = response  # type: ignore[attr-defined]
            raise
        response.close()  # the 402's body was read above; give its connection back
        retry.headers[PAYMENT_SIGNATURE_HEADER] = payment.header
        if retry._cookies is not None:  # cookies the 402 set go along with the retry
            extract_cookies_to_jar(retry._cookies, request, response.raw)
            retry.prepare_cookies(retry._cookies)
        # Sent through the adapter directly, as digest auth does: response hooks do not run
        # again, so the retry cannot trigger a second payment.
        paid: requests.Response = response.connection.send(retry, **kwargs)
        paid.history.append(response)
        paid.request = retry
        try:
            failed = not 200 <= paid.status_code < 300
            receipt = self.finish(payment, paid.status_code, paid.headers, paid.content if failed else b"")
        except InferpayError as exc:
            exc.response = paid  # type: ignore[attr-defined]
            raise
        setattr(paid, RECEIPT_KEY, receipt)
        return paid


def _body_bytes(request: requests.PreparedRequest) -> bytes | None:
    """The exact bytes the retry will send, or None for a streamed body (paid unbound).

    A text body is encoded here (UTF-8, as urllib3 2 would) so that what is hashed into the
    binding nonce is byte for byte what goes on the wire."""
    body = request.body
    if body is None:
        return b""
    if isinstance(body, str):
        encoded = body.encode("utf-8")
        request.body = encoded
        request.prepare_content_length(encoded)
        return encoded
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return None

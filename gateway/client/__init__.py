"""The client SDK: pay for x402 v2 calls to an inferpay gateway, and hold the gateway to its word.

What it is for: a program that calls a paid route hands ``PaymentAuth`` (requests) or
``HttpxPaymentAuth`` (httpx, and so the openai SDK through ``http_client=``) a wallet. On a 402
the auth picks the offered terms, checks the gateway's signature over them, applies the spend
policy, signs an EIP-3009 authorization bound to the request and retries once; on the paid
response it verifies the gateway-signed receipt. ``verify_receipt_inclusion`` and
``check_consistency`` (in ``gateway.client.ledger_api``) then prove the charge is in the ledger
and that the ledger never rewrote its history.

This module is the SDK's front door and the statement of its contract. The transport-free core
(``Payer``) is ``gateway.client.payer``; the transports ``gateway.client.requests_auth`` and
``gateway.client.httpx_auth`` are loaded on first use, so ``import gateway.client`` costs neither
requests nor httpx. None of them may import Flask or ``gateway.server.app``: a client program never
loads the server.

Contract decisions (the gateway must match them):

- Request binding. When a requirement's ``extra.inferpayBinding == "v1"`` the nonce is
  ``request_binding_nonce(METHOD, target, body, salt)`` with a fresh random 32-byte salt,
  where ``target = path + ("?" + query if query else "")``: the request target exactly as sent
  on the wire (percent-encoding kept, no fragment, "/" for an empty path) -- ``request_target``.
  A gateway on werkzeug gets the same text from ``environ["RAW_URI"]``, or from
  ``request.full_path`` minus its trailing "?" when the query is empty (the two agree whenever
  the path holds no %-escapes, since ``request.path`` is decoded). ``body`` is the exact body
  bytes sent (b"" for none); a body that is streamed (a file or generator) is paid unbound.
- Spend accounting. Each payment reserves its whole authorized amount before anything is signed
  and gives back ``authorized - charged`` once a verified receipt arrives, or everything when
  the gateway answers with an inferpay error (its error paths never capture). When the outcome
  is unknown (transport error, a 2xx without a receipt, an unrecognized failure) the whole
  authorization stays counted: a spending cap errs toward spending less.
- Receipts. The sealer is the one the 402 names in ``extensions.inferpay.sealer`` (it must equal
  ``trusted_sealer`` when one is given, and then the 402 must carry a signed offer). A paid
  response without a valid receipt raises ``ReceiptInvalid`` unless ``verify_receipts=False``.
- Where receipts are: ``receipt_of(response)`` reads ``response.inferpay_receipt`` (requests)
  or ``response.extensions["inferpay_receipt"]`` (httpx); the recent ones are on ``auth.receipts``.
  ``None`` there means the charge was not verified (only with ``verify_receipts=False``).
- Failures. A paid retry answered with ``{"error": {"code", "message", ...}}`` raises the same
  exception class the gateway raised (``gateway.wire.errors.ERRORS``), with ``.response`` attached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.client.ledger_api import check_consistency, fetch_chain_info, fetch_head, verify_receipt_inclusion
from gateway.client.payer import (
    Challenge,
    Payer,
    Payment,
    gateway_error,
    receipt_of,
    request_target,
    stream_receipt,
)
from gateway.client.spend_policy import SpendPolicy

if TYPE_CHECKING:
    from gateway.client.httpx_auth import HttpxPaymentAuth
    from gateway.client.requests_auth import PaymentAuth

__all__ = [
    "Challenge",
    "HttpxPaymentAuth",
    "Payer",
    "Payment",
    "PaymentAuth",
    "SpendPolicy",
    "check_consistency",
    "fetch_chain_info",
    "fetch_head",
    "gateway_error",
    "receipt_of",
    "request_target",
    "stream_receipt",
    "verify_receipt_inclusion",
]

_LAZY = {
    "PaymentAuth": "gateway.client.requests_auth",
    "HttpxPaymentAuth": "gateway.client.httpx_auth",
}


def __getattr__(name: str) -> Any:
    """Load a transport on first use (PEP 562), so importing the SDK costs neither library."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

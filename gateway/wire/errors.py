"""Errors of the paid HTTP flow, and the whole tree's code table that clients map codes through.

The classes here are branches of the one tree drawn in ``ledger.errors`` (codes there; HTTP
statuses only in ``gateway.server.error_handlers.STATUS_BY_ERROR``). ``ERRORS`` is the combined
registry, written down: the ledger's ``LEDGER_ERRORS`` plus ``GATEWAY_ERRORS`` plus the model
server's ``MODEL_SERVER_ERRORS`` (its errors reach clients through the gateway's proxy).
``error_from_code`` and ``error_from_body`` look codes up there and nowhere else, so the answer
never depends on what a process happens to have imported.
This module must never import Flask, requests or httpx: the client SDK and the server share it.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.errors import LEDGER_ERRORS, AuthorizationError, ErrorRegistry, InferpayError, InvalidInput
from model_server.errors import MODEL_SERVER_ERRORS


class MalformedPayment(InvalidInput):
    code = "malformed_payment"


class ConfigError(InvalidInput):
    code = "config_error"


class PaymentRequired(AuthorizationError):
    code = "payment_required"


class WrongNetwork(AuthorizationError):
    code = "wrong_network"


class WrongAsset(AuthorizationError):
    code = "wrong_asset"


class WrongPayee(AuthorizationError):
    code = "wrong_payee"


class AmountTooLow(AuthorizationError):
    code = "amount_too_low"


class UnsupportedScheme(AuthorizationError):
    code = "unsupported_scheme"


class BindingMismatch(AuthorizationError):
    code = "binding_mismatch"


class PaymentAlreadyUsed(AuthorizationError):
    code = "payment_already_used"


class InvalidApiKey(AuthorizationError):
    code = "invalid_api_key"


class UpstreamError(InferpayError):
    code = "upstream_error"


class ReceiptInvalid(InferpayError):
    code = "receipt_invalid"


class SpendLimitExceeded(InferpayError):
    code = "spend_limit_exceeded"


# ---- the x402 facilitator (gateway/server/facilitator.py); refusals there are HTTP 200 answers ----


class InvalidRequirements(MalformedPayment):
    code = "invalid_payment_requirements"


class AmountMismatch(AuthorizationError):
    code = "amount_mismatch"


class DuplicateSettlement(AuthorizationError):
    code = "duplicate_settlement"


# ---- x402 upto (Permit2): the paid proxy and the facilitator ----


class WrongFacilitator(AuthorizationError):
    code = "wrong_facilitator"


class WrongSpender(AuthorizationError):
    code = "wrong_spender"


class UnsupportedPayloadType(UnsupportedScheme):
    code = "unsupported_payload_type"


class RateLimited(InferpayError):
    """Over a ``[[rate_limits]]`` limit: decided before anything is held; ``retry_after_s`` says
    when the window that refused it ends (also the answer's ``Retry-After`` header)."""

    code = "rate_limited"


# ---- the compute pool (gateway/server/pool) ----


class MalformedProviderPreferences(InvalidInput):
    """The request's OpenRouter-style ``provider`` object is not one we can honour exactly."""

    code = "malformed_provider_preferences"


class NoProviderWithinPrice(InferpayError):
    """Every provider that could serve the call costs more than the request's ``max_price``:
    decided before anything is held."""

    code = "no_provider_within_price"


class NoProviderAvailable(InferpayError):
    """No routable provider (in force, active, accepted, circuit closed) serves the model, or
    the request's ``only`` / ``ignore`` left none: decided before anything is held."""

    code = "no_provider_available"


GATEWAY_ERRORS: tuple[type[InferpayError], ...] = (
    MalformedPayment,
    ConfigError,
    PaymentRequired,
    WrongNetwork,
    WrongAsset,
    WrongPayee,
    AmountTooLow,
    UnsupportedScheme,
    BindingMismatch,
    PaymentAlreadyUsed,
    InvalidApiKey,
    UpstreamError,
    ReceiptInvalid,
    SpendLimitExceeded,
    InvalidRequirements,
    AmountMismatch,
    DuplicateSettlement,
    WrongFacilitator,
    WrongSpender,
    UnsupportedPayloadType,
    RateLimited,
    MalformedProviderPreferences,
    NoProviderWithinPrice,
    NoProviderAvailable,
)

# The table the client SDK (and anything else reading an inferpay error body) maps codes through.
ERRORS: ErrorRegistry = LEDGER_ERRORS.extended(GATEWAY_ERRORS).extended(MODEL_SERVER_ERRORS)


def error_from_code(code: str, message: str, **details: Any) -> InferpayError:
    """The error ``code`` names anywhere in the tree; an unknown code gives the root, code kept."""
    return ERRORS.from_code(code, message, **details)


def error_fields(body: bytes | str) -> tuple[str, str, dict[str, Any]] | None:
    """``(code, message, details)`` of an error body ``{"error": {"code", "message", ...}}``,
    or None when the body is not one (not JSON, or not that shape)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return code, message, {k: v for k, v in error.items() if k not in ("code", "message")}


def error_from_body(body: bytes | str) -> InferpayError | None:
    """The inferpay error a failure body stands for, or None.

    Only codes in ``ERRORS`` are mapped, so an upstream's own error JSON passed through (OpenAI's
    also has ``error.code``) is not mistaken for an inferpay error."""
    fields = error_fields(body)
    if fields is None or fields[0] not in ERRORS:
        return None
    code, message, details = fields
    return error_from_code(code, message, **details)

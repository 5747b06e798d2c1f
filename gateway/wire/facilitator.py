"""The x402 v2 facilitator wire format: the verify and settle requests a resource server sends,
the answers it parses, and the one table per scheme (``exact``: EIP-3009; ``upto``: x402's
Permit2) from inferpay errors to x402 reason strings. What a payment must meet under each
scheme is ``gateway.wire.facilitator_schemes``.

Requests are exactly what the official SDK's ``HTTPFacilitatorClientSync`` posts to
``/verify`` and ``/settle``::

    {"x402Version": 2, "paymentPayload": {...}, "paymentRequirements": {...}}

and the answers follow ``x402.schemas.VerifyResponse`` and ``SettleResponse`` (camelCase):
``{"isValid", "payer", "invalidReason"?, "invalidMessage"?}`` and ``{"success", "payer",
"transaction", "network", "amount"?, "errorReason"?, "errorMessage"?, "extensions"?}``
(``transaction`` and ``network`` are required even on a refusal; ``transaction`` is then "").

A request that is not x402 at all (not a JSON object, no paymentPayload or
paymentRequirements, x402Version not 2) is a ``MalformedPayment`` (HTTP 400). Anything
wrong *inside* the payload or the requirements is a refusal: the SDK raises on any status
but 200, and its middleware then answers the buyer with a bare 500, so a refusal must be a
200 whose reason says why. Parsing is bounded: the body, each string, each amount (at most
2**63-1, what a ledger column holds). Must not import Flask or the ledger's storage.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.wire import errors as gw
from gateway.wire.x402 import (
    FACILITATOR_ADDRESS,
    SCHEME_EXACT,
    SCHEME_UPTO,
    X402_VERSION,
    PaymentPayload,
    PaymentRequirement,
    facilitator_address,
    network_id,
)
from ledger import errors as le
from ledger.amounts import INT64_MAX
from ledger.types import ChainInfo

MAX_REQUEST_BYTES = 64 * 1024
MAX_FIELD_CHARS = 256  # scheme, network, asset, payTo, a resource URL: far longer than any real one
MAX_TIMEOUT_SECONDS = 2**31 - 1

# x402 reason strings. Where the SDK names one (x402.mechanisms.evm.constants), it is reused
# verbatim; the generic ones (insufficient_funds, invalid_payload, invalid_payment_requirements,
# invalid_transaction_state) are the x402 specification's; asset_mismatch and
# duplicate_settlement have no EIP-3009 constant in the SDK (its TVM scheme says
# "duplicate_settlement"), so they are named alike.
ERR_INVALID_SIGNATURE = "invalid_exact_evm_payload_signature"
ERR_RECIPIENT_MISMATCH = "invalid_exact_evm_payload_recipient_mismatch"
ERR_AUTHORIZATION_VALUE_MISMATCH = "invalid_exact_evm_payload_authorization_value_mismatch"
ERR_VALID_BEFORE_EXPIRED = "invalid_exact_evm_payload_authorization_valid_before"
ERR_VALID_AFTER_FUTURE = "invalid_exact_evm_payload_authorization_valid_after"
ERR_NONCE_ALREADY_USED = "invalid_exact_evm_nonce_already_used"
ERR_NETWORK_MISMATCH = "network_mismatch"
ERR_UNSUPPORTED_SCHEME = "unsupported_scheme"
ERR_UNSUPPORTED_PAYLOAD = "unsupported_payload_type"  # the SDK upto facilitator's: EIP-3009 under upto, say
ERR_ASSET_MISMATCH = "asset_mismatch"
ERR_INSUFFICIENT_FUNDS = "insufficient_funds"
ERR_DUPLICATE_SETTLEMENT = "duplicate_settlement"
ERR_INVALID_PAYLOAD = "invalid_payload"
ERR_INVALID_REQUIREMENTS = "invalid_payment_requirements"
ERR_INVALID_TRANSACTION_STATE = "invalid_transaction_state"
# The payment-identifier extension's "same id, different payload": the spec's 409 Conflict,
# answered as a refusal because the SDK raises on any status but 200.
ERR_PAYMENT_ID_CONFLICT = "payment_identifier_conflict"

# x402's payment-identifier extension (specs/extensions/payment_identifier.md; the SDK's
# x402.extensions.payment_identifier): an idempotency key in paymentPayload.extensions.
PAYMENT_IDENTIFIER = "payment-identifier"
PAYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")

# The one table: the first class of an error's MRO found here names its reason. An error not
# in it (storage down, a bug) is no refusal: it propagates and is answered as a JSON 5xx.
REASON_BY_ERROR: dict[type[le.InferpayError], str] = {
    gw.InvalidRequirements: ERR_INVALID_REQUIREMENTS,
    gw.MalformedPayment: ERR_INVALID_PAYLOAD,
    le.InvalidInput: ERR_INVALID_PAYLOAD,
    gw.UnsupportedScheme: ERR_UNSUPPORTED_SCHEME,
    gw.UnsupportedPayloadType: ERR_UNSUPPORTED_PAYLOAD,
    gw.WrongNetwork: ERR_NETWORK_MISMATCH,
    gw.WrongAsset: ERR_ASSET_MISMATCH,
    gw.WrongPayee: ERR_RECIPIENT_MISMATCH,
    gw.AmountTooLow: ERR_AUTHORIZATION_VALUE_MISMATCH,
    gw.AmountMismatch: ERR_AUTHORIZATION_VALUE_MISMATCH,
    le.InvalidSignature: ERR_INVALID_SIGNATURE,  # and HighSSignature, its subclass
    le.WrongDomain: ERR_INVALID_SIGNATURE,
    le.NotYetValid: ERR_VALID_AFTER_FUTURE,
    le.AuthorizationExpired: ERR_VALID_BEFORE_EXPIRED,
    le.NonceReused: ERR_NONCE_ALREADY_USED,
    gw.PaymentAlreadyUsed: ERR_NONCE_ALREADY_USED,
    gw.DuplicateSettlement: ERR_DUPLICATE_SETTLEMENT,
    le.AuthorizationError: ERR_INVALID_PAYLOAD,
    le.InsufficientFunds: ERR_INSUFFICIENT_FUNDS,
    le.IdempotencyConflict: ERR_PAYMENT_ID_CONFLICT,
    le.LedgerConflict: ERR_INVALID_TRANSACTION_STATE,  # e.g. the hold was voided or expired
}


# x402 upto (Permit2): the SDK's own reason strings (x402.mechanisms.evm.constants, and in its
# upto facilitator invalid_permit2_payload_format and the on-chain InvalidNonce revert's
# permit2_invalid_nonce), where they differ from the table above.
ERR_UPTO_INVALID_SCHEME = "invalid_upto_evm_scheme"
ERR_UPTO_NETWORK_MISMATCH = "invalid_upto_evm_network_mismatch"
ERR_UPTO_INVALID_FORMAT = "invalid_permit2_payload_format"
ERR_UPTO_FACILITATOR_MISMATCH = "upto_facilitator_mismatch"
ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT = "invalid_upto_evm_payload_settlement_exceeds_amount"
ERR_PERMIT2_INVALID_SPENDER = "invalid_permit2_spender"
ERR_PERMIT2_RECIPIENT_MISMATCH = "invalid_permit2_recipient_mismatch"
ERR_PERMIT2_DEADLINE_EXPIRED = "permit2_deadline_expired"
ERR_PERMIT2_NOT_YET_VALID = "permit2_not_yet_valid"
ERR_PERMIT2_AMOUNT_MISMATCH = "permit2_amount_mismatch"
ERR_PERMIT2_TOKEN_MISMATCH = "permit2_token_mismatch"
ERR_PERMIT2_INVALID_SIGNATURE = "invalid_permit2_signature"
ERR_PERMIT2_INSUFFICIENT_BALANCE = "permit2_insufficient_balance"
ERR_PERMIT2_INVALID_NONCE = "permit2_invalid_nonce"

UPTO_REASON_BY_ERROR: dict[type[le.InferpayError], str] = {
    **REASON_BY_ERROR,
    gw.MalformedPayment: ERR_UPTO_INVALID_FORMAT,
    gw.UnsupportedScheme: ERR_UPTO_INVALID_SCHEME,
    gw.WrongNetwork: ERR_UPTO_NETWORK_MISMATCH,
    gw.WrongAsset: ERR_PERMIT2_TOKEN_MISMATCH,
    gw.WrongSpender: ERR_PERMIT2_INVALID_SPENDER,
    gw.WrongPayee: ERR_PERMIT2_RECIPIENT_MISMATCH,
    gw.WrongFacilitator: ERR_UPTO_FACILITATOR_MISMATCH,
    gw.AmountMismatch: ERR_PERMIT2_AMOUNT_MISMATCH,
    le.SettleExceedsHold: ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT,
    le.InvalidSignature: ERR_PERMIT2_INVALID_SIGNATURE,
    le.WrongDomain: ERR_PERMIT2_INVALID_SIGNATURE,  # the ledger's own check: not a permit for this ledger
    le.NotYetValid: ERR_PERMIT2_NOT_YET_VALID,
    le.AuthorizationExpired: ERR_PERMIT2_DEADLINE_EXPIRED,
    le.NonceReused: ERR_PERMIT2_INVALID_NONCE,
    gw.PaymentAlreadyUsed: ERR_PERMIT2_INVALID_NONCE,
    le.InsufficientFunds: ERR_PERMIT2_INSUFFICIENT_BALANCE,
}


def reason_for(error: le.InferpayError, scheme: str = SCHEME_EXACT) -> str | None:
    """The x402 reason of a refusal under ``scheme`` (the requirements'; the exact table for
    any other), or None when ``error`` is not a refusal of the payment."""
    table = UPTO_REASON_BY_ERROR if scheme == SCHEME_UPTO else REASON_BY_ERROR
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return None


@dataclass(frozen=True)
class FacilitatorRequest:
    """A verify or settle request, split in its two parts, each still unparsed: a part that
    does not parse is a refusal of the payment (``parse_payment``), not of the request."""

    payload: dict[str, Any]
    requirements: dict[str, Any]

    @classmethod
    def from_body(cls, body: bytes) -> FacilitatorRequest:
        if len(body) > MAX_REQUEST_BYTES:
            raise gw.MalformedPayment(f"a facilitator request is at most {MAX_REQUEST_BYTES} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise gw.MalformedPayment("the body is not JSON") from exc
        except RecursionError as exc:
            raise gw.MalformedPayment("the body is nested too deeply") from exc
        if not isinstance(data, dict):
            raise gw.MalformedPayment("the body must be a JSON object")
        version = data.get("x402Version")
        if version != X402_VERSION or isinstance(version, bool):
            raise gw.MalformedPayment(f"x402Version must be {X402_VERSION}, got {version!r}")
        payload, requirements = data.get("paymentPayload"), data.get("paymentRequirements")
        if not isinstance(payload, dict) or not isinstance(requirements, dict):
            raise gw.MalformedPayment("the body must hold paymentPayload and paymentRequirements objects")
        return cls(payload, requirements)

    def payer_hint(self) -> str | None:
        """The payer the payload names, for a refusal's ``payer`` when it does not parse."""
        inner = self.payload.get("payload")
        auth = None
        if isinstance(inner, dict):
            auth = inner.get("authorization", inner.get("permit2Authorization"))
        payer = auth.get("from") if isinstance(auth, dict) else None
        return payer if isinstance(payer, str) and len(payer) == 42 else None

    @property
    def scheme(self) -> str:
        """The scheme the requirements name (which reason table a refusal is read from)."""
        scheme = self.requirements.get("scheme")
        return scheme if isinstance(scheme, str) else ""


def payment_identifier(request: FacilitatorRequest) -> str | None:
    """The payload's ``payment-identifier`` id, or None when it has none; a malformed one is a
    ``MalformedPayment`` (a refusal: invalid_payload)."""
    extensions = request.payload.get("extensions")
    if extensions is None:
        return None
    if not isinstance(extensions, dict):
        raise gw.MalformedPayment("paymentPayload.extensions must be an object")
    extension = extensions.get(PAYMENT_IDENTIFIER)
    if extension is None:
        return None
    info = extension.get("info") if isinstance(extension, dict) else None
    if not isinstance(info, dict):
        raise gw.MalformedPayment(f"paymentPayload.extensions.{PAYMENT_IDENTIFIER}.info must be an object")
    payment_id = info.get("id")
    if payment_id is None:
        return None
    if not isinstance(payment_id, str) or not PAYMENT_ID_PATTERN.fullmatch(payment_id):
        raise gw.MalformedPayment(
            f"paymentPayload.extensions.{PAYMENT_IDENTIFIER}.info.id must be 16 to 128 letters, digits, - or _"
        )
    return payment_id


def request_digest(request: FacilitatorRequest) -> str:
    """What "the same payload" means for a payment identifier: both parts of the request, as
    canonical JSON. A fingerprint compared for equality only; nothing is signed over it, so it
    is not one of the ledger's encodings."""
    canonical = json.dumps(
        {"paymentPayload": request.payload, "paymentRequirements": request.requirements},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def parse_payment(request: FacilitatorRequest, *, settling: bool = False) -> tuple[PaymentPayload, PaymentRequirement]:
    """Both parts, strictly and with bounds; raises ``MalformedPayment`` (the payload) or
    ``InvalidRequirements`` (the requirements). An upto settle may ask for 0 (the call cost
    nothing: the hold is released in full); every other amount is at least 1."""
    upto_settle = settling and request.requirements.get("scheme") == SCHEME_UPTO
    requirement = _requirement(request.requirements, min_amount=0 if upto_settle else 1)
    if request.payload.get("x402Version") != X402_VERSION:
        raise gw.MalformedPayment(f"paymentPayload.x402Version must be {X402_VERSION}")
    resource = request.payload.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise gw.MalformedPayment("paymentPayload.resource must be an object")
    payment = PaymentPayload.from_dict(request.payload)
    assert payment.accepted is not None  # v2 always echoes the requirement it accepts
    _bounded(payment.accepted, "paymentPayload.accepted", gw.MalformedPayment)
    return payment, requirement


def resource_url(request: FacilitatorRequest) -> str:
    """The resource the payer accepted to pay for, as its payload names it ("" if it does not)."""
    resource = request.payload.get("resource")
    url = resource.get("url") if isinstance(resource, dict) else None
    return url if isinstance(url, str) and len(url) <= MAX_FIELD_CHARS else ""


def _requirement(data: dict[str, Any], min_amount: int) -> PaymentRequirement:
    try:
        requirement = PaymentRequirement.from_dict(data)
    except gw.MalformedPayment as exc:
        raise gw.InvalidRequirements(f"paymentRequirements: {exc.message}") from exc
    _bounded(requirement, "paymentRequirements", gw.InvalidRequirements, min_amount)
    return requirement


def _bounded(
    requirement: PaymentRequirement, where: str, error: type[gw.MalformedPayment], min_amount: int = 1
) -> None:
    for name in ("scheme", "network", "asset", "pay_to"):
        if len(getattr(requirement, name)) > MAX_FIELD_CHARS:
            raise error(f"{where}.{name} is longer than {MAX_FIELD_CHARS} characters")
    if not min_amount <= requirement.amount <= INT64_MAX:
        raise error(f"{where}.amount must be from {min_amount} to {INT64_MAX} base units")
    if not 0 < requirement.max_timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise error(f"{where}.maxTimeoutSeconds must be from 1 to {MAX_TIMEOUT_SECONDS}")


def verify_answer(
    payer: str | None, error: le.InferpayError | None = None, scheme: str = SCHEME_EXACT
) -> dict[str, Any]:
    answer: dict[str, Any] = {"isValid": error is None, "payer": payer}
    if error is not None:
        answer["invalidReason"] = reason_for(error, scheme)
        answer["invalidMessage"] = error.message
    return answer


def settle_refusal(
    payer: str | None, network: str, error: le.InferpayError, scheme: str = SCHEME_EXACT
) -> dict[str, Any]:
    return {
        "success": False,
        "errorReason": reason_for(error, scheme),
        "errorMessage": error.message,
        "payer": payer,
        "transaction": str(error.details.get("tx_id", "")),
        "network": network[:MAX_FIELD_CHARS],
    }


def settle_answer(
    payer: str, network: str, tx_id: str, amount: int, extensions: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "success": True,
        "payer": payer,
        "transaction": tx_id,
        "network": network,
        "amount": str(amount),
    }
    if extensions:
        answer["extensions"] = extensions
    return answer


def supported_answer(chain: ChainInfo) -> dict[str, Any]:
    """What we settle: ``exact`` and ``upto`` on this ledger's network only (never a public
    one), ``upto`` naming the facilitator its Permit2 witness must bind (the SDK's server
    copies ``extra.facilitatorAddress`` into its payment requirements)."""
    network = network_id(chain.chain_id)
    return {
        "kinds": [
            {"x402Version": X402_VERSION, "scheme": SCHEME_EXACT, "network": network},
            {
                "x402Version": X402_VERSION,
                "scheme": SCHEME_UPTO,
                "network": network,
                "extra": {FACILITATOR_ADDRESS: facilitator_address(chain)},
            },
        ],
        "extensions": [PAYMENT_IDENTIFIER],
        "signers": {"eip155:*": [chain.sealer]},
    }

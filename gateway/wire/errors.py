"""Errors of the paid HTTP flow, in the same tree as the ledger's (rooted at InferpayError).

InferpayError
├── InvalidInput
│   ├── MalformedPayment          malformed_payment     (400) header not base64 JSON, too large, bad shape
│   └── ConfigError               config_error          (start-up only)
├── AuthorizationError
│   ├── PaymentRequired           payment_required      (402) no payment on a paid route
│   ├── WrongNetwork              wrong_network         (402)
│   ├── WrongAsset                wrong_asset           (402)
│   ├── WrongPayee                wrong_payee           (402)
│   ├── AmountTooLow              amount_too_low        (402)
│   ├── UnsupportedScheme         unsupported_scheme    (402)
│   ├── BindingMismatch           binding_mismatch      (402) payment bound to another request
│   ├── PaymentAlreadyUsed        payment_already_used  (402) the same payment presented twice
│   ├── InvalidApiKey             invalid_api_key       (401)
│   ├── AllowanceExhausted        allowance_exhausted   (402) API key past its cap
│   └── AllowanceExpired          allowance_expired     (401)
├── UpstreamError                 upstream_error        (502) model down, timed out, or 5xx
├── ReceiptInvalid                receipt_invalid       (client side: a receipt or proof fails)
└── SpendLimitExceeded            spend_limit_exceeded  (client side: the policy refused to pay)
"""

from __future__ import annotations

from ledger.errors import AuthorizationError, InferpayError, InvalidInput


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

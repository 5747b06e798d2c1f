"""Every error inferpay raises on purpose, in one tree.

    InferpayError                         code
    ├── InvalidInput                      invalid_input        (400)
    │   ├── InvalidAmount                 invalid_amount
    │   ├── InvalidAddress                invalid_address
    │   ├── MalformedRecord               malformed_record
    │   └── UnknownWallet                 unknown_wallet       (404)
    ├── AuthorizationError                (402: the payment itself is not acceptable)
    │   ├── InvalidSignature              invalid_signature
    │   ├── HighSSignature                high_s_signature
    │   ├── WrongDomain                   wrong_domain
    │   ├── NotYetValid                   not_yet_valid
    │   ├── AuthorizationExpired          authorization_expired
    │   ├── NonceReused                   nonce_reused
    │   ├── Unauthorized                  unauthorized         (only the operator may mint/settle)
    │   ├── AllowanceExhausted            allowance_exhausted  (a charge past an allowance's cap)
    │   ├── AllowanceExpired              allowance_expired    (a charge after its validBefore)
    │   └── AllowanceRevoked              allowance_revoked
    ├── InsufficientFunds                 insufficient_funds   (402)
    ├── LedgerConflict                    (409)
    │   ├── IdempotencyConflict           idempotency_conflict (same id, different fields)
    │   ├── HoldNotOpen                   hold_not_open
    │   └── SettleExceedsHold             settle_exceeds_hold
    ├── NotFound                          not_found            (404)
    ├── WalletError                       wallet_error
    │   ├── WrongPassword                 wrong_password
    │   ├── WalletExists                  wallet_exists
    │   └── KeystoreInvalid               keystore_invalid
    ├── LedgerNotInitialized              not_initialized
    └── StorageUnavailable                storage_unavailable  (503)

Each class has a stable machine-readable ``code`` and keeps the context a caller needs in
``details`` (amounts as base-unit strings). The HTTP layer maps classes to statuses in one
table; the client SDK maps codes back to these classes with ``error_from_code``.
This module must never import anything but the standard library.
"""

from __future__ import annotations

from typing import Any, ClassVar


class InferpayError(Exception):
    code: ClassVar[str] = "inferpay_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInput(InferpayError):
    code = "invalid_input"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class InvalidAddress(InvalidInput):
    code = "invalid_address"


class MalformedRecord(InvalidInput):
    code = "malformed_record"


class UnknownWallet(InvalidInput):
    code = "unknown_wallet"


class AuthorizationError(InferpayError):
    code = "authorization_error"


class InvalidSignature(AuthorizationError):
    code = "invalid_signature"


class HighSSignature(InvalidSignature):
    code = "high_s_signature"


class WrongDomain(AuthorizationError):
    code = "wrong_domain"


class NotYetValid(AuthorizationError):
    code = "not_yet_valid"


class AuthorizationExpired(AuthorizationError):
    code = "authorization_expired"


class NonceReused(AuthorizationError):
    code = "nonce_reused"


class Unauthorized(AuthorizationError):
    code = "unauthorized"


class AllowanceExhausted(AuthorizationError):
    code = "allowance_exhausted"


class AllowanceExpired(AuthorizationError):
    code = "allowance_expired"


class AllowanceRevoked(AuthorizationError):
    code = "allowance_revoked"


class InsufficientFunds(InferpayError):
    code = "insufficient_funds"


class LedgerConflict(InferpayError):
    code = "ledger_conflict"


class IdempotencyConflict(LedgerConflict):
    code = "idempotency_conflict"


class HoldNotOpen(LedgerConflict):
    code = "hold_not_open"


class SettleExceedsHold(LedgerConflict):
    code = "settle_exceeds_hold"


class NotFound(InferpayError):
    code = "not_found"


class WalletError(InferpayError):
    code = "wallet_error"


class WrongPassword(WalletError):
    code = "wrong_password"


class WalletExists(WalletError):
    code = "wallet_exists"


class KeystoreInvalid(WalletError):
    code = "keystore_invalid"


class LedgerNotInitialized(InferpayError):
    code = "not_initialized"


class StorageUnavailable(InferpayError):
    code = "storage_unavailable"


def _all_subclasses(cls: type[InferpayError]) -> list[type[InferpayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


def error_classes() -> dict[str, type[InferpayError]]:
    """Every error class by its code, including codes defined by other packages' subclasses."""
    return {c.code: c for c in _all_subclasses(InferpayError)}


def error_from_code(code: str, message: str, **details: Any) -> InferpayError:
    """Rebuild the error a server raised from its code, so callers catch the same class."""
    cls = error_classes().get(code, InferpayError)
    err = cls(message, **details)
    return err

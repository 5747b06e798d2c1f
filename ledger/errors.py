"""Every error inferpay raises on purpose, in one tree: the only drawing of it.

    InferpayError                           inferpay_error
    ├── InvalidInput                        invalid_input
    │   ├── InvalidAmount                   invalid_amount
    │   ├── InvalidAddress                  invalid_address
    │   ├── MalformedRecord                 malformed_record
    │   ├── UnknownWallet                   unknown_wallet
    │   ├── MalformedNote                   malformed_note        (not a c2sp.org/signed-note, or too large)
    │   │   ├── MalformedKey                malformed_key         (a vkey or skey that does not parse or check)
    │   │   └── MalformedCheckpoint         malformed_checkpoint  (a note body that is not a tlog-checkpoint)
    │   ├── MalformedTilePath               malformed_tile_path   (not a canonical tlog-tiles path)
    │   ├── MalformedTile                   malformed_tile        (tile data or an entry bundle of the wrong shape)
    │   ├── MalformedTlogProof              malformed_tlog_proof  (not a c2sp.org/tlog-proof@v1)
    │   ├── MalformedWitnessRequest         malformed_witness_request  (an add-checkpoint body or answer)
    │   ├── MalformedPolicy                 malformed_policy      (not a tlog-policy file)
    │   ├── WitnessConfigError              witness_config_error  (the witness's config or key file, at start-up)
    │   ├── gateway.wire.errors
    │   │   ├── MalformedPayment            malformed_payment     (header not base64 JSON, too large, bad shape)
    │   │   │   └── InvalidRequirements     invalid_payment_requirements  (facilitator: requirements not ours)
    │   │   └── ConfigError                 config_error          (the gateway's config file, at start-up)
    │   └── model_server.errors
    │       ├── InvalidEmbeddingRequest     invalid_request
    │       ├── EmptyInput                  empty_input
    │       ├── TooManyInputs               too_many_inputs
    │       └── InputTooLong                input_too_long        (longer than the model reads)
    ├── AuthorizationError                  authorization_error   (the payment itself is not acceptable)
    │   ├── InvalidSignature                invalid_signature
    │   │   └── HighSSignature              high_s_signature
    │   ├── WrongDomain                     wrong_domain
    │   ├── NotYetValid                     not_yet_valid
    │   ├── AuthorizationExpired            authorization_expired
    │   ├── NonceReused                     nonce_reused
    │   ├── Unauthorized                    unauthorized          (only the operator may mint/settle)
    │   ├── AllowanceExhausted              allowance_exhausted   (a charge past an allowance's cap)
    │   ├── AllowanceExpired                allowance_expired     (a charge after its validBefore)
    │   ├── AllowanceRevoked                allowance_revoked
    │   ├── NotAPayee                       not_a_payee           (a refund by someone the settle did not credit)
    │   └── gateway.wire.errors
    │       ├── PaymentRequired             payment_required      (no payment on a paid route)
    │       ├── WrongNetwork                wrong_network
    │       ├── WrongAsset                  wrong_asset
    │       ├── WrongPayee                  wrong_payee
    │       ├── AmountTooLow                amount_too_low
    │       ├── UnsupportedScheme           unsupported_scheme
    │       │   └── UnsupportedPayloadType  unsupported_payload_type  (EIP-3009 under upto's Permit2, or the reverse)
    │       ├── BindingMismatch             binding_mismatch      (payment bound to another request)
    │       ├── PaymentAlreadyUsed          payment_already_used  (the same payment presented twice)
    │       ├── InvalidApiKey               invalid_api_key
    │       ├── AmountMismatch              amount_mismatch       (facilitator: exact value is not the price)
    │       ├── DuplicateSettlement         duplicate_settlement  (facilitator: the payment was settled already)
    │       ├── WrongFacilitator            wrong_facilitator     (upto: the Permit2 names another facilitator)
    │       └── WrongSpender                wrong_spender         (upto: the Permit2 names another spender)
    ├── InsufficientFunds                   insufficient_funds
    ├── LedgerConflict                      ledger_conflict
    │   ├── IdempotencyConflict             idempotency_conflict  (same id, different fields)
    │   ├── HoldNotOpen                     hold_not_open
    │   ├── SettleExceedsHold               settle_exceeds_hold
    │   ├── SplitMispriced                  split_mispriced       (a split's parts are not its prices and fee)
    │   ├── FeeNotInForce                   fee_not_in_force      (a split names a pool fee not in force)
    │   ├── RegistrationNotInForce          registration_not_in_force  (not the provider's newest registration)
    │   │   └── ProviderWithdrawn           provider_withdrawn    (the registration in force is withdrawn)
    │   └── RefundExceedsCredit             refund_exceeds_credit (refunds above what the settle credited)
    ├── NotFound                            not_found
    │   ├── UnknownLog                      unknown_log           (a witness has no log with this origin)
    │   └── model_server.errors.ModelNotFound  model_not_found
    ├── TlogError                           tlog_error            (another party's transparency-log word fails)
    │   ├── UnverifiedNote                  unverified_note       (no known key signed it, or a known key's line fails)
    │   ├── QuorumNotMet                    quorum_not_met        (too few witnesses cosigned; names the missing)
    │   ├── InvalidProof                    invalid_proof         (an inclusion or consistency proof does not verify)
    │   ├── OldSizeMismatch                 old_size_mismatch     (witness: old size is not the size it holds)
    │   ├── InconsistentCheckpoints         inconsistent_checkpoints  (two checkpoints no log may sign both of)
    │   └── HistoryRewritten                history_rewritten     (a source serves what its log never signed)
    ├── WalletError                         wallet_error
    │   ├── WrongPassword                   wrong_password
    │   ├── WalletExists                    wallet_exists
    │   └── KeystoreInvalid                 keystore_invalid
    ├── LedgerNotInitialized                not_initialized
    ├── WitnessUnavailable                  witness_unavailable   (client side: a witness unreachable or failing)
    ├── StorageUnavailable                  storage_unavailable   (also: a ledger API that cannot be reached)
    │   └── CommitOutcomeUnknown            commit_outcome_unknown  (the database went away mid-commit)
    ├── gateway.wire.errors
    │   ├── UpstreamError                   upstream_error        (model down, timed out, or 5xx)
    │   ├── ReceiptInvalid                  receipt_invalid       (client side: a receipt or proof fails)
    │   └── SpendLimitExceeded              spend_limit_exceeded  (client side: the policy refused to pay)
    └── model_server.errors.ModelUnavailable  model_unavailable  (the model extra or weights are missing)

Each class has a stable machine-readable ``code`` and keeps the context a caller needs in
``details`` (amounts as base-unit strings). HTTP statuses are not part of the tree: they live
in one table, ``gateway.server.error_handlers.STATUS_BY_ERROR``.

Codes map back to classes through an ``ErrorRegistry``: a table written down class by class,
never whatever subclasses happen to be imported (a private subclass such as a storage
backend's retry signal can never be returned). ``LEDGER_ERRORS`` is this module's part;
``gateway.wire.errors.ERRORS`` adds the gateway's and the model server's classes, and is the
table clients use. A code that is not in a table comes back as the ``InferpayError`` root with
its code, message and details kept.
This module must never import anything but the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
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


class NotAPayee(AuthorizationError):
    code = "not_a_payee"


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


class SplitMispriced(LedgerConflict):
    code = "split_mispriced"


class FeeNotInForce(LedgerConflict):
    code = "fee_not_in_force"


class RegistrationNotInForce(LedgerConflict):
    code = "registration_not_in_force"


class ProviderWithdrawn(RegistrationNotInForce):
    code = "provider_withdrawn"


class RefundExceedsCredit(LedgerConflict):
    code = "refund_exceeds_credit"


class NotFound(InferpayError):
    code = "not_found"


class UnknownLog(NotFound):
    code = "unknown_log"


class MalformedNote(InvalidInput):
    code = "malformed_note"


class MalformedKey(MalformedNote):
    code = "malformed_key"


class MalformedCheckpoint(MalformedNote):
    code = "malformed_checkpoint"


class MalformedTilePath(InvalidInput):
    code = "malformed_tile_path"


class MalformedTile(InvalidInput):
    code = "malformed_tile"


class MalformedTlogProof(InvalidInput):
    code = "malformed_tlog_proof"


class MalformedWitnessRequest(InvalidInput):
    code = "malformed_witness_request"


class MalformedPolicy(InvalidInput):
    code = "malformed_policy"


class WitnessConfigError(InvalidInput):
    code = "witness_config_error"


class WitnessUnavailable(InferpayError):
    code = "witness_unavailable"


class TlogError(InferpayError):
    code = "tlog_error"


class UnverifiedNote(TlogError):
    code = "unverified_note"


class QuorumNotMet(TlogError):
    """Details: ``missing`` (policy names of the witnesses that did not cosign), ``quorum``."""

    code = "quorum_not_met"


class InvalidProof(TlogError):
    code = "invalid_proof"


class OldSizeMismatch(TlogError):
    """Details: ``size``, the tree size the witness holds for the origin (its 409 body)."""

    code = "old_size_mismatch"


class InconsistentCheckpoints(TlogError):
    """Details: ``origin``, ``old_note`` and ``new_note`` (both signed notes, as text): the evidence."""

    code = "inconsistent_checkpoints"


class HistoryRewritten(TlogError):
    """A log's source served an entry, tile or block that contradicts what the log signed (its
    checkpoint, or a sealer-signed block). Details: ``evidence`` (the file kept), and ``index``
    (the entry) or ``height`` (the block) where known."""

    code = "history_rewritten"


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


class CommitOutcomeUnknown(StorageUnavailable):
    """The connection to the database broke while a transaction was being committed, and the
    database stayed away: it may or may not hold the transaction, and nobody can say until it is
    back. Unlike its parent, this is not "nothing was done". The transaction is applied at most
    once whatever happens: ask for it by ``txId`` later, or submit the same signed request again."""

    code = "commit_outcome_unknown"


class ErrorRegistry:
    """Error classes by code, from a list someone wrote down.

    Refuses a duplicate code and any class that is not public (a name starting with "_"), so
    the lookup can only ever return a class a caller can import and catch by name.
    """

    def __init__(self, classes: Iterable[type[InferpayError]]) -> None:
        table: dict[str, type[InferpayError]] = {InferpayError.code: InferpayError}
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, InferpayError)):
                raise TypeError(f"{cls!r} is not an InferpayError class")
            if cls.__name__.startswith("_"):
                raise ValueError(f"{cls.__module__}.{cls.__name__} is private and cannot be registered")
            known = table.get(cls.code)
            if known is not None and known is not cls:
                raise ValueError(f"code {cls.code!r} is both {known.__name__} and {cls.__name__}")
            table[cls.code] = cls
        self._by_code: Mapping[str, type[InferpayError]] = MappingProxyType(table)

    def extended(self, classes: Iterable[type[InferpayError]]) -> ErrorRegistry:
        """This table plus ``classes`` (the same rules apply to the new ones)."""
        return ErrorRegistry([*self._by_code.values(), *classes])

    @property
    def by_code(self) -> Mapping[str, type[InferpayError]]:
        return self._by_code

    @property
    def classes(self) -> tuple[type[InferpayError], ...]:
        return tuple(self._by_code.values())

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def class_for(self, code: str) -> type[InferpayError]:
        return self._by_code.get(code, InferpayError)

    def from_code(self, code: str, message: str, **details: Any) -> InferpayError:
        """Rebuild the error a server raised from its code, so callers catch the same class.
        An unknown code gives the root class, still answering ``.code`` with the server's code."""
        cls = self.class_for(code)
        error = cls(message, **details)
        if cls.code != code:
            # An instance attribute shadows the ClassVar on this one object only: the caller
            # still sees the server's code (and to_dict() renders it), the class is unchanged.
            error.__dict__["code"] = code
        return error


LEDGER_ERRORS = ErrorRegistry(
    (
        InvalidInput,
        InvalidAmount,
        InvalidAddress,
        MalformedRecord,
        UnknownWallet,
        AuthorizationError,
        InvalidSignature,
        HighSSignature,
        WrongDomain,
        NotYetValid,
        AuthorizationExpired,
        NonceReused,
        Unauthorized,
        AllowanceExhausted,
        AllowanceExpired,
        AllowanceRevoked,
        NotAPayee,
        InsufficientFunds,
        LedgerConflict,
        IdempotencyConflict,
        HoldNotOpen,
        SettleExceedsHold,
        SplitMispriced,
        FeeNotInForce,
        RegistrationNotInForce,
        ProviderWithdrawn,
        RefundExceedsCredit,
        NotFound,
        UnknownLog,
        MalformedNote,
        MalformedKey,
        MalformedCheckpoint,
        MalformedTilePath,
        MalformedTile,
        MalformedTlogProof,
        MalformedWitnessRequest,
        MalformedPolicy,
        WitnessConfigError,
        WitnessUnavailable,
        TlogError,
        UnverifiedNote,
        QuorumNotMet,
        InvalidProof,
        OldSizeMismatch,
        InconsistentCheckpoints,
        HistoryRewritten,
        WalletError,
        WrongPassword,
        WalletExists,
        KeystoreInvalid,
        LedgerNotInitialized,
        StorageUnavailable,
        CommitOutcomeUnknown,
    )
)


def error_classes() -> dict[str, type[InferpayError]]:
    """The ledger's error classes by code (``gateway.wire.errors.ERRORS`` has the whole tree's)."""
    return dict(LEDGER_ERRORS.by_code)


def error_from_code(code: str, message: str, **details: Any) -> InferpayError:
    """Rebuild a ledger error from its code (``LEDGER_ERRORS``); any other code gives the root."""
    return LEDGER_ERRORS.from_code(code, message, **details)

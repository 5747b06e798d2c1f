"""One table from error class to HTTP status, and one JSON shape for every error.

``{"error": {"code": ..., "message": ..., ...details}}``. A client's mistake is never a 500:
werkzeug's own errors (404, 405, 413) get the same shape. The client SDK maps ``code`` back
to the same exception classes (``gateway.wire.errors.ERRORS``; the tree is drawn in
``ledger.errors``). ``STATUS_BY_ERROR`` is the only place a status is chosen: every registered
class resolves (through its own row or its nearest ancestor's) to a row other than the root's,
and tests/gateway/test_error_registry.py holds every class to that. This module must never
choose a status anywhere but in that table.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from gateway.wire import errors as gw
from ledger import errors as le
from model_server import errors as ms

log = logging.getLogger("inferpay.errors")
# What a caller is told when the ledger's storage fails: the code and this. The storage's own
# message names the database (a file path; a PostgreSQL host, port, user and schema): the
# operator's to read in the log, no caller's.
STORAGE_UNAVAILABLE_MESSAGE = "the ledger's storage is unavailable; try again shortly"
# Names the transaction (txId, in the details), never the database.
COMMIT_OUTCOME_UNKNOWN_MESSAGE = (
    "the ledger's storage went away while this was being recorded; whether it was is unknown until it "
    "is back: look up txId then (it is recorded at most once; the same signed request may be sent again)"
)

STATUS_BY_ERROR: dict[type[le.InferpayError], int] = {
    # The client's request is wrong: fix it and retry.
    le.InvalidInput: 400,
    gw.MalformedPayment: 400,
    ms.InvalidEmbeddingRequest: 400,
    ms.EmptyInput: 400,
    ms.TooManyInputs: 400,
    ms.InputTooLong: 400,  # not 413: the body is small enough, the text is longer than the model reads
    le.UnknownWallet: 404,
    # The payment is not acceptable: 402 invites paying again, properly.
    le.AuthorizationError: 402,
    le.InsufficientFunds: 402,
    # A credential (API key) that cannot pay any more: paying differently will not help, 401.
    gw.InvalidApiKey: 401,
    le.AllowanceExpired: 401,
    le.AllowanceRevoked: 401,
    le.NotAPayee: 403,  # a refund of a settle that paid the signer nothing: not theirs to refund
    le.LedgerConflict: 409,
    le.NotFound: 404,
    ms.ModelNotFound: 404,  # as OpenAI answers an unknown model
    le.WalletError: 400,
    le.WrongPassword: 401,  # the secret presented is wrong, like a bad API key
    le.WalletExists: 409,  # conflicts with state that already exists, like a LedgerConflict
    # A keystore is only ever read from the server's own disk: unreadable means our fault.
    le.KeystoreInvalid: 500,
    # The gateway's own configuration: raised at start-up; reaching a request is our bug, not theirs.
    gw.ConfigError: 500,
    gw.RateLimited: 429,  # too many calls, or too much spend, in a window: retry after it ends
    gw.UpstreamError: 502,
    gw.NoProviderWithinPrice: 402,  # pay more (a higher max_price) and it may be served
    gw.NoProviderAvailable: 503,  # nobody can serve this model now: try again later
    # Client-side checks of another party's word. Should a server ever raise one (checking an
    # upstream's receipt or proof), that party failed us: a bad gateway.
    gw.ReceiptInvalid: 502,
    # Client-side: the payer's own policy refused to pay. A server relaying it says "not paid".
    gw.SpendLimitExceeded: 402,
    # Transparency logs (ledger/tlog, the witness): another party's signed word does not hold.
    # Malformed tlog input is InvalidInput (400) like any other; an unknown log is a NotFound (404).
    le.TlogError: 422,
    le.UnverifiedNote: 403,  # tlog-witness: no signature from a trusted key is 403 Forbidden
    le.QuorumNotMet: 403,
    le.InvalidProof: 422,  # tlog-witness: a consistency proof that does not verify is 422
    le.OldSizeMismatch: 409,  # tlog-witness: the old size is not the one held (body: that size)
    le.InconsistentCheckpoints: 409,
    le.WitnessConfigError: 500,  # the witness's own config: raised at start-up, like ConfigError
    le.WitnessUnavailable: 502,  # a witness the gateway pushes to is down: a bad gateway upstream
    le.HistoryRewritten: 409,  # raised by a mirror, not a server; like two checkpoints, a conflict
    le.StorageUnavailable: 503,
    le.LedgerNotInitialized: 503,
    ms.ModelUnavailable: 503,  # the model extra or weights are missing: retry once it is installed
    le.InferpayError: 500,
}


def status_for(error: le.InferpayError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_body(error: le.InferpayError) -> dict[str, Any]:
    return {"error": error.to_dict()}


def error_headers(error: le.InferpayError) -> dict[str, str]:
    """HTTP headers an error's details call for: ``Retry-After`` (RFC 9110, whole seconds)."""
    retry = error.details.get("retry_after_s")
    return {"Retry-After": str(retry)} if isinstance(retry, int) else {}


def register(app: Flask) -> None:
    @app.errorhandler(le.InferpayError)
    def inferpay_error(error: le.InferpayError) -> Any:
        if isinstance(error, le.CommitOutcomeUnknown):
            log.warning("answered commit_outcome_unknown: %s", error.message)
            error = le.CommitOutcomeUnknown(COMMIT_OUTCOME_UNKNOWN_MESSAGE, **error.details)
        elif isinstance(error, le.StorageUnavailable):
            log.warning("answered storage_unavailable: %s", error.message)
            error = le.StorageUnavailable(STORAGE_UNAVAILABLE_MESSAGE)
        response = jsonify(error_body(error))
        response.status_code = status_for(error)
        response.headers.update(error_headers(error))
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "http_error").lower().replace(" ", "_")
        response = jsonify({"error": {"code": code, "message": error.description}})
        response.status_code = error.code or 500
        for name, value in error.get_headers():  # e.g. a 405's Allow
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

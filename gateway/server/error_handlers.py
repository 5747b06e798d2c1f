"""One table from error class to HTTP status, and one JSON shape for every error.

``{"error": {"code": ..., "message": ..., ...details}}``. A client's mistake is never a 500:
werkzeug's own errors (404, 405, 413) get the same shape. The client SDK maps ``code`` back
to the same exception classes (``ledger.errors.error_from_code``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from gateway.wire import errors as gw
from ledger import errors as le

STATUS_BY_ERROR: dict[type[le.InferpayError], int] = {
    le.InvalidInput: 400,
    le.UnknownWallet: 404,
    le.AuthorizationError: 402,
    gw.InvalidApiKey: 401,
    le.AllowanceExpired: 401,
    le.AllowanceRevoked: 401,
    le.InsufficientFunds: 402,
    le.LedgerConflict: 409,
    le.NotFound: 404,
    le.WalletError: 400,
    gw.UpstreamError: 502,
    le.StorageUnavailable: 503,
    le.LedgerNotInitialized: 503,
    le.InferpayError: 500,
}


def status_for(error: le.InferpayError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_body(error: le.InferpayError) -> dict[str, Any]:
    return {"error": error.to_dict()}


def register(app: Flask) -> None:
    @app.errorhandler(le.InferpayError)
    def inferpay_error(error: le.InferpayError) -> Any:
        return jsonify(error_body(error)), status_for(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "http_error").lower().replace(" ", "_")
        response = jsonify({"error": {"code": code, "message": error.description}})
        response.status_code = error.code or 500
        for name, value in error.get_headers():  # e.g. a 405's Allow
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

"""The witness over HTTP: ``create_app(config)``, one route, ``POST /add-checkpoint``, exactly as
c2sp.org/tlog-witness has it, plus ``GET /health`` (its name and vkey, for operators).

Statuses are the protocol's, so they are chosen here, in one table (``STATUS_BY_ERROR``), not in
the gateway's: the witness imports ``ledger`` only. A 200 answers cosignature lines; a 409 for a
wrong old size answers ``<size>\\n`` as ``text/x.tlog.size``; every other refusal is one line of
text/plain ending in the error's code. It must never cosign anywhere but through ``Witness``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ledger import errors as le
from ledger.tlog.witness_protocol import (
    MAX_ADD_CHECKPOINT_SIZE,
    SIZE_CONTENT_TYPE,
    format_signature_lines,
    format_size_body,
)
from witness.config import WitnessConfig
from witness.core import Witness
from witness.keys import load_or_create_key
from witness.store import WitnessStore

EXTENSION = "inferpay.witness"
log = logging.getLogger("inferpay.witness")

STATUS_BY_ERROR: dict[type[le.InferpayError], int] = {
    le.InvalidInput: 400,  # a malformed body; old size above the checkpoint's
    le.UnknownLog: 404,
    le.UnverifiedNote: 403,
    le.OldSizeMismatch: 409,
    le.InconsistentCheckpoints: 409,  # the spec: same size, another root is a 409 Conflict
    le.InvalidProof: 422,
    le.StorageUnavailable: 503,
    le.InferpayError: 500,
}


def status_for(error: le.InferpayError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


def create_app(config: WitnessConfig | dict[str, Any]) -> Flask:
    """The witness app for one worker process: its key, its store, its ``Witness``."""
    if isinstance(config, dict):
        config = WitnessConfig.from_dict(config)
    signer, _ = load_or_create_key(config.key_file, config.name)
    store = WitnessStore(config.db_path)
    witness = Witness(signer, {log.origin: log.verifier for log in config.logs}, store)
    app = Flask("inferpay.witness")
    app.config["MAX_CONTENT_LENGTH"] = MAX_ADD_CHECKPOINT_SIZE
    app.register_blueprint(witness_blueprint(witness))

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok", "name": signer.name, "vkey": signer.vkey}

    return app


def witness_blueprint(witness: Witness) -> Blueprint:
    """``POST /add-checkpoint`` over ``witness``, with the protocol's answers for its refusals;
    the witness's own app mounts it, and so does a mirror that witnesses the log it copies."""
    blueprint = Blueprint("witness", __name__)

    @blueprint.record_once
    def remember(state: Any) -> None:
        state.app.extensions[EXTENSION] = witness

    @blueprint.post("/add-checkpoint")
    def add_checkpoint() -> Response:
        if (request.content_length or 0) > MAX_ADD_CHECKPOINT_SIZE:  # before reading any of it
            raise RequestEntityTooLarge(f"an add-checkpoint request is at most {MAX_ADD_CHECKPOINT_SIZE} bytes")
        cosignatures = witness.add_checkpoint(request.get_data(cache=False))
        return Response(format_signature_lines(cosignatures), 200, content_type="text/plain; charset=utf-8")

    @blueprint.errorhandler(le.InferpayError)
    def refused(error: le.InferpayError) -> Response:
        if isinstance(error, le.OldSizeMismatch):
            return Response(format_size_body(int(error.details["size"])), 409, content_type=SIZE_CONTENT_TYPE)
        if isinstance(error, le.StorageUnavailable):  # its message names the state file: the log's, not the caller's
            log.warning("answered storage_unavailable: %s", error.message)
            error = le.StorageUnavailable("the witness's storage is unavailable; try again shortly")
        line = " ".join(error.message.split())
        return Response(f"{line} [{error.code}]\n", status_for(error), content_type="text/plain; charset=utf-8")

    return blueprint


def close_app(app: Flask) -> None:
    witness: Witness = app.extensions[EXTENSION]
    witness.store.close()

"""The embedding server's errors, in inferpay's one tree (drawn in ``ledger.errors``).

Every class here is listed in ``MODEL_SERVER_ERRORS``, which ``gateway.wire.errors`` adds to the
table clients map codes back through; its HTTP status is a row of ``STATUS_BY_ERROR`` in
``gateway.server.error_handlers``, never a handler of the server's own. This module must never
import anything but ``ledger.errors``: clients load it without Flask or torch.
"""

from __future__ import annotations

from ledger.errors import InferpayError, InvalidInput, NotFound


class InvalidEmbeddingRequest(InvalidInput):
    code = "invalid_request"


class EmptyInput(InvalidInput):
    code = "empty_input"


class TooManyInputs(InvalidInput):
    code = "too_many_inputs"


class InputTooLong(InvalidInput):
    code = "input_too_long"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelUnavailable(InferpayError):
    """The server's own fault: the model extra is not installed or the weights failed to load."""

    code = "model_unavailable"


# The model server's part of the registry, written down (see ledger.errors.ErrorRegistry).
MODEL_SERVER_ERRORS: tuple[type[InferpayError], ...] = (
    InvalidEmbeddingRequest,
    EmptyInput,
    TooManyInputs,
    InputTooLong,
    ModelNotFound,
    ModelUnavailable,
)

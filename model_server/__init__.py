"""The embedding model server: the upstream the gateway sells (``model_server.app``).

The app (Flask, and torch once a model loads) is ``model_server.app``; the errors it answers
with are ``model_server.errors``. This package's ``__init__`` must never import either eagerly:
a client that maps the server's error codes loads ``model_server.errors`` alone, without Flask.
The app's public names stay importable from here (``from model_server import serve_model``).
"""

from __future__ import annotations

from typing import Any

_APP_NAMES = frozenset(
    {
        "DEFAULT_MODEL_NAME",
        "MAX_INPUTS",
        "MAX_INPUT_CHARS",
        "MAX_REQUEST_BYTES",
        "SUPPORTED_MODELS",
        "EmbeddingModel",
        "EmbeddingRequest",
        "ModelSpec",
        "create_model_app",
        "load_embedding_model",
        "parse_embedding_request",
        "serve_model",
    }
)


def __getattr__(name: str) -> Any:
    """Load the app on first use (PEP 562), so ``model_server.errors`` stays Flask-free."""
    if name in _APP_NAMES:
        from model_server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

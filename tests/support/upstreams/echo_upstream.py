"""A deterministic FAKE OpenAI embeddings upstream, for gateway tests only.

It runs no model: each input's "embedding" is 8 numbers derived from a SHA-256 of its text, and
its token count is its number of whitespace-separated words, so a test can predict exactly what
a metered route must charge (``usage.prompt_tokens`` = words over all inputs). The wire format is
OpenAI's: ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
"usage": {"prompt_tokens", "total_tokens"}}``, with ``encoding_format`` ``float`` (default) or
``base64`` (little-endian float32, which the openai SDK asks for when the caller does not say).

Routes: ``POST /v1/embeddings``, ``POST /v1/echo`` (answers what it received: method, path,
query, headers, body; lets a test see what the gateway forwards), ``GET /health``.

Request headers that make it misbehave on purpose:

- ``X-Test-Delay-Ms: N``   sleep N ms before answering
- ``X-Test-Fail: 500``     answer 500 with a JSON error
- ``X-Test-Fail: 404``     answer 404 with a JSON error (the client's own mistake, passed through)
- ``X-Test-Fail: timeout`` sleep far longer than any sane client timeout before answering

Never use it as a real upstream: its vectors mean nothing.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any

from flask import Flask, jsonify, request

MODEL_NAME = "fake-echo-embed"
DIMENSIONS = 8
# Longer than any gateway timeout in the tests, and still finite, so a stray request frees its thread.
HANG_SECONDS = 60.0
FAILURE_MODES = ("500", "404", "timeout")


def create_echo_app() -> Flask:
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok", "model": MODEL_NAME})

    @app.post("/v1/echo")
    def echo() -> Any:
        failed = _misbehave()
        if failed is not None:
            return failed
        return jsonify(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string.decode("latin-1"),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": request.get_data().decode("utf-8", errors="replace"),
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    @app.post("/v1/embeddings")
    def embeddings() -> Any:
        failed = _misbehave()
        if failed is not None:
            return failed
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "the request body must be a JSON object")
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return _error(400, "invalid_request", "'input' must be a non-empty string or list of strings")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _error(400, "invalid_request", "'encoding_format' must be float or base64")
        tokens = sum(len(t.split()) for t in texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(_vector(text), encoding)}
            for i, text in enumerate(texts)
        ]
        return jsonify(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or MODEL_NAME),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return app


def word_count(texts: str | list[str]) -> int:
    """The token count this upstream reports for ``texts`` (for tests to predict charges)."""
    return sum(len(t.split()) for t in ([texts] if isinstance(texts, str) else texts))


def _misbehave() -> Any:
    raw = request.headers.get("X-Test-Delay-Ms", "0")
    millis = int(raw) if raw.isdigit() else 0
    time.sleep(min(millis, 60_000) / 1000)
    failure = request.headers.get("X-Test-Fail")
    if failure is None:
        return None
    if failure not in FAILURE_MODES:
        return _error(400, "invalid_request", f"X-Test-Fail must be one of {', '.join(FAILURE_MODES)}")
    if failure == "timeout":
        time.sleep(HANG_SECONDS)
        return None
    return _error(int(failure), "upstream_failure", f"simulated upstream failure (X-Test-Fail: {failure})")


def _error(status: int, code: str, message: str) -> Any:
    return jsonify({"error": {"code": code, "message": message}}), status


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:DIMENSIONS]]


def _encode(vector: list[float], encoding: str) -> Any:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

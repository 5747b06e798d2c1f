"""A deterministic FAKE OpenAI chat-completions upstream, for tests only.

No generative model can run offline here, so this server does not generate anything: it echoes
the words of the last user message back (capped by ``max_tokens`` / ``max_completion_tokens``)
and counts tokens as whitespace-separated words. What it does reproduce faithfully is the wire
format a paying gateway must handle: the non-streaming JSON with ``usage``, and the streaming
SSE chunks (``data: {...}`` lines ending with ``data: [DONE]``), where, exactly as OpenAI does,
``stream_options: {"include_usage": true}`` adds a last chunk with empty ``choices`` and the
``usage`` object, every earlier chunk carrying ``"usage": null``.

Request headers that make it misbehave on purpose:

- ``X-Test-Delay-Ms: N``  sleep N ms before each chunk (before the whole body when not streaming)
- ``X-Test-Fail: 500``      answer 500 with a JSON error
- ``X-Test-Fail: timeout``  sleep far longer than any sane client timeout before answering
- ``X-Test-Fail: drop``     close the connection mid-body (mid-stream, or short of Content-Length)
- ``X-Test-Fail: stall``    stream: send the first chunks, then go silent (a read timeout mid-stream)

Never use it as a real upstream: its answers are meaningless on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

MODEL_NAME = "fake-echo-chat"
# "Longer than any sane timeout" and still finite, so a forgotten request cannot pin a thread forever.
HANG_SECONDS = 600.0
FAILURE_MODES = ("500", "timeout", "drop", "stall")


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def create_chat_app() -> Flask:
    app = Flask(__name__)

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest) -> Any:
        return _error(400, "invalid_request", error.message)

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok", "model": MODEL_NAME})

    @app.get("/v1/models")
    def models() -> Any:
        return jsonify(
            {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "tests"}]}
        )

    @app.post("/v1/chat/completions")
    def chat_completions() -> Any:
        delay = _delay_seconds()
        failure = request.headers.get("X-Test-Fail")
        if failure is not None and failure not in FAILURE_MODES:
            raise BadRequest(f"X-Test-Fail must be one of {', '.join(FAILURE_MODES)}")
        body = request.get_json(force=True, silent=True)
        completion = _parse(body)

        if failure == "500":
            time.sleep(delay)
            return _error(500, "upstream_failure", "simulated upstream failure (X-Test-Fail: 500)")
        if failure == "timeout":
            time.sleep(HANG_SECONDS)
        if completion["stream"]:
            return Response(
                _stream(completion, delay, failure, request.environ),
                mimetype="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        time.sleep(delay)
        payload = json.dumps(_completion_object(completion)).encode()
        if failure == "drop":
            half = payload[: len(payload) // 2]
            return Response(
                _drop_after([half], request.environ),
                mimetype="application/json",
                headers={"Content-Length": str(len(payload))},
            )
        return Response(payload, mimetype="application/json")

    return app


def _error(status: int, code: str, message: str) -> Any:
    return jsonify({"error": {"code": code, "message": message}}), status


def _delay_seconds() -> float:
    raw = request.headers.get("X-Test-Delay-Ms", "0")
    try:
        millis = int(raw)
    except ValueError:
        raise BadRequest("X-Test-Delay-Ms must be an integer") from None
    if not 0 <= millis <= 60_000:
        raise BadRequest("X-Test-Delay-Ms must be between 0 and 60000")
    return millis / 1000.0


def _words(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return content.split()
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        words: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                words.extend(part["text"].split())
        return words
    raise BadRequest("message content must be a string, a list of content parts, or null")


def _parse(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    prompt_tokens = 0
    last_user: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'")
        words = _words(message.get("content"))
        prompt_tokens += len(words)
        if message["role"] == "user":
            last_user = words
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadRequest("'max_tokens' must be a positive integer")
    reply = last_user if limit is None else last_user[:limit]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "created": int(time.time()),
        "model": model,
        "reply": reply,
        "finish_reason": "length" if len(reply) < len(last_user) else "stop",
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply),
            "total_tokens": prompt_tokens + len(reply),
        },
        "stream": stream,
        "include_usage": bool(options.get("include_usage", False)),
    }


def _completion_object(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "object": "chat.completion",
        "created": c["created"],
        "model": c["model"],
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(c["reply"]), "refusal": None},
                "logprobs": None,
                "finish_reason": c["finish_reason"],
            }
        ],
        "usage": c["usage"],
    }


def _chunks(c: dict[str, Any]) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": c["id"],
            "object": "chat.completion.chunk",
            "created": c["created"],
            "model": c["model"],
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if c["include_usage"]:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": ""}, None)
    for i, word in enumerate(c["reply"]):
        yield chunk({"content": word if i == 0 else " " + word}, None)
    yield chunk({}, c["finish_reason"])
    if c["include_usage"]:
        final = chunk({}, None)
        final["choices"] = []
        final["usage"] = c["usage"]
        yield final


def _stream(c: dict[str, Any], delay: float, failure: str | None, environ: dict[str, Any]) -> Iterator[bytes]:
    events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in _chunks(c)]
    events.append(b"data: [DONE]\n\n")
    if failure in ("drop", "stall"):
        # Enough to have started (role chunk and a word at least), never the whole answer.
        cut = max(1, min(2, len(events) - 2))
        yield from _paced(events[:cut], delay)
        if failure == "stall":
            time.sleep(HANG_SECONDS)
            return
        yield from _drop_after([], environ)
        return
    yield from _paced(events, delay)


def _paced(events: list[bytes], delay: float) -> Iterator[bytes]:
    for event in events:
        if delay:
            time.sleep(delay)
        yield event


def _drop_after(parts: list[bytes], environ: dict[str, Any]) -> Iterator[bytes]:
    """Send ``parts``, then cut the TCP connection under the server's feet.

    Raising ConnectionAbortedError afterwards makes werkzeug and gunicorn treat the response as
    a dropped connection instead of writing an error page or a chunked terminator into it.
    """
    yield from parts
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("simulated dropped connection (X-Test-Fail: drop)")

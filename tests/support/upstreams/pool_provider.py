"""A FAKE pool provider for tests: the fake chat upstream (``chat_upstream``, nothing generative
runs offline) with a provider-wide behaviour a test can set, and change, over HTTP.

``create_provider_app(mode)``; ``POST /test/mode {"mode": ...}`` changes it while running:

- ``ok``       answers as the chat upstream does (usage = whitespace words)
- ``500``      every chat call answers 500 (its /v1/models probe still answers 200)
- ``inflate``  reports usage a million times above the truth (a provider overbilling)
- ``garbage``  reports usage that is no usage at all (``"prompt_tokens": "lots"``)
- ``huge``     answers 200 with 64 MiB of body, streamed without a length (a memory attack)
- ``slow``     answers 200 and then one byte every 200 ms for a minute (slowloris)
- ``redirect`` answers 302 to another host (a provider steering the gateway elsewhere)
- ``stall_stream`` a streamed call gets its first events, then nothing (for a test to SIGKILL
  the provider mid-stream); an unstreamed call is answered as ``ok``

``GET /test/calls`` answers how many chat calls it took. Never use it as a real upstream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, redirect, request

from tests.support.upstreams.chat_upstream import _parse, _stream, create_chat_app

MODES = ("ok", "500", "inflate", "garbage", "huge", "slow", "redirect", "stall_stream")
HUGE_BYTES = 64 * 1024 * 1024


def create_provider_app(mode: str = "ok") -> Any:
    app = create_chat_app()
    state = {"mode": mode, "calls": 0}
    lock = threading.Lock()

    @app.post("/test/mode")
    def set_mode() -> Any:
        wanted = (request.get_json(force=True) or {}).get("mode")
        if wanted not in MODES:
            return jsonify({"error": {"code": "bad_mode", "message": f"mode must be one of {MODES}"}}), 400
        state["mode"] = wanted
        return jsonify({"mode": wanted})

    @app.get("/test/calls")
    def calls() -> Any:
        return jsonify({"calls": state["calls"]})

    @app.before_request
    def misbehave() -> Any:
        if request.path != "/v1/chat/completions":
            return None
        with lock:
            state["calls"] += 1
        if state["mode"] == "500":
            return jsonify({"error": {"code": "provider_down", "message": "simulated provider failure"}}), 500
        if state["mode"] == "huge":
            return Response(_huge(), mimetype="application/json")
        if state["mode"] == "slow":
            return Response(_dribble(), mimetype="application/json")
        if state["mode"] == "redirect":
            return redirect("http://127.0.0.1:9/v1/chat/completions", code=302)
        if state["mode"] == "stall_stream":
            completion = _parse(request.get_json(force=True, silent=True))
            if completion["stream"]:  # the chat upstream's own stall: a role chunk and a word, then quiet
                return Response(_stream(completion, 0.0, "stall", request.environ), mimetype="text/event-stream")
        return None

    @app.after_request
    def rewrite_usage(response: Response) -> Response:
        if request.path != "/v1/chat/completions" or state["mode"] not in ("inflate", "garbage"):
            return response
        if response.mimetype != "application/json":
            return response
        body = json.loads(response.get_data())
        usage = body.get("usage") or {}
        if state["mode"] == "inflate":
            body["usage"] = {k: v * 1_000_000 for k, v in usage.items()}
        else:
            body["usage"] = {"prompt_tokens": "lots", "completion_tokens": None}
        response.set_data(json.dumps(body))
        return response

    return app


def _huge() -> Iterator[bytes]:
    chunk = b" " * (1024 * 1024)
    for _ in range(HUGE_BYTES // len(chunk)):
        yield chunk


def _dribble() -> Iterator[bytes]:
    yield b"{"
    for _ in range(300):
        time.sleep(0.2)
        yield b" "

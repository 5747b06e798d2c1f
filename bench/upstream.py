"""A fast local upstream for the benchmark: any POST (or GET) answers one fixed OpenAI-shaped
embeddings JSON with ``usage``, so metered routes have tokens to bill.

A bare WSGI callable (no Flask) under gunicorn: the point is to cost as little CPU as possible,
so that what the benchmark compares is the proxy in front of it, not the model behind it.
Runs no model; its vectors mean nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

PROMPT_TOKENS = 12
BODY = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789, 0.1011] * 4}],
        "model": "bench-fixed-embed",
        "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS},
    }
).encode()
HEALTH = b'{"status":"ok"}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # Read (and drop) the request body, as a real server would.
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    body = HEALTH if environ.get("PATH_INFO") == "/health" else BODY
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    from gateway.server.wsgi import gunicorn_application

    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16)
    ns = parser.parse_args()
    gunicorn_application(
        lambda: app,
        host="127.0.0.1",
        port=ns.port,
        workers=ns.workers,
        threads=ns.threads,
        proc_name="inferpay-bench-upstream",
        accesslog=False,
    ).run()


if __name__ == "__main__":
    main()

"""The pass-through baseline: the gateway with payment switched off, as a separate minimal app.

The gateway has no "payment off" switch, so this stands in for one: a Flask app with the same
catch-all route shape, forwarding with the same pooled client (``gateway.upstream.Upstream``,
the same timeouts and pool size as ``gateway.services.Services``), answering the upstream's
body and headers (``gateway.upstream.response_headers``), served by the same function the
gateway uses (``gateway.wsgi_server.serve_wsgi``: gunicorn gthread, same workers, threads,
timeout, keep-alive and access log). What it leaves out is exactly the payment step: decoding
and checking the x402 header, the hold, the settle, the receipt, the auto-sealer.
If the gateway gains a per-route ``payment = false`` option, the benchmark should use it instead.
"""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask, Response, request

from gateway.upstream import Upstream, response_headers


def create_app(upstream_base: str, threads: int, timeout_seconds: float) -> Flask:
    app = Flask("inferpay.bench.passthrough")
    # Same pool size rule as gateway.services.Services.build.
    upstream = Upstream(timeout_seconds, max_connections=max(16, threads * 2))
    targets = {"/v1/flat": upstream_base + "/v1/echo", "/v1/embeddings": upstream_base + "/v1/embeddings"}

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.route("/<path:_subpath>", methods=["GET", "POST"])
    def forward(_subpath: str) -> Response:
        target = targets.get(request.path)
        if target is None:
            return Response(b'{"error":"no route"}', status=404, mimetype="application/json")
        answer = upstream.send(request.method, target, dict(request.headers), request.get_data(), stream=False)
        return Response(answer.content, status=answer.status_code, headers=response_headers(answer))

    return app


def main() -> None:
    from gateway.wsgi_server import serve_wsgi

    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0)
    ns = parser.parse_args()
    serve_wsgi(
        lambda: create_app(ns.upstream, ns.threads, ns.timeout),
        host="127.0.0.1",
        port=ns.port,
        workers=ns.workers,
        threads=ns.threads,
        proc_name="inferpay-bench-passthrough",
        timeout=max(120, int(ns.timeout) + 30),  # gateway.server.serve_gateway's rule
    )


if __name__ == "__main__":
    main()

"""The official x402 Flask middleware as a peer: a resource server that sells the benchmark's
flat route (``POST /v1/flat`` -> the upstream's ``/v1/echo``) for the same price as the
gateway, verifying and settling every payment through inferpay's facilitator
(``inferpay facilitator``) as the x402 SDK's README tells a resource server to.

Nothing here is inferpay's payment code: the SDK's ``PaymentMiddleware`` with its sync HTTP
facilitator client, its ``exact`` EVM server scheme registered for the ledger's CAIP-2
network, and a handler that forwards the body to the upstream over a pooled connection
(urllib3), as a thin proxy would. Served by gunicorn with the gateway's workers and threads.

``python -m bench.x402_shop --port P --upstream URL --facilitator URL --network N --asset A
--pay-to ADDR --amount BASE_UNITS --token-name NAME --token-version V [--workers W --threads T]``
"""

from __future__ import annotations

import argparse
from typing import Any

PATH = "/v1/flat"
UPSTREAM_PATH = "/v1/echo"


def create_shop_app(ns: argparse.Namespace) -> Any:
    import urllib3
    from flask import Flask, Response, request
    from x402 import x402ResourceServerSync
    from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
    from x402.http.middleware.flask import PaymentMiddleware
    from x402.http.types import PaymentOption, RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.schemas import AssetAmount

    app = Flask("x402-bench-shop")
    pool = urllib3.PoolManager(maxsize=ns.threads, timeout=urllib3.Timeout(connect=5.0, read=60.0))
    upstream = ns.upstream.rstrip("/") + UPSTREAM_PATH

    @app.post(PATH)
    def flat() -> Any:
        answer = pool.request(
            "POST", upstream, body=request.get_data(), headers={"Content-Type": "application/json"}, retries=False
        )
        return Response(answer.data, status=answer.status, content_type=answer.headers.get("Content-Type"))

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    server = x402ResourceServerSync(HTTPFacilitatorClientSync(FacilitatorConfig(url=ns.facilitator)))
    # Our chain is no network the SDK knows: its exact scheme is registered by CAIP-2 id (the SDK's
    # own annotations disagree with its class here, as in tests/support/x402_resource_server.py).
    server.register(ns.network, ExactEvmServerScheme())  # type: ignore[arg-type]
    price = AssetAmount(
        amount=str(ns.amount), asset=ns.asset, extra={"name": ns.token_name, "version": ns.token_version}
    )
    routes = {
        f"POST {PATH}": RouteConfig(
            accepts=PaymentOption(scheme="exact", pay_to=ns.pay_to, price=price, network=ns.network),
            description="the benchmark's flat route behind the official x402 middleware",
        )
    }
    PaymentMiddleware(app, routes, server)
    return app


def main() -> None:
    from gateway.server.wsgi import gunicorn_application

    parser = argparse.ArgumentParser(prog="python -m bench.x402_shop")
    for name in ("upstream", "facilitator", "network", "asset", "pay-to", "token-name", "token-version"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    ns = parser.parse_args()
    gunicorn_application(
        lambda: create_shop_app(ns),
        host="127.0.0.1",
        port=ns.port,
        workers=ns.workers,
        threads=ns.threads,
        proc_name="inferpay-bench-x402-shop",
        accesslog=False,
    ).run()


if __name__ == "__main__":
    main()

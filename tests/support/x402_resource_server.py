"""An unmodified official x402 resource server (the SDK's Flask ``PaymentMiddleware``) whose
facilitator is inferpay's, for the facilitator's acceptance test. Nothing here is inferpay's:
it is what the README tells a resource server to write.

Served from its own process by ``tests.support.servers.run_wsgi_in_process``
(``"tests.support.x402_resource_server:create_resource_app"``, JSON args below). ``GET /paid``
costs ``amount`` base units of the ledger's token, paid to ``pay_to``; ``GET /health`` is free.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from x402 import x402ResourceServerSync
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.http.middleware.flask import PaymentMiddleware
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact import ExactEvmServerScheme
from x402.schemas import AssetAmount

PAID = "/paid"


def create_resource_app(
    facilitator_url: str,
    network: str,
    asset: str,
    pay_to: str,
    amount: int,
    max_timeout_seconds: int = 60,
    token_name: str = "inferpay",
    token_version: str = "1",
) -> Flask:
    app = Flask("x402-resource-server")

    @app.get(PAID)
    def paid() -> Any:
        return jsonify({"weather": "sunny", "paid": True})

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    # Our chain is no public network the SDK knows: register the exact scheme for it by its
    # CAIP-2 id, and state the price as an AssetAmount in our token, with the token's EIP-712
    # domain (name, version) in extra, which the SDK's client signs under.
    server = x402ResourceServerSync(HTTPFacilitatorClientSync(FacilitatorConfig(url=facilitator_url)))
    server.register(network, ExactEvmServerScheme())  # type: ignore[arg-type]
    price = AssetAmount(amount=str(amount), asset=asset, extra={"name": token_name, "version": token_version})
    routes = {
        f"GET {PAID}": RouteConfig(
            accepts=PaymentOption(
                scheme="exact",
                pay_to=pay_to,
                price=price,
                network=network,
                max_timeout_seconds=max_timeout_seconds,
            ),
            description="the weather, paid through inferpay's facilitator",
        )
    }
    PaymentMiddleware(app, routes, server)  # type: ignore[arg-type]
    return app

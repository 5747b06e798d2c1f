"""An unmodified official x402 resource server (the SDK's Flask ``PaymentMiddleware``) whose
facilitator is inferpay's, for the facilitator's acceptance test. Nothing here is inferpay's:
it is what the README tells a resource server to write.

Served from its own process by ``tests.support.servers.run_wsgi_in_process``
(``"tests.support.x402_resource_server:create_resource_app"``, JSON args below). ``GET /paid``
costs ``amount`` base units of the ledger's token, paid to ``pay_to`` (scheme ``exact``);
``GET /metered?cost=N`` is paid with scheme ``upto`` up to ``upto_max`` base units and costs
``N`` of them (the handler tells the middleware with the SDK's settlement override, as a
metered API would); ``GET /health`` is free.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from x402 import x402ResourceServerSync
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.http.middleware.flask import PaymentMiddleware, set_settlement_overrides
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact import ExactEvmServerScheme
from x402.mechanisms.evm.upto import UptoEvmServerScheme
from x402.schemas import AssetAmount

PAID = "/paid"
METERED = "/metered"


def create_resource_app(
    facilitator_url: str,
    network: str,
    asset: str,
    pay_to: str,
    amount: int,
    max_timeout_seconds: int = 60,
    token_name: str = "inferpay",
    token_version: str = "1",
    upto_max: int = 0,
) -> Flask:
    app = Flask("x402-resource-server")

    @app.get(PAID)
    def paid() -> Any:
        return jsonify({"weather": "sunny", "paid": True})

    @app.get(METERED)
    def metered() -> Any:
        cost = request.args.get("cost", str(upto_max))
        response = jsonify({"forecast": "a week of sun", "cost": cost})
        set_settlement_overrides(response, {"amount": cost})  # upto: charge what this call cost
        return response

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    # Our chain is no public network the SDK knows: register the exact scheme for it by its
    # CAIP-2 id, and state the price as an AssetAmount in our token, with the token's EIP-712
    # domain (name, version) in extra, which the SDK's client signs under.
    server = x402ResourceServerSync(HTTPFacilitatorClientSync(FacilitatorConfig(url=facilitator_url)))
    server.register(network, ExactEvmServerScheme())  # type: ignore[arg-type]
    # upto likewise: the facilitator's /supported names the facilitatorAddress the client's
    # Permit2 binds, which the SDK's upto server copies into the requirements itself.
    server.register(network, UptoEvmServerScheme())  # type: ignore[arg-type]
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
    if upto_max:
        routes[f"GET {METERED}"] = RouteConfig(
            accepts=PaymentOption(
                scheme="upto",
                pay_to=pay_to,
                price=AssetAmount(amount=str(upto_max), asset=asset),
                network=network,
                max_timeout_seconds=max_timeout_seconds,
            ),
            description="the forecast, paid up to a maximum through inferpay's facilitator",
        )
    PaymentMiddleware(app, routes, server)  # type: ignore[arg-type]
    return app

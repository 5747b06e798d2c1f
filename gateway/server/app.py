"""The gateway's Flask app factory: ``create_app(config)`` wires blueprints, the error table
and per-worker services. Every worker process calls it once, and ``close_app`` as it exits (the
auto-sealer's thread and lock, the upstream pool, the store); nothing lives at module level.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request

from gateway.server import access_log, error_handlers
from gateway.server.config import GatewayConfig
from gateway.server.metrics import CONTENT_TYPE, UNMATCHED, mark_worker_dead
from gateway.server.pool.checker import provider_figures
from gateway.server.services import EXTENSION, Services, services


def create_app(config: GatewayConfig, *, start_sealer: bool = True) -> Flask:
    """The whole gateway: the paid proxy, the ledger API, the explorer, the facilitator, OpenAPI, health."""
    return build_app("inferpay.gateway", config, start_sealer=start_sealer, paid_proxy=True)


def build_app(name: str, config: GatewayConfig, *, start_sealer: bool, paid_proxy: bool) -> Flask:
    """One app factory for the gateway and the stand-alone facilitator (``paid_proxy=False``)."""
    from gateway.server.explorer import explorer
    from gateway.server.facilitator import facilitator
    from gateway.server.ledger_api import ledger_api
    from gateway.server.openapi import openapi_bp
    from gateway.server.tlog_api import tlog_api

    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = Services.build(config, start_sealer=start_sealer)
    error_handlers.register(app)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(ledger_api, url_prefix="/ledger")
    app.register_blueprint(tlog_api, url_prefix="/ledger")
    app.register_blueprint(facilitator, url_prefix="/facilitator")
    app.register_blueprint(explorer, url_prefix="/explorer")
    if paid_proxy:
        from gateway.server.proxy import proxy

        app.register_blueprint(proxy)  # last: its catch-all route takes every other path

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Any:
        svc = services()
        witnesses = tuple(w.vkey.split("+", 1)[0] for w in svc.config.checkpoints.witnesses)
        pool = provider_figures(svc.pool.directory, svc.pool.board) if svc.pool is not None else None
        return Response(svc.metrics.exposition(svc.ledger, witnesses, pool), mimetype=None, content_type=CONTENT_TYPE)

    if any(r.pool for r in config.routes):
        app.add_url_rule("/pool", view_func=pool_info, methods=["GET"])

    access_log.register(app, route_label)

    @app.after_request
    def count_request(response: Response) -> Response:
        services().metrics.request(route_label(), request.method, response.status_code)
        return response

    return app


def pool_info() -> Any:
    """``GET /pool`` (served when a route has ``pool = true``): the compute pool as this worker
    routes it: the fee in force, each provider's registration, approval and figures."""
    svc = services()
    assert svc.pool is not None  # registered only when the config has a pool route
    view = svc.pool.directory.current()
    return {
        "accept": svc.config.pool.accept,
        "routes": [r.path for r in svc.config.routes if r.pool],
        "operator": svc.pay_to,
        "fee": view.fee.to_dict(),
        "poolVersion": view.version,
        "providers": provider_figures(svc.pool.directory, svc.pool.board),
        "units": {"latencyMs": "ms", "throughputTokensPerS": "output tokens per second"},
    }


def route_label() -> str:
    """A bounded name for the request's route: the configured paid route, or the URL rule that
    took it (``/ledger/accounts/<address>``), never the path as sent."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED
    if rule.endpoint == "proxy.paid_call":
        route = services().config.route_for(request.path)
        return route.path if route is not None else UNMATCHED
    return rule.rule


def close_app(app: Flask) -> None:
    """Release what ``create_app`` opened: the worker's ``Services``; and its live metrics."""
    opened: Services = app.extensions[EXTENSION]
    opened.close()
    mark_worker_dead(os.getpid())

"""``inferpay gateway``: serve ``create_app(config)`` with gunicorn, ``workers`` processes of
``threads`` threads each. Every worker opens the one ledger itself; the ledger's database
transactions keep them exact together (no overspend across workers)."""

from __future__ import annotations

from gateway.server.config import GatewayConfig
from gateway.server.wsgi import serve_wsgi


def serve_gateway(config: GatewayConfig) -> None:
    from gateway.server.app import create_app
    from gateway.server.services import Services

    Services.build(config, start_sealer=False).close()  # fail fast (bad home, payee) before forking
    serve_wsgi(
        lambda: create_app(config),
        host=config.host,
        port=config.port,
        workers=config.workers,
        threads=config.threads,
        proc_name="inferpay-gateway",
        timeout=max(120, int(config.upstream_timeout_seconds) + 30),
    )

"""The inferpay gateway: a paid, x402-compatible proxy in front of model endpoints.

Importing this package must stay cheap and must not start or import the web framework: the
client SDK (``gateway.client``) is used by programs that never run a server. The Flask app
lives in ``gateway.server.app`` (``create_app``), imported only by those who serve.
"""

from __future__ import annotations

from typing import Any


def create_app(config: Any) -> Any:
    """Build the Flask app for ``config`` (a ``gateway.server.config.GatewayConfig``); imports Flask lazily."""
    from gateway.server.app import create_app as _create_app

    return _create_app(config)

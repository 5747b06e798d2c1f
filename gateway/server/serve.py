"""``inferpay gateway``: serve ``create_app(config)`` with gunicorn, ``workers`` processes of
``threads`` threads each. Every worker opens the one ledger itself, and closes it as it exits;
the ledger's database transactions keep them exact together (no overspend across workers).
Their metrics meet in ``<home>/metrics/<port>`` (``gateway.server.metrics``), emptied at each start."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.server.config import GatewayConfig
from gateway.server.wsgi import gunicorn_application

if TYPE_CHECKING:
    from gunicorn.app.base import BaseApplication


def gateway_application(config: GatewayConfig) -> BaseApplication:
    """The gateway under gunicorn, not yet running: each worker builds its app after the fork
    and closes its ``Services`` as it exits."""
    from gateway.server.app import close_app, create_app
    from gateway.server.metrics import mark_worker_dead

    return gunicorn_application(
        lambda: create_app(config),
        host=config.host,
        port=config.port,
        workers=config.workers,
        threads=config.threads,
        proc_name="inferpay-gateway",
        timeout=max(120, int(config.upstream_timeout_seconds) + 30),
        on_worker_exit=close_app,
        on_child_exit=mark_worker_dead,
    )


def serve_gateway(config: GatewayConfig) -> None:
    from gateway.server.metrics import prepare_multiprocess
    from gateway.server.services import Services

    prepare_multiprocess(config.home, config.port)  # before the first metric, and before the fork (module docstring)
    # Set by the process, not the library: the workers forked below inherit it.
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream call is noise
    Services.build(config, start_sealer=False).close()  # fail fast (bad home, payee) before forking
    gateway_application(config).run()

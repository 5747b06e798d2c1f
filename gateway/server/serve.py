"""``inferpay gateway``: serve ``create_app(config)`` with gunicorn, ``workers`` processes of
``threads`` threads each. Every worker opens the one ledger itself, and closes it as it exits;
the ledger's database transactions keep them exact together (no overspend across workers).
Their metrics meet in ``<home>/metrics/<port>`` (``gateway.server.metrics``), emptied at each start.
SIGHUP reloads the config file (routes, prices, limits, witnesses) without dropping calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.server.config import GatewayConfig
from gateway.server.wsgi import gunicorn_application
from gateway.wire.errors import ConfigError
from ledger.errors import InferpayError

log = logging.getLogger("inferpay.gateway")

if TYPE_CHECKING:
    from gunicorn.app.base import BaseApplication


def gateway_application(config: GatewayConfig, reread: Callable[[], GatewayConfig] | None = None) -> BaseApplication:
    """The gateway under gunicorn, not yet running: each worker builds its app after the fork
    and closes its ``Services`` as it exits. With ``reread``, SIGHUP reloads the config: the new
    one is read and checked in the master (``check_config``); if good, new workers serve it while
    the old ones finish their calls; if bad, the reason is logged and the running one kept."""
    from gateway.server.app import close_app, create_app
    from gateway.server.metrics import mark_worker_dead

    current = [config]

    def reload() -> None:
        if reread is None:
            return
        try:
            fresh = reread()
            if (fresh.host, fresh.port, fresh.workers, fresh.threads) != (
                config.host,
                config.port,
                config.workers,
                config.threads,
            ):
                raise ConfigError("host, port, workers and threads change only with a restart")
            check_config(fresh)
        except InferpayError as exc:
            log.error("config reload refused, the running config is kept: %s [%s]", exc.message, exc.code)
            return
        current[0] = fresh
        log.info("config reloaded: %d routes", len(fresh.routes))

    return gunicorn_application(
        lambda: create_app(current[0]),
        host=config.host,
        port=config.port,
        workers=config.workers,
        threads=config.threads,
        proc_name="inferpay-gateway",
        accesslog=False,  # the app writes one JSON line per request instead (gateway.server.access_log)
        timeout=max(120, int(config.upstream_timeout_seconds) + 30),
        on_worker_exit=close_app,
        on_child_exit=mark_worker_dead,
        on_reload=reload,
    )


def _fixed(config: GatewayConfig) -> tuple[str, int, int, int]:
    """What a running gunicorn cannot change: its socket and its process and thread counts."""
    return config.host, config.port, config.workers, config.threads


def check_config(config: GatewayConfig) -> dict[str, Any]:
    """Open what ``config`` names (home, ledger, payee, keys) as a worker would, then close it;
    raise the first problem. What it found, for ``inferpay gateway --check``."""
    from gateway.server.services import Services

    opened = Services.build(config, start_sealer=False)
    try:
        head = opened.ledger.head()
        return {
            "routes": [r.path for r in config.routes],
            "ledger": opened.home.ledger_description,
            "payTo": opened.pay_to,
            "headHeight": head.header.height,
            "checkpointKey": opened.checkpoint_signer.vkey if opened.checkpoint_signer is not None else None,
            "witnesses": [w.url for w in config.checkpoints.witnesses],
            "rateLimits": len(config.rate_limits),
            "pool": _pool_found(opened),
        }
    finally:
        opened.close()


def _pool_found(opened: Any) -> dict[str, Any] | None:
    """The pool routes, whom they accept, and the providers the ledger has now (``--check``)."""
    if opened.pool is None:
        return None
    view = opened.pool.directory.refresh()
    return {
        "routes": [r.path for r in opened.config.routes if r.pool],
        "accept": opened.config.pool.accept,
        "providers": len(view.providers),
        "routable": len(view.routable()),
        "fee": view.fee.to_dict(),
    }


def serve_gateway(config: GatewayConfig, reread: Callable[[], GatewayConfig] | None = None) -> None:
    from gateway.server.metrics import prepare_multiprocess

    prepare_multiprocess(config.home, config.port)  # before the first metric, and before the fork (module docstring)
    # Set by the process, not the library: the workers forked below inherit it.
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream call is noise
    check_config(config)  # fail fast (bad home, payee) before forking
    gateway_application(config, reread).run()

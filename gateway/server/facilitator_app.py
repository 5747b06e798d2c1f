"""``inferpay facilitator``: the x402 facilitator served on its own, without the paid proxy.

Its TOML has one table, read with the gateway's conventions (unknown keys and bad values stop
it before it serves, ``ConfigError``)::

    [facilitator]
    host = "127.0.0.1"     # default
    port = 8403            # default
    home = "~/.inferpay"   # default: --home, $INFERPAY_HOME, ~/.inferpay
    database = "postgresql://..."   # default: ledger.db in the home
    workers = 2
    threads = 8
    seal_interval_ms = 200

The app serves ``/facilitator/*``, the ledger API under ``/ledger`` (so a buyer can
check a receipt's transaction against the ledger that settled it), ``/openapi.json`` and
``/health``. Each worker builds the same ``Services`` as a gateway worker (ledger, sealer key,
auto-sealer, which also releases expired holds).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask

from gateway.server.config import GatewayConfig, _int, config_home, read_toml
from gateway.server.services import Services
from gateway.server.wsgi import gunicorn_application
from gateway.wire.errors import ConfigError

_FACILITATOR_KEYS = {"host", "port", "home", "database", "workers", "threads", "seal_interval_ms"}
DEFAULT_PORT = 8403


def parse_facilitator_config(data: dict[str, Any], *, home: Path | None = None) -> GatewayConfig:
    """The ``[facilitator]`` table as the gateway config the shared services are built from
    (no routes: nothing is proxied)."""
    if unknown := set(data) - {"facilitator"}:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))} (a facilitator reads [facilitator])")
    table = data.get("facilitator", {})
    if not isinstance(table, dict):
        raise ConfigError("[facilitator] must be a table")
    if unknown := set(table) - _FACILITATOR_KEYS:
        raise ConfigError(f"[facilitator]: unknown key(s) {', '.join(sorted(unknown))}")
    resolved_home = config_home(table.get("home"), "[facilitator].home", home)
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError("[facilitator].host: expected a host name or address")
    database = table.get("database")
    if database is not None and not isinstance(database, str):
        raise ConfigError("[facilitator].database: expected a URL string")
    return GatewayConfig(
        home=resolved_home,
        routes=(),
        host=host,
        port=_int(table.get("port", DEFAULT_PORT), "[facilitator].port", 0, 65535),
        workers=_int(table.get("workers", 2), "[facilitator].workers", 1, 64),
        threads=_int(table.get("threads", 8), "[facilitator].threads", 1, 256),
        seal_interval_ms=_int(table.get("seal_interval_ms", 200), "[facilitator].seal_interval_ms", 1, 3_600_000),
        database=database,
    )


def load_facilitator_config(path: str | Path, *, home: Path | None = None) -> GatewayConfig:
    return parse_facilitator_config(read_toml(path), home=home)


def create_facilitator_app(config: GatewayConfig, *, start_sealer: bool = True) -> Flask:
    from gateway.server.app import build_app

    return build_app("inferpay.facilitator", config, start_sealer=start_sealer, paid_proxy=False)


def serve_facilitator(config: GatewayConfig) -> None:
    from gateway.server.app import close_app
    from gateway.server.metrics import mark_worker_dead, prepare_multiprocess

    prepare_multiprocess(config.home, config.port)  # before the first metric, and before the fork
    # Set by the process, not the library (as serve_gateway does): the forked workers inherit it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    Services.build(config, start_sealer=False).close()  # fail fast (bad home, no sealer key) before forking
    gunicorn_application(
        lambda: create_facilitator_app(config),
        host=config.host,
        port=config.port,
        workers=config.workers,
        threads=config.threads,
        proc_name="inferpay-facilitator",
        on_worker_exit=close_app,  # each worker closes its Services (ledger, sealer thread) as it exits
        on_child_exit=mark_worker_dead,
    ).run()

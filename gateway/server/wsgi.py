"""Run a WSGI app under gunicorn, a production server, with the app built inside each worker
(after the fork), so per-worker resources (database connections, pools, threads, models) are
never shared across processes. Used by the gateway and the model server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


def serve_wsgi(
    load: Callable[[], Any],
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    proc_name: str,
    timeout: int = 120,
    accesslog: bool = True,
) -> None:
    from gunicorn.app.base import BaseApplication

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-" if accesslog else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": proc_name,
        # Above the app's own limits (an x402 header may be 8 KiB), so oversize requests get
        # the app's JSON error instead of gunicorn's HTML 431.
        "limit_request_field_size": 16384,
        # gunicorn 25.1+ opens one control socket per user at a fixed path; two servers on one
        # machine would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self) -> Any:
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            return load()

    Application().run()

"""Run a WSGI app under gunicorn, a production server, with the app built inside each worker
(after the fork), so per-worker resources (database connections, pools, threads, models) are
never shared across processes, and released by the worker that opened them when it exits
(``on_worker_exit``). Used by the gateway and the model server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ledger.errors import StorageUnavailable

if TYPE_CHECKING:
    from gunicorn.app.base import BaseApplication


def gunicorn_application(
    load: Callable[[], Any],
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    proc_name: str,
    timeout: int = 120,
    accesslog: bool = True,
    on_worker_exit: Callable[[Any], None] | None = None,
    on_child_exit: Callable[[int], None] | None = None,
    on_reload: Callable[[], None] | None = None,
) -> BaseApplication:
    """The gunicorn application, configured and not yet running: ``.run()`` serves ``load()``
    (called once in each worker) until gunicorn is stopped.

    ``on_worker_exit(app)`` runs in each worker process as it exits (gunicorn's ``worker_exit``
    hook, after its last request), with the app that worker loaded; not after a SIGKILL, where
    the kernel reclaims what the process held. ``on_child_exit(pid)`` runs in the master once a
    worker has gone, however it went (gunicorn's ``child_exit``). ``on_reload()`` runs in the
    master on SIGHUP, before gunicorn starts new workers (which call ``load()`` again) and lets
    the old ones finish their requests and exit (gunicorn's ``on_reload``)."""
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
    if on_worker_exit is not None:

        def worker_exit(server: Any, worker: Any) -> None:
            app = getattr(worker, "wsgi", None)  # None when the worker failed to load the app
            if app is not None:
                on_worker_exit(app)

        options["worker_exit"] = worker_exit
    if on_child_exit is not None:

        def child_exit(server: Any, worker: Any) -> None:
            on_child_exit(worker.pid)

        options["child_exit"] = child_exit
    if on_reload is not None:

        def reload(server: Any) -> None:
            on_reload()

        options["on_reload"] = reload

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self) -> Any:
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            # A worker started while the ledger's database is away (one replacing a crashed worker,
            # during a PostgreSQL restart) waits for it: an exception here is gunicorn's "worker
            # failed to boot", on which the master stops the whole server for good. The other
            # workers serve meanwhile; gunicorn's worker timeout still bounds the wait.
            while True:
                try:
                    return load()
                except StorageUnavailable as exc:
                    logging.getLogger("inferpay.gateway").warning(
                        "the ledger's storage is unavailable as this worker starts; retrying in 1 s: %s", exc.message
                    )
                    time.sleep(1.0)

    return Application()

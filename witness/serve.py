"""``inferpay witness``: serve ``create_app(config)`` under gunicorn, ``workers`` processes of
``threads`` threads. The key is made (if missing) and the store opened once before forking, so
a bad config stops the command, and every worker then shares one key and one SQLite file; the
store's compare-and-set keeps them exact together. The witness's own small copy of the
gateway's gunicorn setup: it must not import the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

from witness.config import WitnessConfig


def serve_witness(config: WitnessConfig) -> None:
    from gunicorn.app.base import BaseApplication

    from witness.app import close_app, create_app
    from witness.keys import load_or_create_key
    from witness.store import WitnessStore

    load_or_create_key(config.key_file, config.name)
    WitnessStore(config.db_path).close()  # fail fast on an unusable database path
    bind = f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": config.workers,
        "worker_class": "gthread",
        "threads": config.threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": "inferpay-witness",
        "control_socket_disable": True,  # gunicorn 25.1+: a per-user socket two servers would share
    }

    def worker_exit(server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if app is not None:
            close_app(app)

    options["worker_exit"] = worker_exit

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            return create_app(config)

    Application().run()

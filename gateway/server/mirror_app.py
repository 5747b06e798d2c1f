"""The read API of a mirror (``inferpay mirror --serve``): the ledger API and the tlog API,
mounted at ``/ledger`` as on the gateway, over the mirror's own copy of the log.

Read-only: every request that is not a GET (or HEAD) is refused with 405 before any blueprint
sees it, so nothing but the mirror's replay ever writes to its ledger (``POST
/ledger/transfers`` goes to the source). The mirror holds no sealer or checkpoint key: the
blocks it serves are the source's, and the checkpoint it serves is the source's latest note
that it verified (stored by the replay), with the vkey it pinned for it.

It is served by werkzeug's threaded server on a thread of the mirror's own process, beside the
replay, not by gunicorn: gunicorn forks workers, and forking a process whose replay thread holds
locks and connections is unsafe. A mirror's answers are what a cache or CDN would keep (full
tiles are immutable); put one in front for heavy read traffic.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.serving import BaseWSGIServer, make_server

from gateway.server import error_handlers
from gateway.server.services import EXTENSION
from ledger import Ledger, open_store
from ledger.tlog.note import NoteSigner
from ledger.transparency import TransparencyLog

READ_METHODS = ("GET", "HEAD")


@dataclass
class MirrorServices:
    """What the read-only blueprints read (``gateway.server.services.LedgerReads``)."""

    ledger: Ledger
    transparency: TransparencyLog
    checkpoint_vkey: str | None
    checkpoint_signer: NoteSigner | None = None  # never set: a mirror has none of the log's keys

    def close(self) -> None:
        self.ledger.store.close()


def create_mirror_app(location: str | Path, vkey: str) -> Flask:
    """The mirror's read API over the ledger at ``location`` (its own store, opened here)."""
    from gateway.server.ledger_api import ledger_api
    from gateway.server.tlog_api import tlog_api

    store = open_store(location)
    app = Flask("inferpay.mirror")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = MirrorServices(Ledger(store), TransparencyLog(store), vkey)
    error_handlers.register(app)

    @app.before_request
    def read_only() -> None:
        if request.method not in READ_METHODS:
            raise MethodNotAllowed(
                valid_methods=list(READ_METHODS), description="a mirror is read-only: send writes to its source"
            )

    app.register_blueprint(ledger_api, url_prefix="/ledger")
    app.register_blueprint(tlog_api, url_prefix="/ledger")

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok", "role": "mirror"}

    return app


def serve_in_thread(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """Serve ``app`` on a daemon thread; ``.server_port`` is the port bound (``port`` 0: any),
    ``.shutdown()`` stops it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="mirror-read-api", daemon=True).start()
    return server


def close_mirror_app(app: Flask) -> None:
    services: MirrorServices = app.extensions[EXTENSION]
    services.close()

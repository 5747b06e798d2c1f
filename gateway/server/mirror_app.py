"""The read API of a mirror (``inferpay mirror --serve``): the ledger API and the tlog API,
mounted at ``/ledger`` as on the gateway, over the mirror's own copy of the log.

Read-only: every request that is not a GET (or HEAD) is refused with 405 before any blueprint
sees it, so nothing but the mirror's replay ever writes to its ledger (``POST
/ledger/transfers`` goes to the source). The one exception is a mirror that also witnesses the
log it copies (``--witness NAME``): it answers c2sp.org/tlog-witness's ``POST /add-checkpoint``,
and cosigns a checkpoint only if, on top of the protocol's checks, its root is the root of the
mirror's own verified copy at that size whenever the copy is that long.

The mirror holds no sealer or checkpoint key: the blocks it serves are the source's, and the
checkpoint it serves is the source's latest note that it verified (stored by the replay), with
the vkey it pinned for it.

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
from ledger.tlog.cosignature import CosignatureSigner
from ledger.tlog.note import NoteSigner, NoteVerifier
from ledger.tlog.witness_protocol import MAX_ADD_CHECKPOINT_SIZE
from ledger.transparency import TransparencyLog
from witness.app import EXTENSION as WITNESS_EXTENSION
from witness.app import witness_blueprint
from witness.core import Witness
from witness.store import WitnessStore

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


def create_mirror_app(
    location: str | Path, vkey: str, witness_key: CosignatureSigner | None = None, witness_db: Path | None = None
) -> Flask:
    """The mirror's read API over the ledger at ``location`` (its own store, opened here); with
    ``witness_key`` and ``witness_db``, also a witness of the mirrored log, its state in ``witness_db``."""
    from gateway.server.ledger_api import ledger_api
    from gateway.server.tlog_api import tlog_api

    store = open_store(location)
    transparency = TransparencyLog(store)
    app = Flask("inferpay.mirror")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_ADD_CHECKPOINT_SIZE  # the only body a mirror reads
    app.extensions[EXTENSION] = MirrorServices(Ledger(store), transparency, vkey)
    error_handlers.register(app)
    if witness_key is not None:
        if witness_db is None:
            raise ValueError("a witnessing mirror needs a file for its witness state")
        app.register_blueprint(witness_blueprint(_mirror_witness(witness_key, vkey, transparency, witness_db)))

    @app.before_request
    def read_only() -> None:
        if request.blueprint == "witness":
            return
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


def _mirror_witness(key: CosignatureSigner, vkey: str, copy: TransparencyLog, witness_db: Path) -> Witness:
    log = NoteVerifier.from_vkey(vkey)
    origin = log.name  # a checkpoint key is named after its log's origin line

    def own_copy_root(checkpoint_origin: str, size: int) -> bytes | None:
        if checkpoint_origin != origin or size > copy.size():
            return None
        return copy.root(size)

    return Witness(key, {origin: log}, WitnessStore(witness_db), own_copy_root=own_copy_root)


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
    witness: Witness | None = app.extensions.get(WITNESS_EXTENSION)
    if witness is not None:
        witness.store.close()

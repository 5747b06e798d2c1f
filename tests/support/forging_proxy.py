"""A FAKE, dishonest front for a gateway's ledger API, for mirror tests only.

It forwards every GET to the gateway behind it, except ``/ledger/checkpoint`` while the file
``forged_path`` exists: then it serves that file instead (a checkpoint a test signed with the
log's own key, for a history the log never had). The test writes or removes the file to switch
it on and off; nothing else is configurable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, request


def create_forging_proxy(upstream: str, forged_path: str) -> Flask:
    app = Flask("forging-proxy")
    forged = Path(forged_path)
    session = requests.Session()

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/<path:path>")
    def forward(path: str) -> Any:
        if path == "ledger/checkpoint" and forged.exists():
            return Response(forged.read_bytes(), mimetype="text/plain")
        answer = session.get(f"{upstream}/{path}", params=request.args, timeout=30)
        return Response(answer.content, status=answer.status_code, content_type=answer.headers.get("Content-Type"))

    return app

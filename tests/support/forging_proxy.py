"""A FAKE, dishonest front for a gateway's ledger API, for mirror tests only.

It forwards every GET to the gateway behind it, and lies only when a test switches a lie on by
writing a file in ``switches`` (a directory), off by removing it:

- ``checkpoint``: served instead of ``/ledger/checkpoint`` (a note a test signed with the log's
  own key, for a history the log never had);
- ``relink``: every block header ``/ledger/blocks`` serves gets another ``prevHash`` (a chain
  that does not link).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, request


def create_forging_proxy(upstream: str, switches: str) -> Flask:
    app = Flask("forging-proxy")
    lies = Path(switches)
    session = requests.Session()

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/<path:path>")
    def forward(path: str) -> Any:
        if path == "ledger/checkpoint" and (lies / "checkpoint").exists():
            return Response((lies / "checkpoint").read_bytes(), mimetype="text/plain")
        answer = session.get(f"{upstream}/{path}", params=request.args, timeout=30)
        body = answer.content
        if path == "ledger/blocks" and answer.status_code == 200 and (lies / "relink").exists():
            page = json.loads(body)
            for block in page["blocks"]:
                block["header"]["prevHash"] = "0x" + "11" * 32
            body = json.dumps(page).encode()
        return Response(body, status=answer.status_code, content_type=answer.headers.get("Content-Type"))

    return app

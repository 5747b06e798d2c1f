"""One structured access-log line per request, JSON on the ``inferpay.access`` logger:

    {"event": "access", "method": "POST", "path": "/v1/embeddings", "route": "/v1/embeddings",
     "status": 200, "ms": 3.412, "payer": "0x…", "keyPrefix": null, "charged": "1250",
     "units": "base units", "txId": "0x…", "upstreamMs": 2.1, "overheadMs": 1.3}

The paid proxy ``note``s what it learns as the call goes (payer, API key prefix, charged, the
settle's tx id, upstream and overhead milliseconds); the line is written once the answer is
ready. A streamed call's line is written when its headers go out: it names the hold, and the
charge is on the ledger (and in the stream's receipt) a moment later. Never a key, a password,
a signature or a payment header: only the fields listed here are ever written.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("inferpay.access")
FIELDS = (
    "payer",
    "keyPrefix",
    "charged",
    "holdId",
    "txId",
    "upstreamMs",
    "overheadMs",
    "stream",
    "provider",
    "attempts",
)


def note(**fields: Any) -> None:
    """Add fields to this request's line (only the names in ``FIELDS``)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not access-log fields: {sorted(unknown)}")
    noted: dict[str, Any] = g.setdefault("access_fields", {})
    noted.update(fields)


def register(app: Flask, route_label: Any) -> None:
    @app.before_request
    def start_clock() -> None:
        g.access_started = time.perf_counter()

    @app.after_request
    def write_line(response: Response) -> Response:
        started = g.get("access_started")
        line: dict[str, Any] = {
            "event": "access",
            "method": request.method,
            "path": request.path[:200],
            "route": route_label(),
            "status": response.status_code,
            "ms": round((time.perf_counter() - started) * 1000, 3) if started is not None else None,
        }
        noted = g.get("access_fields") or {}
        for name in FIELDS:
            if name in noted:
                line[name] = noted[name]
        if "charged" in line:
            line["units"] = "base units"
        log.info(json.dumps(line, separators=(",", ":")))
        return response

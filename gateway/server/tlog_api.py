"""The ledger as a C2SP transparency log over HTTP, mounted under ``/ledger`` beside the JSON API:
``checkpoint`` and tiles per c2sp.org/tlog-tiles, and offline proofs per c2sp.org/tlog-proof.

- ``GET /ledger/checkpoint``: the latest signed checkpoint note with the witness cosignatures
  gathered for it (text, never cached).
- ``GET /ledger/tile/<L>/<N>[.p/<W>]``: hash tiles of height 8; ``GET /ledger/tile/entries/<N>[.p/<W>]``:
  entry bundles (each entry a 2-byte big-endian length and the entry's bytes). A full tile never
  changes: served ``immutable`` for a year, so any static mirror or CDN can keep it; a partial one
  is cached briefly.
- ``GET /ledger/transactions/<id>/tlog-proof``: the entry's index, inclusion proof and the
  checkpoint it is proven against, with the entry itself as the proof's ``extra`` line, so
  ``inferpay receipt verify`` needs nothing else.
- ``GET /ledger/checkpoint/status``: JSON: the checkpoint's size, the head's, which witnesses
  cosigned it; ``GET /ledger/checkpoint/consistency?old=&new=``: the consistency proof between
  two tree sizes (what a client checks a newer checkpoint with).
Everything here is public, as the rest of the ledger API is.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, request

from gateway.server.services import LedgerReads, ledger_reads
from ledger.amounts import INT64_MAX
from ledger.checkpoints import latest_checkpoint, tlog_proof
from ledger.errors import InvalidInput, MalformedRecord, MalformedTilePath, NotFound
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import parse_note
from ledger.tlog.proof import format_tlog_proof
from ledger.tlog.tiles import encode_entry_bundle, parse_tile_path
from ledger.transparency import TILE_WIDTH

tlog_api = Blueprint("tlog_api", __name__)
NOTE_TYPE = "text/plain; charset=utf-8"
IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=2"


def _vkey(found: LedgerReads) -> str:
    """The log's vkey: a gateway's own key, or the one a mirror pinned for its source."""
    if found.checkpoint_vkey is None:
        raise NotFound("this ledger has no checkpoint key yet: its operator runs `inferpay checkpoint-key`")
    return found.checkpoint_vkey


def _latest_note(found: LedgerReads) -> bytes:
    _vkey(found)
    return latest_checkpoint(found.ledger.store, found.checkpoint_signer)


@tlog_api.get("/checkpoint")
def checkpoint() -> Any:
    found = ledger_reads()
    return Response(_latest_note(found), mimetype="text/plain", headers={"Cache-Control": "no-cache"})


@tlog_api.get("/checkpoint/status")
def checkpoint_status() -> Any:
    found = ledger_reads()
    vkey = _vkey(found)
    note = parse_note(_latest_note(found))
    body = parse_checkpoint(note.text)
    head = found.ledger.head().header
    return {
        "origin": body.origin,
        "vkey": vkey,
        "checkpointSize": body.size,
        "headSize": head.tree_size,
        "headHeight": head.height,
        # The log's own key is named by its origin (sign_checkpoint); every other line is a witness's.
        "cosignedBy": sorted({s.name for s in note.signatures if s.name != body.origin}),
        "units": {"checkpointSize": "entries", "headSize": "entries"},
    }


@tlog_api.get("/checkpoint/consistency")
def checkpoint_consistency() -> Any:
    """RFC 6962 consistency proof between two tree sizes (of checkpoints), hashes in base64."""
    found = ledger_reads()
    old, new = _size_arg("old"), _size_arg("new")
    if old > new:
        raise InvalidInput("'old' must not be larger than 'new'")
    if new > found.transparency.size():
        raise NotFound(f"the log has fewer than {new} entries")
    proof = found.transparency.consistency_proof(old, new)
    return {"old": old, "new": new, "proof": [base64.b64encode(h).decode() for h in proof], "units": "entries"}


def _size_arg(name: str) -> int:
    raw = request.args.get(name)
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > INT64_MAX:
        raise InvalidInput(f"query parameter {name!r} (a tree size) must be an integer from 0 to {INT64_MAX}")
    return int(raw)


@tlog_api.get("/tile/<path:rest>")
def tile(rest: str) -> Any:
    found = ledger_reads()
    _vkey(found)
    try:
        where = parse_tile_path("tile/" + rest)
    except MalformedTilePath as exc:
        raise InvalidInput(exc.message) from exc
    size = found.transparency.size()
    width = where.width if where.width is not None else TILE_WIDTH
    if where.level is None:
        body = encode_entry_bundle(found.transparency.entry_bundle(where.index, width, size))
    else:
        body = found.transparency.hash_tile(where.level, where.index, width, size)
    cache = IMMUTABLE if where.width is None else PARTIAL
    return Response(body, mimetype="application/octet-stream", headers={"Cache-Control": cache})


@tlog_api.get("/transactions/<tx_id>/tlog-proof")
def transaction_tlog_proof(tx_id: str) -> Any:
    found = ledger_reads()
    _vkey(found)
    try:
        proof = tlog_proof(found.transparency, found.checkpoint_signer, tx_id)
    except MalformedRecord as exc:
        raise InvalidInput(exc.message) from exc
    return Response(format_tlog_proof(proof), mimetype="text/plain", headers={"Cache-Control": "no-cache"})

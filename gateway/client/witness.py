"""A client for c2sp.org/tlog-witness: ``add_checkpoint`` posts a checkpoint with the
consistency proof from the size the witness last saw, and returns the witness's cosignatures.

The answer is read as the spec writes it: 200 with signature lines; 409 with the size the
witness holds (``text/x.tlog.size``), so the caller can retry from it; any other status is a
refusal with its status (403 unknown key, 404 unknown origin, 422 inconsistent, ...). Network
failures are the transport's own exceptions: the caller decides what "down" means.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests

from ledger.errors import MalformedWitnessRequest
from ledger.tlog.note import NoteSignature
from ledger.tlog.witness_protocol import (
    SIZE_CONTENT_TYPE,
    format_add_checkpoint,
    parse_signature_lines,
    parse_size_body,
)

MAX_ANSWER_BYTES = 1 << 16


class WitnessRefused(Exception):
    """The witness answered, and not with a cosignature. ``status``: its HTTP status; ``size``:
    the tree size it holds, on a 409. Not an ``InferpayError``: it never crosses our own API,
    the publisher reports it."""

    def __init__(self, status: int, size: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.size = size


def add_checkpoint(
    url: str, old_size: int, consistency: Sequence[bytes], signed_checkpoint: bytes, timeout_s: float
) -> list[NoteSignature]:
    """POST ``<url>/add-checkpoint``; the cosignature lines of a 200, else ``WitnessRefused``."""
    body = format_add_checkpoint(old_size, consistency, signed_checkpoint)
    answer = requests.post(url.rstrip("/") + "/add-checkpoint", data=body, timeout=timeout_s, stream=True)
    try:
        content = answer.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    finally:
        answer.close()
    if len(content) > MAX_ANSWER_BYTES:
        raise WitnessRefused(answer.status_code, None, "the witness's answer is too large")
    if answer.status_code == 200:
        try:
            return parse_signature_lines(content)
        except MalformedWitnessRequest as exc:
            raise WitnessRefused(200, None, f"unreadable cosignature lines: {exc.message}") from exc
    size = None
    if answer.status_code == 409 and answer.headers.get("Content-Type", "").startswith(SIZE_CONTENT_TYPE):
        try:
            size = parse_size_body(content)
        except MalformedWitnessRequest:
            size = None
    reason = content[:200].decode("utf-8", "replace").strip()
    raise WitnessRefused(answer.status_code, size, f"HTTP {answer.status_code}: {reason or 'no reason given'}")

"""The bodies of the tlog-witness protocol (c2sp.org/tlog-witness): add-checkpoint and its answers.

What it is for: what a log sends a witness and what comes back, as bytes, for the witness
server and its client alike:

- the request: ``old <size>\\n``, at most 63 base64 consistency-proof lines, a blank line,
  then the signed checkpoint (``format_add_checkpoint``/``parse_add_checkpoint``);
- a 200 answer: one or more cosignature lines ``— <name> <base64>\\n``
  (``format_signature_lines``/``parse_signature_lines``);
- a 409 answer for a wrong old size: the size the witness holds, ``<size>\\n``, as
  ``text/x.tlog.size`` (``format_size_body``/``parse_size_body``).

It must never do I/O, check signatures or judge proofs (the witness does); its parsers raise
only ``MalformedWitnessRequest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import MalformedNote, MalformedWitnessRequest
from ledger.merkle import HASH_SIZE
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import MAX_NOTE_SIZE, MAX_SIGNATURES, Note, NoteSignature, parse_note, parse_signature_line
from ledger.tlog.text import b64decode, b64encode, parse_decimal

MAX_CONSISTENCY_HASHES = 63
MAX_ADD_CHECKPOINT_SIZE = 32 + MAX_CONSISTENCY_HASHES * 45 + MAX_NOTE_SIZE
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request; ``note``/``checkpoint`` are its parsed (unverified) checkpoint."""

    old_size: int
    consistency: tuple[bytes, ...]
    signed_checkpoint: bytes
    note: Note
    checkpoint: Checkpoint


def format_add_checkpoint(old_size: int, consistency: Sequence[bytes], signed_checkpoint: bytes) -> bytes:
    if not isinstance(old_size, int) or isinstance(old_size, bool) or old_size < 0:
        raise MalformedWitnessRequest(f"old size {old_size!r} is not a non-negative integer")
    if len(consistency) > MAX_CONSISTENCY_HASHES:
        raise MalformedWitnessRequest(f"more than {MAX_CONSISTENCY_HASHES} consistency proof hashes")
    if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in consistency):
        raise MalformedWitnessRequest(f"a consistency proof hash is {HASH_SIZE} bytes")
    head = "".join(f"{line}\n" for line in [f"old {old_size}", *(b64encode(h) for h in consistency)])
    return head.encode("ascii") + b"\n" + signed_checkpoint


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    if not isinstance(body, bytes) or len(body) > MAX_ADD_CHECKPOINT_SIZE:
        raise MalformedWitnessRequest(f"an add-checkpoint body is at most {MAX_ADD_CHECKPOINT_SIZE} bytes")
    split = body.find(b"\n\n")
    if split < 0:
        raise MalformedWitnessRequest("no blank line before the checkpoint")
    try:
        lines = body[:split].decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        raise MalformedWitnessRequest("the old size and proof lines are ASCII") from exc
    if not lines[0].startswith("old "):
        raise MalformedWitnessRequest("the first line is 'old <size>'")
    old_size = parse_decimal(lines[0][len("old ") :], "the old size", MalformedWitnessRequest)
    if len(lines) - 1 > MAX_CONSISTENCY_HASHES:
        raise MalformedWitnessRequest(f"more than {MAX_CONSISTENCY_HASHES} consistency proof lines")
    proof = tuple(b64decode(line, "a consistency proof line", MalformedWitnessRequest, HASH_SIZE) for line in lines[1:])
    signed = body[split + 2 :]
    try:
        note = parse_note(signed)
        checkpoint = parse_checkpoint(note.text)
    except MalformedNote as exc:
        raise MalformedWitnessRequest(f"the checkpoint: {exc.message}") from exc
    return AddCheckpoint(old_size, proof, signed, note, checkpoint)


def format_signature_lines(signatures: Sequence[NoteSignature]) -> bytes:
    if not signatures:
        raise MalformedWitnessRequest("an add-checkpoint answer has at least one signature line")
    return "".join(sig.line() + "\n" for sig in signatures).encode("utf-8")


def parse_signature_lines(body: bytes) -> list[NoteSignature]:
    """The signature lines of a 200 answer (at least one, each ending in a newline)."""
    if not isinstance(body, bytes) or not body.endswith(b"\n") or len(body) > MAX_NOTE_SIZE:
        raise MalformedWitnessRequest("an add-checkpoint answer is signature lines, each ending in a newline")
    try:
        lines = body[:-1].decode("utf-8").split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise MalformedWitnessRequest(f"more than {MAX_SIGNATURES} signature lines")
        return [parse_signature_line(line) for line in lines]
    except UnicodeDecodeError as exc:
        raise MalformedWitnessRequest("an add-checkpoint answer is UTF-8") from exc
    except MalformedNote as exc:
        raise MalformedWitnessRequest(f"an answer line: {exc.message}") from exc


def format_size_body(size: int) -> bytes:
    return b"%d\n" % size


def parse_size_body(body: bytes) -> int:
    if not isinstance(body, bytes) or not body.endswith(b"\n") or len(body) > 21:
        raise MalformedWitnessRequest("a text/x.tlog.size body is a decimal and a newline")
    try:
        text = body[:-1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedWitnessRequest("a text/x.tlog.size body is ASCII") from exc
    return parse_decimal(text, "the witness's size", MalformedWitnessRequest)

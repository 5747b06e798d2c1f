"""Transparency-log checkpoints (c2sp.org/tlog-checkpoint): the body a log signs for one tree head.

What it is for: ``Checkpoint(origin, size, root_hash, extensions)`` and its exact body,

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n[<extension line>\\n ...]

``parse_checkpoint`` reads a note's text back, strictly: a non-empty origin, a decimal size
without leading zeros (at most 2^63 - 1, Go's int64), canonical base64 of a 32-byte root, and
non-empty extension lines. A value that parses formats to the same bytes.

It must never do I/O or check signatures (``ledger.tlog.note.open_note`` does), and raises only
``MalformedCheckpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import MalformedCheckpoint
from ledger.merkle import HASH_SIZE
from ledger.tlog.text import INT63_MAX, b64decode, b64encode, note_text, parse_decimal

MAX_CHECKPOINT_SIZE = 1 << 16
"""Bytes a checkpoint body may have (origin and extension lines included)."""
MAX_EXTENSIONS = 64


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise MalformedCheckpoint("a checkpoint's origin is a non-empty line")
        _check_line(self.origin, "the origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= INT63_MAX:
            raise MalformedCheckpoint(f"tree size {self.size!r} is not an integer in [0, 2^63 - 1]")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpoint(f"a root hash is {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple) or len(self.extensions) > MAX_EXTENSIONS:
            raise MalformedCheckpoint(f"extensions are a tuple of at most {MAX_EXTENSIONS} lines")
        for line in self.extensions:
            if not isinstance(line, str) or not line:
                raise MalformedCheckpoint("an extension line is non-empty text")
            _check_line(line, "an extension line")
        if len(self.body()) > MAX_CHECKPOINT_SIZE:
            raise MalformedCheckpoint(f"the checkpoint is over {MAX_CHECKPOINT_SIZE} bytes")

    def body(self) -> bytes:
        """The note text a log signs and a witness cosigns, final newline included."""
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")


def _check_line(line: str, what: str) -> None:
    if "\n" in line:
        raise MalformedCheckpoint(f"{what} is one line")
    note_text(line.encode("utf-8", "surrogatepass"), what, MalformedCheckpoint)


def parse_checkpoint(text: bytes) -> Checkpoint:
    """Parse a checkpoint body (a note's text, ending in a newline)."""
    if not isinstance(text, bytes):
        raise MalformedCheckpoint("a checkpoint is bytes")
    if len(text) > MAX_CHECKPOINT_SIZE:
        raise MalformedCheckpoint(f"the checkpoint is over {MAX_CHECKPOINT_SIZE} bytes")
    decoded = note_text(text, "the checkpoint", MalformedCheckpoint)
    if not decoded.endswith("\n"):
        raise MalformedCheckpoint("a checkpoint ends in a newline")
    lines = decoded[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedCheckpoint("a checkpoint has an origin, a size and a root hash line")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise MalformedCheckpoint("a checkpoint's origin is a non-empty line")
    size = parse_decimal(size_text, "the tree size", MalformedCheckpoint)
    root = b64decode(root_text, "the root hash", MalformedCheckpoint, HASH_SIZE)
    if len(extensions) > MAX_EXTENSIONS:
        raise MalformedCheckpoint(f"more than {MAX_EXTENSIONS} extension lines")
    if any(not line for line in extensions):
        raise MalformedCheckpoint("an extension line is non-empty")
    return Checkpoint(origin, size, root, tuple(extensions))

"""Offline proofs that an entry is in a log (c2sp.org/tlog-proof@v1).

What it is for: one self-contained text a client keeps with a receipt,

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <entry index>
    <base64 inclusion proof hash, leaf side first> ...

    <the signed checkpoint note, verbatim, with any cosignatures>

``format_tlog_proof``/``parse_tlog_proof`` turn it into a ``TlogProof`` and back (strictly:
at most 63 proof hashes, canonical base64 and decimals, a checkpoint that parses).
``verify_tlog_proof`` checks it against the log's key and, if given, a policy's witness
quorum, and returns the checkpoint it proved the entry under. The extra data is carried, never
trusted.

It must never do I/O or read a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import InvalidProof, MalformedNote, MalformedTlogProof, UnverifiedNote
from ledger.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import MAX_NOTE_SIZE, NoteVerifier, open_note, parse_note
from ledger.tlog.policy import Policy
from ledger.tlog.text import INT63_MAX, b64decode, b64encode, parse_decimal

HEADER = "c2sp.org/tlog-proof@v1"
MAX_INCLUSION_HASHES = 63
MAX_EXTRA_SIZE = 1 << 14
MAX_PROOF_SIZE = MAX_NOTE_SIZE + (1 << 16)


@dataclass(frozen=True)
class TlogProof:
    index: int
    inclusion: tuple[bytes, ...]
    checkpoint: bytes  # the signed note
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) or not 0 <= self.index <= INT63_MAX:
            raise MalformedTlogProof(f"an entry index is an integer in [0, 2^63 - 1], not {self.index!r}")
        if not isinstance(self.inclusion, tuple) or len(self.inclusion) > MAX_INCLUSION_HASHES:
            raise MalformedTlogProof(f"an inclusion proof is a tuple of at most {MAX_INCLUSION_HASHES} hashes")
        if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in self.inclusion):
            raise MalformedTlogProof(f"an inclusion proof hash is {HASH_SIZE} bytes")
        if not isinstance(self.checkpoint, bytes):
            raise MalformedTlogProof("the checkpoint is a signed note's bytes")
        if self.extra is not None and not (isinstance(self.extra, bytes) and 0 < len(self.extra) <= MAX_EXTRA_SIZE):
            raise MalformedTlogProof(f"extra data is None or 1 to {MAX_EXTRA_SIZE} bytes")


def format_tlog_proof(proof: TlogProof) -> bytes:
    lines = [HEADER]
    if proof.extra is not None:
        lines.append("extra " + b64encode(proof.extra))
    lines.append(f"index {proof.index}")
    lines.extend(b64encode(h) for h in proof.inclusion)
    return ("\n".join(lines) + "\n\n").encode("ascii") + proof.checkpoint


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a tlog-proof@v1 (its checkpoint must parse, its signatures are not checked here)."""
    if not isinstance(data, bytes) or len(data) > MAX_PROOF_SIZE:
        raise MalformedTlogProof(f"a tlog proof is at most {MAX_PROOF_SIZE} bytes")
    split = data.find(b"\n\n")
    if split < 0:
        raise MalformedTlogProof("no blank line before the checkpoint")
    try:
        head = data[:split].decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        raise MalformedTlogProof("the proof lines are ASCII") from exc
    if head[0] != HEADER:
        raise MalformedTlogProof(f"the first line is {HEADER!r}")
    rest = head[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = b64decode(rest[0][len("extra ") :], "the extra data", MalformedTlogProof)
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise MalformedTlogProof("an 'index <n>' line follows the header")
    index = parse_decimal(rest[0][len("index ") :], "the entry index", MalformedTlogProof)
    hashes = rest[1:]
    if len(hashes) > MAX_INCLUSION_HASHES:
        raise MalformedTlogProof(f"more than {MAX_INCLUSION_HASHES} inclusion proof hashes")
    inclusion = tuple(b64decode(h, "an inclusion proof hash", MalformedTlogProof, HASH_SIZE) for h in hashes)
    checkpoint = data[split + 2 :]
    try:
        parse_checkpoint(parse_note(checkpoint).text)
    except MalformedNote as exc:
        raise MalformedTlogProof(f"its checkpoint: {exc.message}") from exc
    return TlogProof(index, inclusion, checkpoint, extra)


def verify_tlog_proof(proof: TlogProof, entry: bytes, log: NoteVerifier, policy: Policy | None) -> Checkpoint:
    """Check that ``entry`` is leaf ``proof.index`` of a checkpoint ``log`` signed (and, with a
    policy, that its witnesses' quorum cosigned it); the checkpoint, or raise.

    Raises UnverifiedNote (no valid signature of the log, or the log's key name is not the
    checkpoint's origin), InvalidProof (the inclusion proof fails) or QuorumNotMet.
    """
    note = open_note(proof.checkpoint, [log])
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != log.name:
        raise UnverifiedNote(f"the log key {log.name!r} does not speak for origin {checkpoint.origin!r}")
    path = list(proof.inclusion)
    if not verify_inclusion(leaf_hash(entry), proof.index, checkpoint.size, path, checkpoint.root_hash):
        raise InvalidProof(
            f"entry {proof.index} is not proven in the tree of size {checkpoint.size}",
            index=proof.index,
            size=checkpoint.size,
        )
    if policy is not None:
        policy.check(parse_note(proof.checkpoint), checkpoint)
    return checkpoint

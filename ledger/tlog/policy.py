"""Trust policies (c2sp.org/tlog-policy): which logs to believe and which witnesses must cosign.

What it is for: one file saying ``log <vkey> [<url>]``, ``witness <name> <vkey> [<url>]``,
``group <name> all|any|<k> <member>...`` and exactly one ``quorum <name>`` (``none``: no
cosignature needed), and the check that a checkpoint note meets it. Items are separated by
spaces and tabs; blank lines and ``#`` comments are ignored; names are compared byte for byte;
a group or the quorum may only name what earlier lines defined; a witness or log key may be
listed once; the only octets allowed are tab, newline, 0x20-0x7E and 0x80-0xFF.

``Policy.check(note, checkpoint)`` refuses (``UnverifiedNote``) a note that is not of that
checkpoint, that none of the policy's logs for its origin signed (when the policy lists logs:
a log's key name must be the origin), or that carries a bad signature from a listed key; and
raises ``QuorumNotMet`` naming the witnesses that did not cosign when the quorum is not met.

It must never do I/O or read a clock (cosignature timestamps are returned, not judged).
"""

from __future__ import annotations

import re
from collections.abc import Sized
from dataclasses import dataclass

from ledger.errors import MalformedNote, MalformedPolicy, QuorumNotMet, UnverifiedNote
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import Note, NoteVerifier, check_note, parse_note
from ledger.tlog.text import parse_decimal

MAX_POLICY_SIZE = 1 << 16
MAX_ITEMS = 256
"""Logs, witnesses and groups each (the spec recommends supporting at least 32)."""
NONE = "none"

_FORBIDDEN_OCTETS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_BLANKS = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class PolicyLog:
    verifier: NoteVerifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    verifier: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str

    @property
    def log_verifiers(self) -> tuple[NoteVerifier, ...]:
        return tuple(log.verifier for log in self.logs)

    @property
    def witness_verifiers(self) -> tuple[CosignatureVerifier, ...]:
        return tuple(witness.verifier for witness in self.witnesses)

    def cosigners(self, note: Note | bytes, checkpoint: Checkpoint) -> dict[str, int]:
        """The policy names of the witnesses whose cosignature is on the note, with its timestamp."""
        parsed = _note_of(note, checkpoint)
        found: dict[str, int] = {}
        for sig in parsed.signatures:
            for witness in self.witnesses:
                if not witness.verifier.matches(sig):
                    continue
                timestamp_s = witness.verifier.verify(parsed.text, sig)
                if timestamp_s is None:
                    raise UnverifiedNote(f"the cosignature of witness {witness.name} does not verify")
                found.setdefault(witness.name, timestamp_s)
        return found

    def check(self, note: Note | bytes, checkpoint: Checkpoint) -> None:
        """Refuse the checkpoint note unless a policy log signed it and the quorum cosigned it."""
        parsed = _note_of(note, checkpoint)
        if self.logs:
            for_origin = [log.verifier for log in self.logs if log.verifier.name == checkpoint.origin]
            if not for_origin:
                raise UnverifiedNote(f"the policy lists no log for origin {checkpoint.origin!r}")
            check_note(parsed, for_origin)
        cosigned = self.cosigners(parsed, checkpoint)
        if not self._witnessed(self.quorum, cosigned):
            missing = sorted(name for name in self._witnesses_under(self.quorum) if name not in cosigned)
            raise QuorumNotMet(
                f"quorum {self.quorum!r} not met; no cosignature from {', '.join(missing)}",
                quorum=self.quorum,
                missing=missing,
                cosigned=sorted(cosigned),
            )

    def _witnessed(self, name: str, cosigned: dict[str, int]) -> bool:
        if name == NONE:
            return True
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            return name in cosigned
        return sum(self._witnessed(member, cosigned) for member in group.members) >= group.threshold

    def _witnesses_under(self, name: str) -> set[str]:
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            return set() if name == NONE else {name}
        return set().union(*(self._witnesses_under(member) for member in group.members))


def _note_of(note: Note | bytes, checkpoint: Checkpoint) -> Note:
    parsed = note if isinstance(note, Note) else parse_note(note)
    if parsed.text != checkpoint.body():
        raise UnverifiedNote("the note's text is not this checkpoint's body")
    return parsed


def parse_policy(text: bytes | str) -> Policy:
    """Parse a policy file; raises MalformedPolicy naming the line."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if not isinstance(data, bytes) or len(data) > MAX_POLICY_SIZE:
        raise MalformedPolicy(f"a policy is at most {MAX_POLICY_SIZE} bytes")
    bad = _FORBIDDEN_OCTETS.search(data)
    if bad is not None:
        raise MalformedPolicy(f"octet {bad.group()[0]:#04x} is not allowed in a policy")
    builder = _Builder()
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), start=1):
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            builder.add(_BLANKS.split(stripped))
        except (MalformedPolicy, MalformedNote) as exc:
            raise MalformedPolicy(f"line {number}: {exc.message}", line=number) from exc
    return builder.build()


class _Builder:
    def __init__(self) -> None:
        self.logs: list[PolicyLog] = []
        self.witnesses: dict[str, PolicyWitness] = {}
        self.groups: dict[str, PolicyGroup] = {}
        self.quorum: str | None = None

    def add(self, items: list[str]) -> None:
        keyword, args = items[0], items[1:]
        if keyword == "log" and len(args) in (1, 2):
            verifier = NoteVerifier.from_vkey(_vkey_text(args[0]))
            if any(log.verifier.public_key == verifier.public_key for log in self.logs):
                raise MalformedPolicy("the same log key is listed twice")
            self._room(self.logs)
            self.logs.append(PolicyLog(verifier, args[1] if len(args) == 2 else None))
        elif keyword == "witness" and len(args) in (2, 3):
            name = self._new_name(args[0])
            cosigner = CosignatureVerifier.from_vkey(_vkey_text(args[1]))
            if any(w.verifier.public_key == cosigner.public_key for w in self.witnesses.values()):
                raise MalformedPolicy("the same witness key is listed twice")
            self._room(self.witnesses)
            self.witnesses[name] = PolicyWitness(name, cosigner, args[2] if len(args) == 3 else None)
        elif keyword == "group" and len(args) >= 3:
            self._add_group(self._new_name(args[0]), args[1], args[2:])
        elif keyword == "quorum" and len(args) == 1:
            if self.quorum is not None:
                raise MalformedPolicy("a policy has exactly one quorum line")
            if args[0] != NONE and not self._defined(args[0]):
                raise MalformedPolicy(f"quorum {args[0]!r} names nothing defined above it")
            self.quorum = args[0]
        else:
            raise MalformedPolicy(f"{keyword!r} with {len(args)} items is not a policy line")

    def _add_group(self, name: str, threshold_text: str, members: list[str]) -> None:
        for member in members:
            if member == NONE or not self._defined(member):
                raise MalformedPolicy(f"group member {member!r} is not a witness or group defined above")
        if len(set(members)) != len(members):
            raise MalformedPolicy("a group lists each member once")
        if threshold_text == "all":
            threshold = len(members)
        elif threshold_text == "any":
            threshold = 1
        else:
            threshold = parse_decimal(threshold_text, "a group threshold", MalformedPolicy, maximum=len(members))
            if threshold < 1:
                raise MalformedPolicy("a group threshold is at least 1")
        self._room(self.groups)
        self.groups[name] = PolicyGroup(name, threshold, tuple(members))

    def _defined(self, name: str) -> bool:
        return name in self.witnesses or name in self.groups

    def _new_name(self, name: str) -> str:
        if name == NONE or self._defined(name):
            raise MalformedPolicy(f"name {name!r} is already defined")
        return name

    def _room(self, items: Sized) -> None:
        if len(items) >= MAX_ITEMS:
            raise MalformedPolicy(f"at most {MAX_ITEMS} logs, witnesses and groups each")

    def build(self) -> Policy:
        if self.quorum is None:
            raise MalformedPolicy("a policy has exactly one quorum line")
        return Policy(tuple(self.logs), tuple(self.witnesses.values()), tuple(self.groups.values()), self.quorum)


def _vkey_text(item: str) -> str:
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as exc:  # a surrogate-escaped octet: not UTF-8, so no key name
        raise MalformedPolicy("a vkey is UTF-8") from exc
    return item

"""Signed notes (c2sp.org/signed-note) and their Ed25519 keys, in Go's vkey/skey text forms.

What it is for: the envelope every tlog message travels in. A note is a text ending in a
newline, a blank line, then one or more lines ``— <key name> base64(key ID || signature)``.
``parse_note`` and ``format_note`` turn bytes into a ``Note`` and back (strictly: one spelling
per note, bounded sizes); ``open_note`` keeps only the signatures that known keys made, and
refuses a note no known key signed, or one where a known key's signature fails (the spec's
SHOULD, and Go's behaviour). Signature lines from unknown keys are ignored, as the spec says.

Keys: ``NoteSigner``/``NoteVerifier`` for signature type 0x01 (Ed25519 over the note text).
``vkey`` = ``<name>+<hex key ID>+base64(type || public key)``; ``skey`` =
``PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)`` (golang.org/x/mod/sumdb/note's forms);
key ID = SHA-256(name || 0x0A || type || public key)[:4]. ``Ed25519KeyPair`` and
``parse_vkey`` are shared with the cosignature keys (type 0x04).

It must never do I/O or read a clock, and its parsers raise only ``MalformedNote`` (or its
``MalformedKey``); ``open_note`` adds ``UnverifiedNote``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from ledger.errors import MalformedKey, MalformedNote, UnverifiedNote
from ledger.tlog import ed25519
from ledger.tlog.text import b64decode, b64encode, note_text

SIG_TYPE_ED25519 = 0x01
SIG_TYPE_COSIGNATURE_V1 = 0x04
KEY_ID_SIZE = 4
MAX_NOTE_SIZE = 1 << 20
"""Bytes a note may have; well above 100 post-quantum signatures (about 5 kB each)."""
MAX_SIGNATURES = 100
"""Signature lines a note may have (the spec asks for at least 16; Go stops at 100)."""

_SIGNATURE_PREFIX = "\u2014 "  # em dash, space


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte key ID, and the signature bytes."""

    name: str
    key_id: bytes  # 4 bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name, MalformedNote)
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise MalformedNote(f"a key ID is {KEY_ID_SIZE} bytes")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise MalformedNote("a signature is at least one byte")

    def line(self) -> str:
        """The signature line, without its newline."""
        return f"{_SIGNATURE_PREFIX}{self.name} {b64encode(self.key_id + self.signature)}"


@dataclass(frozen=True)
class Note:
    """A note's signed body (ending in a newline) and its signatures, in order."""

    text: bytes  # the signed body, ends with "\n"
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.text, bytes) or not self.text.endswith(b"\n"):
            raise MalformedNote("a note's text ends in a newline")
        note_text(self.text, "the note text", MalformedNote)
        if not all(isinstance(sig, NoteSignature) for sig in self.signatures):
            raise MalformedNote("a note's signatures are NoteSignature values")


def check_key_name(name: object, error: type[MalformedNote]) -> str:
    """A key name: non-empty, no Unicode space, no "+", no control character."""
    if not isinstance(name, str) or not name:
        raise error("a key name is a non-empty string")
    if "+" in name or any(ch.isspace() or ch < " " for ch in name):
        raise error(f"key name {name[:64]!r} contains a space, a '+' or a control character")
    return name


def parse_note(data: bytes) -> Note:
    """Parse a signed note, checking its form (not its signatures: see ``open_note``)."""
    if not isinstance(data, bytes):
        raise MalformedNote("a note is bytes")
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNote(f"the note is over {MAX_NOTE_SIZE} bytes")
    note_text(data, "the note", MalformedNote)
    # The text ends at the last blank line; the signature block never holds one.
    split = data.rfind(b"\n\n")
    if split < 0:
        raise MalformedNote("no blank line separates the text from the signatures")
    text, block = data[: split + 1], data[split + 2 :]
    if not block.endswith(b"\n"):
        raise MalformedNote("the signature block is empty or does not end in a newline")
    lines = block[:-1].decode("utf-8").split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def parse_signature_line(line: str) -> NoteSignature:
    """One ``— <name> base64(key ID || signature)`` line, without its newline."""
    if not line.startswith(_SIGNATURE_PREFIX):
        raise MalformedNote("a signature line starts with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not space:
        raise MalformedNote("a signature line is '— <name> <base64>'")
    check_key_name(name, MalformedNote)
    raw = b64decode(encoded, "a signature", MalformedNote)
    if len(raw) <= KEY_ID_SIZE:
        raise MalformedNote("a signature is a 4-byte key ID and at least one byte more")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def format_note(note: Note) -> bytes:
    """The note's bytes: its text, a blank line, one line per signature (at least one)."""
    if not note.signatures:
        raise MalformedNote("a signed note has at least one signature")
    if len(note.signatures) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    block = "".join(sig.line() + "\n" for sig in note.signatures)
    data = note.text + b"\n" + block.encode("utf-8")
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNote(f"the note is over {MAX_NOTE_SIZE} bytes")
    return data


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || sig_type || public_key)[:4], the signed-note key ID."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class VerifierKey:
    """A parsed vkey: name, key ID (checked), signature type and public key bytes."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes


def parse_vkey(vkey: str) -> VerifierKey:
    """Parse ``<name>+<8 hex>+base64(type || key)``, checking the key ID; raises MalformedKey."""
    if not isinstance(vkey, str) or len(vkey) > 8192:
        raise MalformedKey("a vkey is a string of at most 8192 characters")
    name, _, rest = vkey.partition("+")
    return _parse_key_parts(name, rest, "vkey")


def _parse_key_parts(name: str, rest: str, what: str) -> VerifierKey:
    check_key_name(name, MalformedKey)
    id_hex, plus, encoded = rest.partition("+")
    if not plus or len(id_hex) != 2 * KEY_ID_SIZE or id_hex.strip("0123456789abcdef"):
        raise MalformedKey(f"a {what}'s key ID is 8 lowercase hex digits")
    material = b64decode(encoded, f"the {what}'s key", MalformedKey)
    if len(material) < 2:
        raise MalformedKey(f"a {what}'s key is a type byte and key material")
    return VerifierKey(name, bytes.fromhex(id_hex), material[0], material[1:])


def _format_key(name: str, ident: bytes, sig_type: int, material: bytes) -> str:
    return f"{name}+{ident.hex()}+{b64encode(bytes([sig_type]) + material)}"


class Ed25519KeyPair:
    """An Ed25519 key with a name, for the signature type in ``SIG_TYPE``; ``repr`` hides the seed."""

    SIG_TYPE: ClassVar[int] = SIG_TYPE_ED25519

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = check_key_name(name, MalformedKey)
        try:
            self._key = ed25519.SigningKey(seed)
        except ValueError as exc:
            raise MalformedKey(str(exc)) from exc
        self.public_key = self._key.public_key
        self.key_id = key_id(name, self.SIG_TYPE, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Self:
        return cls(name, ed25519.new_seed())

    @classmethod
    def from_skey(cls, skey: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)``; raises MalformedKey."""
        if not isinstance(skey, str) or not skey.startswith("PRIVATE+KEY+") or len(skey) > 8192:
            raise MalformedKey("an skey starts with PRIVATE+KEY+")
        name, _, rest = skey[len("PRIVATE+KEY+") :].partition("+")
        parts = _parse_key_parts(name, rest, "skey")
        if parts.sig_type != cls.SIG_TYPE:
            raise MalformedKey(f"the skey is of type {parts.sig_type:#04x}, not {cls.SIG_TYPE:#04x}")
        if len(parts.public_key) != ed25519.SEED_SIZE:
            raise MalformedKey(f"an Ed25519 skey holds a {ed25519.SEED_SIZE}-byte seed")
        pair = cls(parts.name, parts.public_key)
        if pair.key_id != parts.key_id:  # the ID is of the public key, known only once derived
            raise MalformedKey("the skey's key ID does not match its key")
        return pair

    @property
    def skey(self) -> str:
        return "PRIVATE+KEY+" + _format_key(self.name, self.key_id, self.SIG_TYPE, self._key.seed)

    @property
    def vkey(self) -> str:
        return _format_key(self.name, self.key_id, self.SIG_TYPE, self.public_key)

    def _sign_bytes(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class NoteSigner(Ed25519KeyPair):
    """Signs note texts with Ed25519 (signature type 0x01)."""

    SIG_TYPE = SIG_TYPE_ED25519

    def sign(self, text: bytes) -> NoteSignature:
        return NoteSignature(self.name, self.key_id, self._sign_bytes(text))


class Ed25519PublicKey:
    """A named Ed25519 public key for the signature type in ``SIG_TYPE``."""

    SIG_TYPE: ClassVar[int] = SIG_TYPE_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        self.name = check_key_name(name, MalformedKey)
        try:
            self._key = ed25519.VerifyKey(public_key)
        except ValueError as exc:
            raise MalformedKey(str(exc)) from exc
        self.public_key = public_key
        self.key_id = key_id(name, self.SIG_TYPE, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        parts = parse_vkey(vkey)
        if parts.sig_type != cls.SIG_TYPE:
            raise MalformedKey(f"the vkey is of type {parts.sig_type:#04x}, not {cls.SIG_TYPE:#04x}")
        key = cls(parts.name, parts.public_key)
        if key.key_id != parts.key_id:
            raise MalformedKey("the vkey's key ID does not match its key")
        return key

    @property
    def vkey(self) -> str:
        return _format_key(self.name, self.key_id, self.SIG_TYPE, self.public_key)

    def matches(self, sig: NoteSignature) -> bool:
        """Whether the signature line claims to be this key's (same name and key ID)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def _verify_bytes(self, message: bytes, signature: bytes) -> bool:
        return self._key.verify(message, signature)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Ed25519PublicKey) and other.vkey == self.vkey

    def __hash__(self) -> int:
        return hash((type(self), self.vkey))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class NoteVerifier(Ed25519PublicKey):
    """Checks Ed25519 (type 0x01) signatures over note texts."""

    SIG_TYPE = SIG_TYPE_ED25519

    def verify(self, text: bytes, sig: NoteSignature) -> bool:
        return self.matches(sig) and self._verify_bytes(text, sig.signature)


class Signer(Protocol):
    def sign(self, text: bytes) -> NoteSignature: ...


class Verifier(Protocol):
    """Anything ``open_note`` can check with: ``verify`` answers False or None to refuse."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    @property
    def vkey(self) -> str: ...

    def verify(self, text: bytes, sig: NoteSignature) -> bool | int | None: ...


def sign_note(text: bytes, *signers: Signer) -> bytes:
    """The signed note of ``text`` (ending in a newline) with one signature per signer, in order."""
    note = Note(text, ())
    return format_note(Note(note.text, tuple(signer.sign(text) for signer in signers)))


def open_note(data: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse ``data`` and check it: the note with only the signatures known keys verified.

    Lines from unknown keys (another name or key ID) are left out. A line from a known key that
    does not verify refuses the whole note, as does a note that no known key signed
    (``UnverifiedNote``). A key repeated in the note is verified each time and kept once.
    """
    return check_note(parse_note(data), verifiers)


def check_note(note: Note, verifiers: Iterable[Verifier]) -> Note:
    """``open_note`` for a note already parsed."""
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot].vkey != verifier.vkey:
            raise MalformedKey(f"two different keys are both {verifier.name}+{verifier.key_id.hex()}")
        known[slot] = verifier
    verified: list[NoteSignature] = []
    for sig in note.signatures:
        checker = known.get((sig.name, sig.key_id))
        if checker is None:
            continue
        outcome = checker.verify(note.text, sig)
        if outcome is None or outcome is False:
            raise UnverifiedNote(f"the signature of {sig.name}+{sig.key_id.hex()} does not verify", key=checker.vkey)
        if all((seen.name, seen.key_id) != (sig.name, sig.key_id) for seen in verified):
            verified.append(sig)
    if not verified:
        raise UnverifiedNote("no known key signed the note", known=sorted(v.vkey for v in known.values()))
    return Note(note.text, tuple(verified))

"""Witness cosignatures, version 1 (c2sp.org/tlog-cosignature, Ed25519, signature type 0x04).

What it is for: a witness's statement that, as of a time, the checkpoint it signs is the
largest consistent tree it has seen for that origin. The signed message is

    cosignature/v1\\ntime <timestamp, decimal>\\n<checkpoint body>

and the signature line's payload is key ID || 8-byte big-endian timestamp || 64-byte
signature, the key ID being SHA-256(name || 0x0A || 0x04 || public key)[:4]. Keys are written
as vkeys/skeys like note keys, with type byte 0x04. The message does not commit to the
cosigner's name: one key must serve one witness name only.

It must never do I/O or read a clock: the timestamp is always the caller's, in whole seconds.
"""

from __future__ import annotations

from ledger.errors import MalformedNote
from ledger.tlog import ed25519
from ledger.tlog.note import SIG_TYPE_COSIGNATURE_V1, Ed25519KeyPair, Ed25519PublicKey, NoteSignature
from ledger.tlog.text import INT63_MAX

TIMESTAMP_SIZE = 8
COSIGNATURE_SIZE = TIMESTAMP_SIZE + ed25519.SIGNATURE_SIZE


def cosigned_message(checkpoint_body: bytes, timestamp_s: int) -> bytes:
    """The bytes an Ed25519 cosignature/v1 signs."""
    if not isinstance(timestamp_s, int) or isinstance(timestamp_s, bool) or not 0 <= timestamp_s <= INT63_MAX:
        raise MalformedNote(f"a cosignature timestamp is an integer in [0, 2^63 - 1], not {timestamp_s!r}")
    return b"cosignature/v1\ntime %d\n" % timestamp_s + checkpoint_body


class CosignatureSigner(Ed25519KeyPair):
    """A witness's cosignature/v1 key."""

    SIG_TYPE = SIG_TYPE_COSIGNATURE_V1

    def cosign(self, checkpoint_body: bytes, timestamp_s: int) -> NoteSignature:
        signature = self._sign_bytes(cosigned_message(checkpoint_body, timestamp_s))
        return NoteSignature(self.name, self.key_id, timestamp_s.to_bytes(TIMESTAMP_SIZE, "big") + signature)


class CosignatureVerifier(Ed25519PublicKey):
    """Checks a witness's cosignature/v1 lines."""

    SIG_TYPE = SIG_TYPE_COSIGNATURE_V1

    def verify(self, body: bytes, sig: NoteSignature) -> int | None:
        """The cosignature's timestamp (seconds) if it is this witness's and valid, else None."""
        if not self.matches(sig) or len(sig.signature) != COSIGNATURE_SIZE:
            return None
        timestamp_s = int.from_bytes(sig.signature[:TIMESTAMP_SIZE], "big")
        if timestamp_s > INT63_MAX:
            return None
        if not self._verify_bytes(cosigned_message(body, timestamp_s), sig.signature[TIMESTAMP_SIZE:]):
            return None
        return timestamp_s

"""Shared makers for the tlog tests: a log of entries, its signed checkpoints, proofs and witnesses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ledger import merkle
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.cosignature import CosignatureSigner
from ledger.tlog.note import Note, NoteSigner, format_note
from ledger.tlog.proof import TlogProof

ORIGIN = "inferpay.test/log"


def seeded(label: str) -> bytes:
    """A fixed Ed25519 seed per label, so failures reproduce."""
    return hashlib.sha256(b"inferpay tlog tests: " + label.encode()).digest()


@dataclass
class MemoryLog:
    """An in-memory log: entries, their leaf hashes, a signer; signs checkpoints at any size."""

    origin: str = ORIGIN
    entries: list[bytes] = field(default_factory=list)
    signer: NoteSigner = field(default_factory=lambda: NoteSigner(ORIGIN, seeded("log")))

    def append(self, *entries: bytes) -> None:
        self.entries.extend(entries)

    @property
    def leaves(self) -> list[bytes]:
        return [merkle.leaf_hash(entry) for entry in self.entries]

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = len(self.entries) if size is None else size
        return Checkpoint(self.origin, size, merkle.merkle_root(self.leaves[:size]))

    def signed(self, size: int | None = None, *witnesses: CosignatureSigner, timestamp_s: int = 1_700_000_000) -> bytes:
        body = self.checkpoint(size).body()
        sigs = [self.signer.sign(body), *(w.cosign(body, timestamp_s) for w in witnesses)]
        return format_note(Note(body, tuple(sigs)))

    def proof(self, index: int, size: int | None = None, *witnesses: CosignatureSigner) -> TlogProof:
        size = len(self.entries) if size is None else size
        path = merkle.inclusion_proof(self.leaves[:size], index)
        return TlogProof(index, tuple(path), self.signed(size, *witnesses))


def witness(label: str) -> CosignatureSigner:
    return CosignatureSigner(f"witness.test/{label}", seeded("witness " + label))

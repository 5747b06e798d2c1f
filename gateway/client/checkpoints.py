"""The client's memory of a log: the newest checkpoint it has seen per origin, and the check
that every other checkpoint it is shown is consistent with it (no split view, no rollback).

``CheckpointTracker.observe(note, consistency)`` accepts a signed checkpoint only if the log's
key signed it, the policy's witness quorum cosigned it (when a policy is given), and it is
consistent with the newest one seen: a larger tree must extend it (an RFC 6962 consistency
proof, fetched through ``consistency(old_size, new_size)``), the same size must have the same
root, a smaller tree must be a prefix of it. An inconsistent pair is refused with
``InconsistentCheckpoints`` and kept as evidence: both notes, signed by the same key, that no
honest log can have signed both of (a file in ``directory``, when one is given, named in the
error's ``evidence``). The newest
checkpoint per origin is kept in ``directory`` too, so the memory survives restarts.

Sans-IO apart from its own directory: the caller supplies the consistency proofs (from the
ledger API, a mirror or tiles). ``receipt_checkpoint`` checks an offline receipt the same way.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ledger.errors import InconsistentCheckpoints
from ledger.merkle import verify_consistency
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import NoteVerifier, open_note
from ledger.tlog.policy import Policy
from ledger.tlog.proof import parse_tlog_proof, verify_tlog_proof

ConsistencyFetcher = Callable[[int, int], list[bytes]]


class CheckpointTracker:
    def __init__(self, log: NoteVerifier, *, policy: Policy | None = None, directory: Path | None = None) -> None:
        self.log = log
        self.policy = policy
        self.directory = directory
        self._lock = threading.Lock()
        self._latest: tuple[Checkpoint, bytes] | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            saved = self._state_path()
            if saved.exists():
                note = saved.read_bytes()
                self._latest = (self._opened(note), note)

    @property
    def latest(self) -> Checkpoint | None:
        return self._latest[0] if self._latest is not None else None

    @property
    def latest_note(self) -> bytes | None:
        """The signed note of ``latest``, as the log served it."""
        return self._latest[1] if self._latest is not None else None

    def _opened(self, note: bytes) -> Checkpoint:
        checkpoint = parse_checkpoint(open_note(note, [self.log]).text)
        if checkpoint.origin != self.log.name:
            raise InconsistentCheckpoints(
                f"the checkpoint names origin {checkpoint.origin!r}, not the log's {self.log.name!r}",
                origin=checkpoint.origin,
                old_note="",
                new_note=note.decode("utf-8", "replace"),
            )
        if self.policy is not None:
            self.policy.check(note, checkpoint)
        return checkpoint

    def observe(self, note: bytes, consistency: ConsistencyFetcher) -> Checkpoint:
        """Check ``note`` against the newest checkpoint seen and remember it if it is newer."""
        checkpoint = self._opened(note)
        with self._lock:
            if self._latest is None:
                self._remember(checkpoint, note)
                return checkpoint
            known, known_note = self._latest
            small, large = (known, checkpoint) if known.size <= checkpoint.size else (checkpoint, known)
            if small.size == large.size:
                consistent = small.root_hash == large.root_hash
            else:
                proof = consistency(small.size, large.size) if small.size else []
                consistent = verify_consistency(small.size, large.size, small.root_hash, large.root_hash, proof)
            if not consistent:
                evidence = self._save_evidence(known_note, note)
                raise InconsistentCheckpoints(
                    f"{checkpoint.origin}: the checkpoint of {checkpoint.size} entries is not consistent with "
                    f"the one of {known.size} entries seen before: the log showed two histories",
                    origin=checkpoint.origin,
                    old_note=known_note.decode(),
                    new_note=note.decode(),
                    **({"evidence": str(evidence)} if evidence is not None else {}),
                )
            if checkpoint.size > known.size:
                self._remember(checkpoint, note)
            return checkpoint

    def receipt_checkpoint(self, tlog_proof: bytes, entry: bytes | None, consistency: ConsistencyFetcher) -> Checkpoint:
        """Check an offline receipt (c2sp.org/tlog-proof; its entry from ``extra`` unless given),
        then its checkpoint against the newest seen."""
        proof = parse_tlog_proof(tlog_proof)
        data = entry if entry is not None else proof.extra
        if data is None:
            raise InconsistentCheckpoints(
                "the receipt carries no entry", origin=self.log.name, old_note="", new_note=""
            )
        verify_tlog_proof(proof, data, self.log, self.policy)
        return self.observe(proof.checkpoint, consistency)

    # ---- the directory ----

    def _state_path(self) -> Path:
        assert self.directory is not None
        return self.directory / f"latest-{_slug(self.log.name)}.checkpoint"

    def _remember(self, checkpoint: Checkpoint, note: bytes) -> None:
        self._latest = (checkpoint, note)
        if self.directory is not None:
            _write_atomically(self._state_path(), note)

    def _save_evidence(self, old_note: bytes, new_note: bytes) -> Path | None:
        if self.directory is None:
            return None
        name = f"evidence-{_slug(self.log.name)}-{time.time_ns()}.txt"
        text = (
            b"# Two checkpoints signed by the same log key that cannot both be true\n"
            b"# (neither tree extends the other). Each verifies with: " + self.log.vkey.encode() + b"\n\n"
            b"-----BEGIN FIRST CHECKPOINT-----\n" + old_note + b"-----END FIRST CHECKPOINT-----\n\n"
            b"-----BEGIN SECOND CHECKPOINT-----\n" + new_note + b"-----END SECOND CHECKPOINT-----\n"
        )
        _write_atomically(self.directory / name, text)
        return self.directory / name


def _slug(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()[:16]


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)

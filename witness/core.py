"""The add-checkpoint rules of c2sp.org/tlog-witness, top to bottom: what makes the witness
cosign, and the one error each refusal is (the HTTP layer maps them to the spec's statuses).

``Witness.add_checkpoint(body)`` reads a request and either returns the cosignature lines or
raises, in the spec's order:

1. the body is an add-checkpoint request             else MalformedWitnessRequest    400
2. its origin is a log this witness follows          else UnknownLog                 404
3. that log's key signed the checkpoint              else UnverifiedNote             403
4. old size <= checkpoint size                       else MalformedWitnessRequest    400
5. old size == the size held for the log             else OldSizeMismatch(size)      409
6. same size as held: same root                      else InconsistentCheckpoints    409 (evidence kept)
7. the consistency proof, held -> new, verifies      else InvalidProof               422
7b. a witness that keeps its own verified copy of the log (a mirror) holding at least that many
    entries: the copy's root at that size is the checkpoint's   else InconsistentCheckpoints 409
8. the new state is on disk (compare-and-set on what 5-7 checked; a lost race is 5's 409)
9. only then: cosign, timestamped now.

It must never cosign before step 8 has committed, and never touch HTTP or SQL itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ledger.clock import MsClock, ms_to_s, system_now_ms
from ledger.errors import InconsistentCheckpoints, InvalidProof, MalformedWitnessRequest, OldSizeMismatch, UnknownLog
from ledger.merkle import verify_consistency
from ledger.tlog.cosignature import CosignatureSigner
from ledger.tlog.note import NoteSignature, NoteVerifier, check_note
from ledger.tlog.witness_protocol import parse_add_checkpoint
from witness.store import HeldCheckpoint, WitnessStore

# (origin, size) -> the root of the witness's own verified copy of that log at ``size``, or None
# when the copy holds fewer entries (or none of that log). Only a mirror has one.
OwnCopyRoot = Callable[[str, int], bytes | None]


class Witness:
    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Mapping[str, NoteVerifier],
        store: WitnessStore,
        clock_ms: MsClock = system_now_ms,
        own_copy_root: OwnCopyRoot | None = None,
    ) -> None:
        self.signer = signer
        self.logs = dict(logs)
        self.store = store
        self.clock_ms = clock_ms
        self.own_copy_root = own_copy_root
        store.ensure_logs([(origin, key.vkey) for origin, key in self.logs.items()], clock_ms())

    def add_checkpoint(self, body: bytes) -> list[NoteSignature]:
        # 1. A well-formed request: old size, at most 63 proof hashes, a signed checkpoint.
        request = parse_add_checkpoint(body)
        checkpoint = request.checkpoint
        # 2. A log we follow, known by its origin line.
        log = self.logs.get(checkpoint.origin)
        if log is None:
            raise UnknownLog(f"this witness follows no log {checkpoint.origin!r}", origin=checkpoint.origin)
        # 3. Signed by that log's key; other keys' lines (other witnesses' cosignatures) are ignored.
        check_note(request.note, [log])
        # 4. A log does not shrink.
        if request.old_size > checkpoint.size:
            raise MalformedWitnessRequest(f"old size {request.old_size} is above the checkpoint's {checkpoint.size}")
        # 5. The client must prove from what we hold, and nothing else.
        held = self._held(checkpoint.origin)
        if request.old_size != held.size:
            raise OldSizeMismatch(f"this witness holds size {held.size} for {checkpoint.origin}", size=held.size)
        # 6. Two roots at one size: the log forked. Keep both notes; cosign neither.
        if checkpoint.size == held.size and checkpoint.root_hash != held.root:
            self.store.record_evidence(checkpoint.origin, held.note, request.signed_checkpoint, self.clock_ms())
            raise InconsistentCheckpoints(
                f"{checkpoint.origin} signed two roots at size {checkpoint.size}",
                origin=checkpoint.origin,
                old_note=(held.note or b"").decode("utf-8"),
                new_note=request.signed_checkpoint.decode("utf-8"),
            )
        # 7. The new tree extends the held one (the proof is empty from size 0 or to the same size).
        if not verify_consistency(held.size, checkpoint.size, held.root, checkpoint.root_hash, request.consistency):
            raise InvalidProof(
                f"the consistency proof from {held.size} to {checkpoint.size} does not verify",
                old_size=held.size,
                size=checkpoint.size,
            )
        # 7b. A mirror has verified every entry it holds: a root it did not compute is a fork.
        if self.own_copy_root is not None:
            own_root = self.own_copy_root(checkpoint.origin, checkpoint.size)
            if own_root is not None and own_root != checkpoint.root_hash:
                self.store.record_evidence(checkpoint.origin, held.note, request.signed_checkpoint, self.clock_ms())
                raise InconsistentCheckpoints(
                    f"{checkpoint.origin} signed a root at size {checkpoint.size} that is not the root of "
                    "this mirror's verified copy",
                    origin=checkpoint.origin,
                    old_note=(held.note or b"").decode("utf-8"),
                    new_note=request.signed_checkpoint.decode("utf-8"),
                )
        # 8. On disk before any cosignature exists, and only from the state 5-7 checked.
        if checkpoint.size != held.size:
            advanced = self.store.advance(
                held, checkpoint.size, checkpoint.root_hash, request.signed_checkpoint, self.clock_ms()
            )
            if not advanced:
                now = self._held(checkpoint.origin)
                raise OldSizeMismatch(f"this witness holds size {now.size} for {checkpoint.origin}", size=now.size)
        # 9. Cosign: "as of now, the largest consistent tree we have seen for this origin has this root".
        return [self.signer.cosign(checkpoint.body(), ms_to_s(self.clock_ms()))]

    def _held(self, origin: str) -> HeldCheckpoint:
        held = self.store.held(origin)
        if held is None:  # ensure_logs made a row for every configured log
            raise UnknownLog(f"no state for log {origin!r}", origin=origin)
        return held

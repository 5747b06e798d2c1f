"""Publishing checkpoints: sign the sealed head's checkpoint, push it to the witnesses, keep
their cosignatures. Runs in the one elected sealer process of a host (``AutoSealer``'s tick).

Money never waits for this: a paid call only appends to the ledger, and the sealer's tick only
*starts* a publication when the tree has grown and ``interval_ms`` has passed since the last
one; witness round trips run on their own threads, one in flight per witness (a slow or dead
witness is skipped until its last push ends, never queued behind). A witness that refuses a
checkpoint (409 stale size: retried once from the size it says it holds; 422 inconsistent;
403 unknown key) is reported loudly: a log line at ERROR, the ``inferpay_witness_pushes_total``
metric, and each witness's last outcome in ``<home>/witness-status.json`` (``status_path``,
rewritten atomically after every push), which ``inferpay info`` shows. Cosignatures are kept
as they arrive and merged into the stored notes on the next tick, in the same write as that
tick's new checkpoint: one write per tick at most, however many witnesses answer (each write
is a durable commit queued on the ledger's write lock, beside the paid calls' own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.server.config import WitnessConfig
from gateway.server.snapshots import read_snapshot, write_snapshot
from ledger.checkpoints import sign_checkpoint, with_cosignatures
from ledger.clock import system_now_ms
from ledger.errors import InferpayError, OldSizeMismatch, WitnessUnavailable
from ledger.ledger import Ledger
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import NoteSignature, NoteSigner, parse_note
from ledger.transparency import TransparencyLog
from witness.client import add_checkpoint

log = logging.getLogger("inferpay.checkpoints")
STATUS_FILE = "witness-status.json"


@dataclass
class WitnessState:
    config: WitnessConfig
    verifier: CosignatureVerifier
    size: int = 0  # the tree size this witness last cosigned (or told us it holds)
    busy: bool = False
    last_ok_ms: int | None = None
    last_error: str | None = None
    refusals: int = 0
    last_outcome: str | None = None  # cosigned | refused | unreachable | failed
    last_outcome_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.verifier.name,
            "url": self.config.url,
            "size": self.size,
            "lastOutcome": self.last_outcome,
            "lastOutcomeAtMs": self.last_outcome_ms,
            "lastCosignedAtMs": self.last_ok_ms,
            "lastError": self.last_error,
            "refusals": self.refusals,
        }


@dataclass
class CheckpointPublisher:
    ledger: Ledger
    signer: NoteSigner
    witnesses: list[WitnessConfig]
    interval_ms: int = 2000
    timeout_s: float = 5.0
    on_push: Callable[[str, str], None] | None = None  # (witness name, cosigned|refused|unreachable)
    status_path: Path | None = None  # where each witness's last outcome is written (``read_status``)
    _log: TransparencyLog = field(init=False)
    _states: list[WitnessState] = field(init=False)
    _pool: ThreadPoolExecutor | None = field(init=False, default=None)
    _signed_size: int = field(init=False, default=-1)
    _signed_at_ms: int = field(init=False, default=0)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _status_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _cosigned: dict[int, list[NoteSignature]] = field(init=False, default_factory=dict)  # merged on the next tick

    def __post_init__(self) -> None:
        self._log = TransparencyLog(self.ledger.store)
        self._states = [WitnessState(w, CosignatureVerifier.from_vkey(w.vkey)) for w in self.witnesses]
        if self._states:
            self._pool = ThreadPoolExecutor(len(self._states), thread_name_prefix="inferpay-witness")
        latest = self.ledger.store.checkpoints.latest()
        if latest is not None:
            self._signed_size = latest[0]

    def tick(self) -> None:
        """Store the cosignatures gathered since the last tick, sign and publish the head's
        checkpoint if the tree grew and the interval passed: one write for both."""
        now = system_now_ms()
        head = self.ledger.head()
        size = head.header.tree_size
        writes = self._merged_cosignatures()
        grown = size > self._signed_size or self._signed_size < 0
        due = now - self._signed_at_ms >= self.interval_ms or self._signed_size < 0
        if grown and due:
            writes.setdefault(size, self.ledger.store.checkpoints.at(size) or sign_checkpoint(head, self.signer))
        self._write(writes, now)
        if grown and not due:
            return
        if grown:
            self._signed_size, self._signed_at_ms = size, now
        self._push_lagging(size)

    def _merged_cosignatures(self) -> dict[int, bytes]:
        with self._lock:
            gathered, self._cosigned = self._cosigned, {}
        merged: dict[int, bytes] = {}
        for size, cosignatures in gathered.items():
            stored = self.ledger.store.checkpoints.at(size)
            if stored is not None:  # else pruned meanwhile: nobody serves that size any more
                merged[size] = with_cosignatures(stored, cosignatures)
        return merged

    def _write(self, notes: dict[int, bytes], now: int) -> None:
        if not notes:
            return
        try:
            self.ledger.store.checkpoints.save_many(notes, now)
        except Exception:
            with self._lock:  # kept for the next tick, not lost (the notes are re-derived then)
                for size, note in notes.items():
                    cosignatures = list(parse_note(note).signatures[1:])
                    self._cosigned.setdefault(size, []).extend(cosignatures)
            raise

    def _push_lagging(self, size: int) -> None:
        if self._pool is None:
            return
        for state in self._states:
            with self._lock:
                if state.busy or state.size >= size:
                    continue
                state.busy = True
            self._pool.submit(self._push, state, size)

    def _push(self, state: WitnessState, size: int) -> None:
        try:
            note = self.ledger.store.checkpoints.at(size)
            if note is None:
                return
            for attempt in range(2):  # a 409 names the size the witness holds: retry once from it
                proof = self._log.consistency_proof(state.size, size) if state.size else []
                try:
                    good = add_checkpoint(
                        state.config.url, state.size, proof, note, self.timeout_s, verifier=state.verifier
                    )
                except OldSizeMismatch as stale:
                    held = stale.details.get("size")
                    if attempt == 0 and isinstance(held, int) and held != state.size and held <= size:
                        state.size = held
                        continue
                    raise
                with self._lock:  # stored by the next tick, with every other witness's answer
                    self._cosigned.setdefault(size, []).extend(good)
                state.size, state.last_ok_ms, state.last_error = size, system_now_ms(), None
                self._report(state, "cosigned")
                return
        except WitnessUnavailable as down:  # down or slow: tried again on a later tick
            state.last_error = down.message
            self._report(state, "unreachable")
            log.warning("witness %s unreachable for checkpoint %d: %s", state.config.url, size, down.message)
        except InferpayError as refused:  # it answered no: it saw another history, or distrusts us
            state.refusals += 1
            state.last_error = f"{refused.code}: {refused.message}"
            self._report(state, "refused")
            log.error("witness %s REFUSED checkpoint %d: %s", state.config.url, size, state.last_error)
        except Exception as exc:  # e.g. a proof we could not build: report, never kill the sealer
            state.last_error = f"{type(exc).__name__}: {exc}"
            state.last_outcome, state.last_outcome_ms = "failed", system_now_ms()
            log.exception("publishing checkpoint %d to witness %s failed", size, state.config.url)
        finally:
            with self._lock:
                state.busy = False
            self._write_status()

    def _report(self, state: WitnessState, outcome: str) -> None:
        state.last_outcome, state.last_outcome_ms = outcome, system_now_ms()
        if self.on_push is not None:
            self.on_push(state.verifier.name, outcome)

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        # One writer at a time, snapshot and rename together: two witnesses' threads writing at
        # once could otherwise leave the older snapshot in place.
        with self._status_lock:
            write_snapshot(self.status_path, {"writtenAtMs": system_now_ms(), "witnesses": self.status()})

    def status(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self._states]

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait for the pushes in flight (for tests and an orderly stop)."""
        deadline = time.monotonic() + timeout_s
        while any(s.busy for s in self._states) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self._write(self._merged_cosignatures(), system_now_ms())
        except Exception:  # the cosignatures are asked for again by the next sealer
            log.exception("could not store the last cosignatures")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def read_status(home: Path) -> dict[str, Any] | None:
    """What this host's sealer last wrote of its witnesses (``<home>/witness-status.json``), or
    None if no gateway here has pushed to one."""
    return read_snapshot(home / STATUS_FILE)

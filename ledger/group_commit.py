"""Group commit: many threads' ledger writes share one durable commit.

A paid call writes twice (hold, then settle), and on SQLite each durable commit waits for an
fsync. Under concurrency, most of that waiting can be shared: callers queue their transaction
and block; one writer thread takes everything queued, applies it in a single database
transaction (each in its own savepoint, so a refused one fails alone) and commits once. Every
caller returns only after the commit that holds its transaction is on disk, so an acknowledged
payment is exactly as durable as before. With one caller at a time it costs one thread handoff.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Protocol

from ledger.errors import InferpayError, StorageUnavailable
from ledger.store import LedgerStore, StoredTx
from ledger.types import HOLD_KINDS, Transaction, TxId

Item = tuple[Transaction, TxId, bytes]
Outcome = tuple[StoredTx, bool] | InferpayError


class BatchingStore(Protocol):
    def append_many(self, items: list[Item], *, durable: bool = True) -> list[Outcome]: ...


@dataclass
class _Waiting:
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    failure: BaseException | None = None


class GroupCommitter:
    def __init__(self, store: LedgerStore, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inferpay-group-commit", daemon=True)
        self._thread.start()

    def append(self, tx: Transaction, tx_id: TxId, leaf_hash: bytes) -> tuple[StoredTx, bool]:
        waiting = _Waiting((tx, tx_id, leaf_hash))
        self._queue.put(waiting)
        waiting.done.wait()
        if waiting.failure is not None:
            raise waiting.failure
        assert waiting.outcome is not None
        if isinstance(waiting.outcome, InferpayError):
            raise waiting.outcome
        return waiting.outcome

    def _run(self) -> None:
        batcher: BatchingStore = self.store  # type: ignore[assignment]
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                # fsync unless every transaction in the batch is a hold (see SQLiteStore.append_many)
                durable = any(w.item[0].kind not in HOLD_KINDS for w in batch)
                outcomes = batcher.append_many([w.item for w in batch], durable=durable)
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    waiting.outcome = outcome
            except InferpayError as exc:
                for waiting in batch:
                    waiting.failure = exc
            except Exception as exc:  # a database failure: nobody in this batch is acknowledged
                for waiting in batch:
                    waiting.failure = StorageUnavailable(f"ledger write failed: {type(exc).__name__}: {exc}")
            for waiting in batch:
                waiting.done.set()

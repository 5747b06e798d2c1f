"""The auditor's stateless checks of stored transactions, and their fan-out over processes.

What can be checked about one stored record without the rest of history (does it parse, its
leaf hash and id, its window and amounts, its signature: the costly part, ~50 µs of
libsecp256k1 per transaction, which holds the GIL) is computed here, row by row, in the order
the rows came. ``prechecked`` yields each row with its result; on a long chain it hands chunks
of rows to worker processes, a bounded number at a time (memory stays flat), while the caller
replays history on the results as they come back, in order. Nothing stateful happens here:
nonces, balances and the chain's links stay with the auditor, in its one process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from ledger.encoding import leaf_hash, signing_digest, transaction_id
from ledger.errors import InferpayError
from ledger.store import RawTx
from ledger.types import ChainInfo, Transaction
from ledger.validation import check_transaction

CHUNK = 2000  # rows per task: big enough that pickling and scheduling cost little per row
PARALLEL_AFTER = 2000  # rows read before workers start (forking them costs ~20 ms): short chains stay here


@dataclass(frozen=True)
class Precheck:
    """One stored row, checked on its own. ``tx`` is None when the record does not parse
    (``parse_error`` says why)."""

    tx: Transaction | None
    parse_error: str | None
    leaf: bytes | None
    tx_id: str | None
    invalid: tuple[str, str] | None  # (code, message) of the first rule the transaction breaks
    independent_ok: bool | None  # the second verifier's verdict, when one was asked for


def check_record(chain: ChainInfo, record: str, independent: bool) -> Precheck:
    try:
        tx = Transaction.from_dict(json.loads(record))
    except (ValueError, InferpayError) as exc:
        return Precheck(None, str(exc), None, None, None, None)
    invalid = None
    try:
        check_transaction(chain, tx, tx.accepted_at // 1000)
    except InferpayError as exc:
        invalid = (exc.code, str(exc))
    second = None
    if independent and invalid is None:
        second = second_opinion(signing_digest(chain, tx.message), tx.signature, tx.signer)
    return Precheck(tx, None, leaf_hash(tx), transaction_id(tx), invalid, second)


def second_opinion(digest: bytes, signature: str, expected: str) -> bool:
    from ledger.independent_verifier import recover_address_independently

    try:
        return recover_address_independently(digest, signature) == expected
    except Exception:
        return False


def prechecked(
    chain: ChainInfo, rows: Iterable[RawTx], *, independent: bool = False, workers: int | None = None
) -> Iterator[tuple[RawTx, Precheck]]:
    """Each row with its check, in the order given. ``workers`` forked processes take over once
    the chain proves longer than ``PARALLEL_AFTER`` rows (default: one per core when this
    process has no other thread; 0 or 1: none; an explicit number is the caller's word that
    forking is safe here)."""
    if workers is None:
        # Workers are forked (spawn would re-run the caller's __main__, which a script need not
        # guard), and forking is safe only when no other thread might hold a lock at that moment:
        # by default a process with threads (a server, a PostgreSQL pool) checks everything here.
        workers = (os.cpu_count() or 1) if threading.active_count() == 1 else 1
    source = iter(rows)
    seen = 0
    if workers > 1:
        head: list[RawTx] = []
        for row in source:
            head.append(row)
            if len(head) >= PARALLEL_AFTER:
                break
        seen = len(head)
        for row in head:
            yield row, check_record(chain, row.record, independent)
        if seen < PARALLEL_AFTER:
            return
        yield from _in_workers(chain, source, independent, workers)
        return
    for row in source:
        yield row, check_record(chain, row.record, independent)


def _chunks(rows: Iterator[RawTx]) -> Iterator[list[RawTx]]:
    chunk: list[RawTx] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _in_workers(chain: ChainInfo, rows: Iterator[RawTx], independent: bool, workers: int) -> Iterator[
    tuple[RawTx, Precheck]
]:
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(chain.to_dict(), independent)) as pool:
        in_flight: deque[tuple[list[RawTx], Future[list[tuple[Any, ...]]]]] = deque()
        chunks = _chunks(rows)
        for chunk in chunks:
            in_flight.append((chunk, pool.submit(_check_chunk, [row.record for row in chunk])))
            if len(in_flight) >= 2 * workers:  # bounded: memory does not grow with the chain
                break
        while in_flight:
            chunk, future = in_flight.popleft()
            following = next(chunks, None)
            if following is not None:
                in_flight.append((following, pool.submit(_check_chunk, [row.record for row in following])))
            for row, result in zip(chunk, future.result(), strict=True):
                yield row, Precheck(*result)


_WORKER: dict[str, Any] = {}  # per worker process: set once by _worker_init, read by _check_chunk


def _worker_init(chain: dict[str, Any], independent: bool) -> None:
    _WORKER["chain"] = ChainInfo.from_dict(chain)
    _WORKER["independent"] = independent


def _check_chunk(records: list[str]) -> list[tuple[Any, ...]]:
    chain, independent = _WORKER["chain"], _WORKER["independent"]
    out = []
    for record in records:
        result = check_record(chain, record, independent)
        out.append((result.tx, result.parse_error, result.leaf, result.tx_id, result.invalid, result.independent_ok))
    return out

"""The auditor's stateless checks of stored transactions, and their fan-out over processes.

What can be checked about one stored record without the rest of history (does it parse, its
leaf hash and id, its window and amounts, its signature: the costly part, ~50 µs of
libsecp256k1 per transaction, which holds the GIL) is computed here, row by row, in the order
the rows came. ``prechecked`` yields each row with its result; on a long chain it hands chunks
of rows to worker processes, one chunk per worker at a time (memory stays flat), while the
caller replays history on the results as they come back, in order. Nothing stateful happens here:
nonces, balances and the chain's links stay with the auditor, in its one process.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.clock import ms_to_s
from ledger.encoding import leaf_hash, transaction_id
from ledger.errors import InferpayError, StorageUnavailable
from ledger.storage.base import RawTx
from ledger.types import ChainInfo, Transaction
from ledger.validation import check_transaction

CHUNK = 500  # rows per task: pickling and scheduling cost little per row, and few rows are in flight
PARALLEL_AFTER = 2000  # rows checked here first (workers take ~0.3 s to start): short chains stay here


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
        check_transaction(chain, tx, ms_to_s(tx.accepted_at_ms))
    except InferpayError as exc:
        invalid = (exc.code, str(exc))
    second = None
    if independent and invalid is None:
        from ledger.audit.independent_verifier import independent_digest

        try:
            digest = independent_digest(chain, tx.message)
        except Exception:  # the second encoder cannot encode it at all: no second opinion for it
            second = False
        else:
            second = second_opinion(digest, tx.signature, tx.signer)
    return Precheck(tx, None, leaf_hash(tx), transaction_id(tx), invalid, second)


def second_opinion(digest: bytes, signature: str, expected: str) -> bool:
    from ledger.audit.independent_verifier import recover_address_independently

    try:
        return recover_address_independently(digest, signature) == expected
    except Exception:
        return False


def prechecked(
    chain: ChainInfo, rows: Iterable[RawTx], *, independent: bool = False, workers: int | None = None
) -> Iterator[tuple[RawTx, Precheck]]:
    """Each row with its check, in the order given. ``workers`` worker processes (default: one
    per core; 0 or 1: none) take over once the chain proves longer than ``PARALLEL_AFTER`` rows."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    source = iter(rows)
    if workers <= 1:
        for row in source:
            yield row, check_record(chain, row.record, independent)
        return
    head = list(itertools.islice(source, PARALLEL_AFTER))
    pool = _Workers(chain, independent, workers) if len(head) == PARALLEL_AFTER else None
    try:
        for row in head:  # checked here while the workers start
            yield row, check_record(chain, row.record, independent)
        if pool is not None:
            yield from pool.check(source)
    finally:
        if pool is not None:
            pool.close()


class _Workers:
    """Fresh interpreters (``python -m ledger.audit.worker``), not forks: nothing of the caller is
    inherited (its threads, its locks, its memory: a forked worker's copy of the auditor's pages
    turns private as the auditor writes to them, and the footprint grew with the audit), and the
    caller's ``__main__`` is never re-run. Chunks go down each worker's stdin and results come
    back up its stdout as pickles, one chunk in flight per worker, so a worker is busy while the
    auditor replays the chunk before."""

    def __init__(self, chain: ChainInfo, independent: bool, count: int) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # the directory holding ledger/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "ledger.audit.worker", json.dumps(chain.to_dict()), "1" if independent else "0"]
        self.processes = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) for _ in range(count)
        ]

    def check(self, rows: Iterator[RawTx]) -> Iterator[tuple[RawTx, Precheck]]:
        chunks = _chunks(rows)
        in_flight: deque[tuple[list[RawTx], subprocess.Popen[bytes]]] = deque()
        for process, chunk in zip(self.processes, chunks, strict=False):
            self._send(process, chunk)
            in_flight.append((chunk, process))
        while in_flight:
            chunk, process = in_flight.popleft()
            results = self._receive(process)  # read before writing again: neither side can block the other
            following = next(chunks, None)
            if following is not None:
                self._send(process, following)
                in_flight.append((following, process))
            for row, result in zip(chunk, results, strict=True):
                yield row, Precheck(*result)

    @staticmethod
    def _send(process: subprocess.Popen[bytes], chunk: list[RawTx]) -> None:
        assert process.stdin is not None
        try:
            pickle.dump([row.record for row in chunk], process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
        except BrokenPipeError as exc:
            raise _died(process) from exc

    @staticmethod
    def _receive(process: subprocess.Popen[bytes]) -> list[tuple[Any, ...]]:
        assert process.stdout is not None
        try:
            results: list[tuple[Any, ...]] = pickle.load(process.stdout)
        except EOFError as exc:
            raise _died(process) from exc
        return results

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                with contextlib.suppress(BrokenPipeError):  # a dead worker: nothing to tell it
                    process.stdin.close()  # end of input: the worker exits
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _died(process: subprocess.Popen[bytes]) -> StorageUnavailable:
    return StorageUnavailable(f"an audit worker process died (exit code {process.wait()}); nothing was concluded")


def _chunks(rows: Iterator[RawTx]) -> Iterator[list[RawTx]]:
    while chunk := list(itertools.islice(rows, CHUNK)):
        yield chunk


def check_chunk(chain: ChainInfo, independent: bool, records: list[str]) -> list[tuple[Any, ...]]:
    out = []
    for record in records:
        r = check_record(chain, record, independent)
        out.append((r.tx, r.parse_error, r.leaf, r.tx_id, r.invalid, r.independent_ok))
    return out

"""P2 on PostgreSQL: signed transfers verified and committed per second when the ledger lives in
PostgreSQL and one or two processes write it at once, against the rate at which this machine
can merely recover signers from signatures (``bench.p2_ingest.verification_rates``, measured
before and after, the higher kept), in the same run.

Each configuration is (processes, threads per process). Every process is forked before the
timed region, opens its own ``PostgresStore`` (its own connection pool) on the run's schema,
runs an ``AutoSealer`` beside its writers as each gateway process does, and calls
``Ledger.transfer`` from its threads on its share of transfers signed beforehand; all start at
one signal and run for the same time. The rate is every process's transfers over the longest
process's time. Durability is the server's: ``fsync`` and ``synchronous_commit`` are read from
it and reported. The ledger lives in a fresh schema, dropped afterwards (``bench.pg``).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pg
from bench.common import new_ledger, random_address, sign_all
from bench.p2_ingest import _ingest, _pairs, transfer_threads, verification_rates
from ledger.crypto import KeySigner
from ledger.ledger import Ledger
from ledger.sealer import AutoSealer
from ledger.storage import open_store
from ledger.types import Authorization

Signed = list[tuple[Authorization, str]]


@dataclass
class Settings:
    verify_seconds: float = 3.0
    ingest_seconds: float = 8.0
    # (processes, threads per process); 8 threads is a gateway worker's default
    configurations: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (1, 8), (2, 8))
    payers: int = 64


QUICK = Settings(verify_seconds=0.7, ingest_seconds=2.0, configurations=((1, 4), (2, 4)))


def _writer(
    url: str, sealer_key: bytes, transfers: Signed, threads: int, seconds: float, go: Any, ready: Any, results: Any
) -> None:
    """One writing process (forked: ``transfers`` is inherited, not pickled)."""
    store = open_store(url)
    ledger = Ledger(store, sealer=KeySigner(sealer_key))
    sealer = AutoSealer(ledger).start()  # as in each gateway process: 200 ms, 1000 transactions
    ready.release()
    go.wait()
    count, elapsed, exhausted, failures = transfer_threads(ledger, transfers, threads, seconds)
    sealer.stop()
    store.close()
    results.put({"transfers": count, "seconds": elapsed, "exhausted": exhausted, "failures": failures[:3]})


def _ingest_processes(
    url: str, sealer_key: bytes, transfers: Signed, processes: int, threads: int, seconds: float
) -> dict[str, Any]:
    """``processes`` forked writers of ``threads`` threads each, released together."""
    ctx = multiprocessing.get_context("fork")
    go, ready, results = ctx.Event(), ctx.Semaphore(0), ctx.Queue()
    shares = [transfers[i::processes] for i in range(processes)]
    children = [
        ctx.Process(target=_writer, args=(url, sealer_key, share, threads, seconds, go, ready, results))
        for share in shares
    ]
    for child in children:
        child.start()
    for _ in children:  # every process has connected and started its sealer: time only the writing
        if not ready.acquire(timeout=60):
            raise RuntimeError("a writer process did not start")
    go.set()
    outcomes = [results.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(30)
    count = sum(o["transfers"] for o in outcomes)
    elapsed = max(o["seconds"] for o in outcomes)
    return {
        "processes": processes,
        "threads_per_process": threads,
        "transfers": count,
        "seconds": round(elapsed, 3),
        "per_s": round(count / elapsed, 1) if elapsed else 0.0,
        "per_process_per_s": [round(o["transfers"] / o["seconds"], 1) for o in outcomes],
        "exhausted": any(o["exhausted"] for o in outcomes),
        "failures": [f for o in outcomes for f in o["failures"]][:3],
    }


def run(out: Path, base_url: str, settings: Settings, log: Any = print) -> dict[str, Any]:
    del out  # nothing on disk: the ledger is in PostgreSQL
    with pg.throwaway_schema(base_url) as url:
        fixture = new_ledger(url, settings.payers)
        chain, sealer_key = fixture.chain, fixture.sealer_key
        recipients = [random_address() for _ in range(1000)]
        fixture.ledger.store.close()  # never fork with a pool open: children would share its sockets

        sample = sign_all(chain, fixture.payers, recipients, 2000)
        verify = verification_rates(_pairs(chain, sample), settings.verify_seconds)
        log(f"  P2pg verify: {verify['single_core_per_s']:.0f}/s one core, {verify['all_cores_per_s']:.0f}/s all cores")

        # Calibrate on a short single-thread run in this process, then sign enough for each run.
        fixture.ledger = Ledger(open_store(url), sealer=KeySigner(sealer_key))
        calibration = _ingest(fixture, sample, 1, 1.0)
        fixture.ledger.store.close()
        rate = max(calibration["per_s"], 100.0)
        runs = []
        for processes, threads in settings.configurations:
            count = int(rate * min(8, processes * threads) * settings.ingest_seconds * 1.5) + 500
            transfers = sign_all(chain, fixture.payers, recipients, count)
            result = _ingest_processes(url, sealer_key, transfers, processes, threads, settings.ingest_seconds)
            rate = max(rate, result["per_s"] / max(1, min(8, processes * threads)))
            runs.append(result)
            log(
                f"  P2pg ingest, {processes} process(es) x {threads:2d} thread(s): {result['per_s']:8.1f} transfers/s"
                f"{'  (ran out of pre-signed transfers)' if result['exhausted'] else ''}"
                f"{'  FAILURES ' + str(result['failures']) if result['failures'] else ''}"
            )
        again = verification_rates(_pairs(chain, sample), settings.verify_seconds)
        log(
            f"  P2pg verify again: {again['single_core_per_s']:.0f}/s one core,"
            f" {again['all_cores_per_s']:.0f}/s all cores"
        )
        store = open_store(url)
        try:
            transactions = store.head().header.tree_size + store.unsealed()[0]
        finally:
            store.close()
    verify = {
        **verify,
        "single_core_per_s": max(verify["single_core_per_s"], again["single_core_per_s"]),
        "all_cores_per_s": max(verify["all_cores_per_s"], again["all_cores_per_s"]),
        "measurements": [{k: v[k] for k in ("single_core_per_s", "all_cores_per_s")} for v in (verify, again)],
        "taken": "the higher of a measurement before and one after the ingest runs",
    }
    best = max(runs, key=lambda r: r["per_s"])
    by_processes = {p: max((r["per_s"] for r in runs if r["processes"] == p), default=0.0) for p in (1, 2)}
    return {
        "settings": settings.__dict__,
        "verification": verify,
        "calibration_per_s": calibration["per_s"],
        "ingest": runs,
        "transactions_in_ledger": transactions,
        "best_ingest_per_s": best["per_s"],
        "best_processes": best["processes"],
        "best_threads_per_process": best["threads_per_process"],
        "best_1_process_per_s": by_processes[1],
        "best_2_processes_per_s": by_processes[2],
        "two_vs_one_process": round(by_processes[2] / by_processes[1], 4) if by_processes[1] else 0.0,
        "ingest_vs_verify_limit": round(best["per_s"] / verify["all_cores_per_s"], 4),
        "ingest_vs_single_core_verify": round(best["per_s"] / verify["single_core_per_s"], 4),
    }

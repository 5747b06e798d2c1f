"""Gateway memory under a long paid load: does a worker's resident memory stay flat?

One gateway (P1's: gunicorn, ``WORKERS`` × ``THREADS``, the flat route, its own ledger file) is
paid ``first`` calls, then more until ``total`` in all, every call with its own EIP-3009
payment signed beforehand. After each stage, with the load stopped and the auto-sealer done,
the resident set size (``VmRSS``) of every gunicorn worker is read from ``/proc``.
``gateway_rss_ratio_100k_vs_1k`` is the largest worker's RSS after ``total`` calls ÷ the
largest worker's after ``first`` (target ≤ 1.10: issue #15's "within 10 %"). The master's RSS
and each worker's are reported too, in KiB, with the ledger file's size for comparison (the
ledger grows by design; the workers should not).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.p1_gateway import ROUTES, _wait_quiet, environment, offered_terms
from ledger.storage.sqlite import SQLiteStore


@dataclass(frozen=True)
class Settings:
    first: int = 1_000
    total: int = 100_000
    connections: int = 16
    payers: int = 16
    stage: int = 20_000  # payments signed and sent per load run after the first stage


QUICK = Settings(first=1_000, total=10_000, stage=9_000)


def rss_kib(pid: int) -> int:
    """``VmRSS`` of one process, in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _snapshot(env: Any, calls: int) -> dict[str, Any]:
    gateway = env.gateway
    workers = {str(pid): rss_kib(pid) for pid in sorted(gateway.worker_pids())}
    ledger = env.home.ledger_path
    return {
        "paid_calls": calls,
        "master_rss_kib": rss_kib(gateway.process.pid),
        "worker_rss_kib": workers,
        "largest_worker_rss_kib": max(workers.values(), default=0),
        "ledger_file_kib": sum(p.stat().st_size for p in ledger.parent.glob(ledger.name + "*")) // 1024,
    }


def run(out: Path, settings: Settings, log: Any = print) -> dict[str, Any]:
    path, _upstream_path, body = ROUTES["flat"]
    with environment(out, settings.payers) as env:
        store = SQLiteStore(env.home.ledger_path)
        try:
            terms = offered_terms(env.gateway, path)
            workers_before = sorted(env.gateway.worker_pids())
            stages = [settings.first]
            while sum(stages) < settings.total:
                stages.append(min(settings.stage, settings.total - sum(stages)))
            snapshots, done, seconds = [], 0, 0.0
            for count in stages:
                requests = env.paid_requests(path, body, terms, count)
                started = time.perf_counter()
                # Far longer than the stage needs: the run ends when its payments are used up.
                result = loadgen.run_load(
                    env.gateway.port,
                    requests,
                    connections=settings.connections,
                    duration=3600.0,
                    warmup=0.0,
                    cycle=False,
                )
                seconds += time.perf_counter() - started
                if result.errors or result.statuses.get(200, 0) != count:
                    raise RuntimeError(
                        f"memory phase: {count} paid calls gave {result.statuses} ({result.first_error[:300]})"
                    )
                done += count
                _wait_quiet(store, timeout=60.0)
                snapshot = _snapshot(env, done)
                if done in (settings.first, settings.total):
                    snapshots.append(snapshot)
                log(f"  memory: {done} paid calls, largest worker {snapshot['largest_worker_rss_kib']} KiB")
            if sorted(env.gateway.worker_pids()) != workers_before:
                raise RuntimeError(
                    "memory phase: a gunicorn worker was replaced mid-run; RSS figures would mix processes"
                )
        finally:
            store.close()
    first, last = snapshots[0], snapshots[-1]
    ratio = last["largest_worker_rss_kib"] / max(1, first["largest_worker_rss_kib"])
    return {
        "settings": {"first": settings.first, "total": settings.total, "connections": settings.connections},
        "route": path,
        "snapshots": snapshots,
        "paid_calls_per_s": round(done / seconds, 1) if seconds else None,
        "gateway_rss_ratio": round(ratio, 4),
        "units": {"rss": "KiB (VmRSS)", "ledger_file": "KiB (ledger.db with its -wal and -shm)"},
    }

"""The background health checker: a cheap probe of each routable provider, off the paid path.

One thread per worker wakes every ``tick`` (a fraction of the shorter of the health and recovery
intervals), refreshes the directory (so a withdrawal or a new approval is seen within one health
interval), and starts the probes that are due (``HealthBoard.take_probe``) on a small pool of
threads: ``GET {endpoint}/models`` with ``connect_timeout_ms`` to connect and ``probe_timeout_ms``
for the whole answer (and at most ``PROBE_MAX_BYTES`` of it), one in flight per provider, so a
hung provider costs one thread for one timeout and never delays a paid call. Each worker probes
for itself (its breaker is its own, and also fed by its real calls); ``snapshot_path``, when
set, receives the worker's view as JSON once per health interval, written atomically (the last
worker to write wins), for ``inferpay info`` on the same host.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from gateway.server.config import PoolConfig
from gateway.server.pool.bounded import AnswerOutOfBounds, read_bounded
from gateway.server.pool.directory import ProviderDirectory
from gateway.server.pool.health import HealthBoard, monotonic_ms
from gateway.server.snapshots import read_snapshot, write_snapshot
from ledger.types import ProviderRecord

log = logging.getLogger("inferpay.pool")
SNAPSHOT_FILE = "pool-health.json"
PROBE_THREADS = 4
PROBE_MAX_BYTES = 256 * 1024  # a model list; a probe answered with more fails


class HealthChecker:
    def __init__(
        self, directory: ProviderDirectory, board: HealthBoard, config: PoolConfig, snapshot_path: Path | None = None
    ) -> None:
        self.directory = directory
        self.board = board
        self.config = config
        self.snapshot_path = snapshot_path
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.probe_timeout_ms / 1000, connect=config.connect_timeout_ms / 1000),
            follow_redirects=False,
        )
        self._pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="inferpay-pool-probe")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written_ms = -(10**12)  # the snapshot file: rewritten once per health interval

    @property
    def tick_s(self) -> float:
        return max(0.02, min(self.config.health_interval_ms, self.config.recovery_interval_ms) / 4000)

    def start(self) -> HealthChecker:
        self._thread = threading.Thread(target=self._run, name="inferpay-pool-health", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except Exception:  # a ledger hiccup must not end the checker: try again next tick
                log.exception("pool health round failed")
            self._stop.wait(self.tick_s)

    def round(self) -> None:
        view = self.directory.refresh()
        self.board.forget_except({p.address for p in view.providers})
        now = monotonic_ms()
        for record in view.routable():
            if self.board.take_probe(record.address, now):
                self._pool.submit(self.probe, record)
        if self.snapshot_path is not None and now - self._written_ms >= self.config.health_interval_ms:
            self._written_ms = now
            self._write_snapshot()

    def probe(self, record: ProviderRecord) -> None:
        url = record.registration.endpoint.rstrip("/") + "/models"
        started = time.perf_counter()
        try:
            with self._client.stream("GET", url) as answer:
                deadline = time.monotonic() + self.config.probe_timeout_ms / 1000
                read_bounded(answer, max_bytes=PROBE_MAX_BYTES, deadline=deadline)
        except AnswerOutOfBounds as exc:
            self.board.failed(record.address, f"probe: {exc}", probe=True)
            return
        except httpx.HTTPError as exc:
            self.board.failed(record.address, f"probe: {type(exc).__name__}", probe=True)
            return
        except Exception as exc:  # never leave the probe marked in flight
            self.board.failed(record.address, f"probe: {type(exc).__name__}", probe=True)
            raise
        if 200 <= answer.status_code < 300:
            self.board.succeeded(record.address, (time.perf_counter() - started) * 1000, probe=True)
        else:
            self.board.failed(record.address, f"probe: HTTP {answer.status_code}", probe=True)

    def _write_snapshot(self) -> None:
        assert self.snapshot_path is not None
        data = {"writtenAtMs": time.time_ns() // 1_000_000, "pid": os.getpid(), "providers": self.figures()}
        write_snapshot(self.snapshot_path, data)

    def figures(self) -> list[dict[str, Any]]:
        return provider_figures(self.directory, self.board)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def read_pool_snapshot(home: Path) -> dict[str, Any] | None:
    """The figures a gateway's worker last wrote to ``<home>/pool-health.json`` (None if none)."""
    return read_snapshot(home / SNAPSHOT_FILE)


def provider_figures(directory: ProviderDirectory, board: HealthBoard) -> list[dict[str, Any]]:
    """Every provider in force (withdrawn ones too) with this worker's figures: what GET /pool
    answers and ``inferpay info`` shows."""
    view = directory.current()
    routable = {p.address for p in view.routable()}
    out = []
    for record in view.providers:
        reg = record.registration
        out.append(
            {
                "address": record.address,
                "registrationId": record.registration_id,
                "endpoint": reg.endpoint,
                "models": list(reg.models),
                "pricePerCall": str(reg.price_per_call),
                "pricePer1kInput": str(reg.price_per_1k_input),
                "pricePer1kOutput": str(reg.price_per_1k_output),
                "capacity": str(reg.capacity),
                "status": reg.status,
                "approved": record.approved,
                "routable": record.address in routable and board.routable(record.address),
                **board.snapshot(record.address).to_dict(),
            }
        )
    return out

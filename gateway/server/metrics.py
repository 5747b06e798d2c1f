"""Prometheus metrics at ``GET /metrics`` (text format, ``prometheus_client``).

Counters and histograms are counted where the event happens (requests by route and status,
payments by outcome and refusal code, base units charged, tokens, latencies); the ledger's own
state (open holds, height, what waits to be sealed and for how long) is read from the ledger when
Prometheus scrapes, so it is the same whichever worker answers.

Across gunicorn workers: ``prepare_multiprocess(home)`` (called by ``inferpay gateway`` and
``inferpay facilitator`` before they fork) points ``PROMETHEUS_MULTIPROC_DIR`` at
``<home>/metrics/<port>``, emptied at each start; every worker writes its counts there, the scraping
worker adds them all up, and a worker's files are marked dead as it exits. Without it (an app
built in-process, as tests do) the counts are the process's own.

Labels mirror LiteLLM's where they mean the same (``model``, ``status_code``). Label values come
only from bounded sets: a configured route path or URL rule (never the raw request path), a
method, a status, an error code, the payee address, and a model name checked for shape and
recorded only for calls that were paid and answered 2xx. Never a payer, an API key or a secret.
Amounts are counted in base units; Prometheus holds every sample as a 64-bit float, exact to
2**53 base units.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger import Ledger
from ledger.tlog.note import parse_note

if TYPE_CHECKING:
    from prometheus_client.mmap_dict import MmapedDict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route label of a request no route or rule took
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}")
_MAX_MODEL_BODY = 1 << 20  # bodies larger than this are not parsed for their model name
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def metrics_dir(home: Path, port: int) -> Path:
    """``<home>/metrics/<port>``: one per server, as two gateways may share a home on one host
    (on two ports), and each must count only its own workers. Port 0 (any port): the pid."""
    return home / "metrics" / (str(port) if port else f"pid-{os.getpid()}")


def prepare_multiprocess(home: Path, port: int) -> Path:
    """Before the workers fork: an empty ``metrics_dir`` as ``PROMETHEUS_MULTIPROC_DIR``.

    Emptied because a previous run's files would be added to this run's counts. The library
    picks its multi-process storage when it is first imported, from the environment; if it was
    imported before this ran, its choice is made again here (``values.ValueClass`` is looked up
    at each metric's creation)."""
    directory = metrics_dir(home, port)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    from prometheus_client import values

    values.MmapedDict = _reserved_mmaped_dict()  # type: ignore[misc]  # a module global, replaced on purpose
    values.ValueClass = values.get_value_class()
    return directory


def _reserved_mmaped_dict() -> type[MmapedDict]:
    """prometheus_client's per-process file, with its disk space reserved before it is used.

    The library maps a sparse file and writes into it; on a full disk the first write to a page
    without a block behind it is a SIGBUS, which kills the worker (the disk-full regression test
    saw connections closed without an answer). Reserving the blocks first (posix_fallocate) turns
    that into an OSError, raised where a new label set is first counted, which ``Metrics._child``
    absorbs: a full disk costs a few uncounted events, never a worker. Looked up by
    ``prometheus_client.values`` at each file's creation (tests/gateway/test_metrics_disk.py
    fails if an upgrade stops doing so)."""
    from prometheus_client.mmap_dict import MmapedDict

    class ReservedMmapedDict(MmapedDict):
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                _reserve_new_file(filename)
            super().__init__(filename, read_mode)

        def _init_value(self, key: str) -> None:
            # The library's entry: 4-byte length, the key padded to 8 bytes (1 to 8 more),
            # two doubles; past its capacity the file doubles.
            needed, capacity = self._used + len(key.encode("utf-8")) + 28, self._capacity
            while needed > capacity:
                capacity *= 2
            os.posix_fallocate(self._f.fileno(), 0, capacity)
            super()._init_value(key)

    return ReservedMmapedDict


_FIRST_FILE_BYTES = 1 << 16  # the library's own first size; it takes a file's size as it finds it


def _reserve_new_file(filename: str) -> None:
    """A new (empty) metrics file gets its first blocks before the library maps it and writes
    its header; if they cannot be had, the empty file goes too (the scraper cannot read one)."""
    with open(filename, "a+b") as file:
        if os.fstat(file.fileno()).st_size:
            return
        try:
            os.posix_fallocate(file.fileno(), 0, _FIRST_FILE_BYTES)
        except OSError:
            os.unlink(filename)
            raise


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_worker_dead(pid: int) -> None:
    """Called for an exited worker: its live gauges stop counting (counters keep their totals)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def model_label(body: bytes) -> str:
    """The request's ``model`` if it is a plausible model name, else "": recorded only once the
    call is paid and the upstream accepted it, so a client cannot mint label values for free."""
    if not body or len(body) > _MAX_MODEL_BODY:
        return ""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) and _MODEL.fullmatch(model) else ""


class _Uncounted:
    """A metric child that counts nothing (see ``Metrics._child``)."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_UNCOUNTED = _Uncounted()


@dataclass
class Metrics:
    """One app's metric objects, registered to a registry of its own (none is global)."""

    registry: Any
    requests: Any
    payments: Any
    charged: Any
    input_tokens: Any
    output_tokens: Any
    paid_call_seconds: Any
    upstream_seconds: Any
    witness_pushes: Any
    pool_calls: Any
    pool_failovers: Any
    pool_earned_units: Any
    # Each metric's child per label values, kept here: prometheus_client's labels() re-validates
    # and re-stringifies the values and takes the metric's lock on every call (five per paid
    # call). Bounded as the metrics are: the labels are routes, payees, outcomes and plausible
    # model names (model_label). A race only makes two lookups of the same child.
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict, repr=False)

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            try:
                child = self._children[key] = metric.labels(*values)
            except OSError:
                # No room for a new label set in the multi-process files (a full disk): this
                # event goes uncounted and the call goes on; the set is tried again next time.
                return _UNCOUNTED
        return child

    def request(self, route: str, method: str, status_code: int) -> None:
        self._child(self.requests, route, method, str(status_code)).inc()

    @classmethod
    def build(cls) -> Metrics:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            requests=Counter(
                "inferpay_requests",
                "HTTP requests answered, by route (a configured path or URL rule), method and status",
                ["route", "method", "status_code"],
                registry=registry,
            ),
            payments=Counter(
                "inferpay_payments",
                "Paid-route calls by outcome (required, refused, voided, settled) and refusal code",
                ["route", "outcome", "code"],
                registry=registry,
            ),
            charged=Counter(
                "inferpay_charged_base_units",
                "Base units captured by settles, by route, payee and model",
                ["route", "payee", "model"],
                registry=registry,
            ),
            input_tokens=Counter(
                "inferpay_input_tokens",
                "Input (prompt) tokens of settled metered calls, as the upstream reported them",
                ["route", "model"],
                registry=registry,
            ),
            output_tokens=Counter(
                "inferpay_output_tokens",
                "Output (completion) tokens of settled metered calls, as the upstream reported them",
                ["route", "model"],
                registry=registry,
            ),
            paid_call_seconds=Histogram(
                "inferpay_paid_call_duration_seconds",
                "A settled paid call from request to settle, upstream included",
                ["route", "model"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            upstream_seconds=Histogram(
                "inferpay_upstream_latency_seconds",
                "The upstream's answer to a paid call, until its headers (streams) or its body",
                ["route", "model"],
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            witness_pushes=Counter(
                "inferpay_witness_pushes",
                "Checkpoints pushed to each configured witness, by outcome (cosigned, refused: it saw "
                "another history or distrusts the log; unreachable: down, slow or answering 5xx)",
                ["witness", "outcome"],
                registry=registry,
            ),
            pool_calls=Counter(
                "inferpay_pool_provider_calls",
                "Pool calls each provider (its public ledger address) was tried with, by outcome (served, failed)",
                ["provider", "outcome"],
                registry=registry,
            ),
            pool_failovers=Counter(
                "inferpay_pool_failovers",
                "Pool calls passed on to a next provider after one failed, by route",
                ["route"],
                registry=registry,
            ),
            pool_earned_units=Counter(
                "inferpay_pool_provider_earned_base_units",
                "Base units credited to each provider by this gateway's split settles",
                ["provider"],
                registry=registry,
            ),
        )

    # ---- what the paid proxy and the checkpoint publisher report ----

    def witness_push(self, witness: str, outcome: str) -> None:
        self._child(self.witness_pushes, witness, outcome).inc()

    def pool_call(self, provider: str, outcome: str) -> None:
        self._child(self.pool_calls, provider, outcome).inc()

    def pool_failover(self, route: str) -> None:
        self._child(self.pool_failovers, route).inc()

    def pool_earned(self, provider: str, amount: int) -> None:
        self._child(self.pool_earned_units, provider).inc(amount)

    def payment(self, route: str, outcome: str, code: str = "") -> None:
        self._child(self.payments, route, outcome, code).inc()

    def upstream(self, route: str, model: str, seconds: float) -> None:
        self._child(self.upstream_seconds, route, model).observe(seconds)

    def settled(
        self, route: str, payee: str, model: str, charged: int, usage: tuple[int, int] | None, seconds: float
    ) -> None:
        self.payment(route, "settled")
        self._child(self.charged, route, payee, model).inc(charged)
        if usage is not None:
            self._child(self.input_tokens, route, model).inc(usage[0])
            self._child(self.output_tokens, route, model).inc(usage[1])
        self._child(self.paid_call_seconds, route, model).observe(seconds)

    # ---- the scrape ----

    def exposition(
        self, ledger: Ledger, witnesses: tuple[str, ...] = (), pool: list[dict[str, Any]] | None = None
    ) -> bytes:
        """Every worker's counts (or this process's), and the ledger's state read now;
        ``witnesses``: the configured witnesses' names (their cosignature lines say them);
        ``pool``: the scraping worker's per-provider figures (``pool.checker.provider_figures``)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        state = generate_latest(_ledger_registry(ledger, witnesses, pool))
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry) + state
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry) + state


def _ledger_registry(ledger: Ledger, witnesses: tuple[str, ...], pool: list[dict[str, Any]] | None = None) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LedgerCollector(ledger, witnesses))
    if pool is not None:
        registry.register(_PoolCollector(pool))
    return registry


class _PoolCollector:
    """Per-provider gauges as the scraping worker sees them (each worker probes for itself)."""

    def __init__(self, figures: list[dict[str, Any]]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        def family(name: str, text: str) -> Any:
            return GaugeMetricFamily(name, text, labels=["provider"])

        routable = family(
            "inferpay_pool_provider_routable", "1 if the provider takes calls now (active, accepted, circuit closed)"
        )
        circuit = family("inferpay_pool_provider_circuit_open", "1 if the provider's circuit is open or half-open")
        failures = family("inferpay_pool_provider_consecutive_failures", "Consecutive failed probes and calls")
        latency = family("inferpay_pool_provider_latency_seconds", "Weighted mean latency of probes and calls")
        throughput = family(
            "inferpay_pool_provider_throughput_tokens_per_second", "Weighted mean output tokens per second of calls"
        )
        for f in self.figures:
            labels = [f["address"]]
            routable.add_metric(labels, 1 if f["routable"] else 0)
            circuit.add_metric(labels, 0 if f["circuit"] == "closed" else 1)
            failures.add_metric(labels, f["consecutiveFailures"])
            if f["latencyMs"] is not None:
                latency.add_metric(labels, f["latencyMs"] / 1000)
            if f["throughputTokensPerS"] is not None:
                throughput.add_metric(labels, f["throughputTokensPerS"])
        yield from (routable, circuit, failures, latency, throughput)


class _LedgerCollector:
    """Gauges read from the ledger at scrape time (one small query each)."""

    def __init__(self, ledger: Ledger, witnesses: tuple[str, ...]) -> None:
        self.ledger = ledger
        self.witnesses = witnesses

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        head = self.ledger.head()
        holds = self.ledger.store.open_holds()
        waiting, oldest_ms = self.ledger.store.unsealed()
        lag_ms = max(0, self.ledger.now_ms() - oldest_ms) if oldest_ms is not None else 0
        yield GaugeMetricFamily("inferpay_ledger_height", "Height of the newest sealed block", value=head.header.height)
        yield GaugeMetricFamily(
            "inferpay_ledger_transactions", "Transactions sealed into blocks since genesis", value=head.header.tree_size
        )
        yield GaugeMetricFamily(
            "inferpay_open_holds", "Holds placed and not yet settled, voided or expired", len(holds)
        )
        yield GaugeMetricFamily(
            "inferpay_open_holds_base_units", "Base units reserved by open holds", sum(h.amount for h in holds)
        )
        yield GaugeMetricFamily("inferpay_unsealed_transactions", "Transactions waiting to be sealed", value=waiting)
        yield GaugeMetricFamily(
            "inferpay_seal_lag_seconds",
            "Age of the oldest transaction waiting to be sealed (0 when none waits)",
            value=lag_ms / 1000,
        )
        yield from self._checkpoint(head.header.tree_size)

    def _checkpoint(self, head_size: int) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        latest = self.ledger.store.checkpoints.latest()
        if latest is None:
            return
        size, note = latest
        yield GaugeMetricFamily("inferpay_checkpoint_size", "Entries the latest signed checkpoint covers", value=size)
        yield GaugeMetricFamily(
            "inferpay_checkpoint_lag_entries", "Sealed entries not yet in a signed checkpoint", value=head_size - size
        )
        signed_by = {s.name for s in parse_note(note).signatures}
        cosigned = GaugeMetricFamily(
            "inferpay_checkpoint_cosigned",
            "1 if the configured witness cosigned the latest checkpoint, else 0",
            labels=["witness"],
        )
        for name in self.witnesses:
            cosigned.add_metric([name], 1 if name in signed_by else 0)
        yield cosigned

"""Per-provider figures and circuit breakers, as one worker sees them.

Each worker keeps its own (``ProviderHealth`` per provider address), fed by two sources: the
background probes (``checker``) and the worker's own paid calls. Figures: latency (an
exponentially weighted mean, ms), throughput (output tokens per second of served calls, the
same weighting), calls served and failed, probes ok and failed.

The breaker: ``failure_threshold`` consecutive failures (probes or calls) open a provider's
circuit, and an open provider is never a candidate. While open, the checker sends one recovery
probe every ``recovery_interval_ms`` (the half-open state, while it is in flight); a success
closes the circuit, a failure keeps it open for another interval. Times are monotonic ms.
Thread-safe: request threads and the checker's threads share it under one lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ledger.types import Address

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_WEIGHT = 0.3  # of the newest sample in the weighted means


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass
class ProviderHealth:
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at_ms: int = 0
    last_probe_ms: int = -(10**12)  # never
    probing: bool = False
    latency_ms: float | None = None
    throughput_tps: float | None = None  # output tokens per second
    calls_served: int = 0
    calls_failed: int = 0
    probes_ok: int = 0
    probes_failed: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "circuit": self.state,
            "consecutiveFailures": self.consecutive_failures,
            "latencyMs": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "throughputTokensPerS": round(self.throughput_tps, 3) if self.throughput_tps is not None else None,
            "callsServed": self.calls_served,
            "callsFailed": self.calls_failed,
            "probesOk": self.probes_ok,
            "probesFailed": self.probes_failed,
            "lastError": self.last_error,
        }


def _mean(old: float | None, sample: float) -> float:
    return sample if old is None else old + _WEIGHT * (sample - old)


class HealthBoard:
    """Every provider's ``ProviderHealth`` in this worker, and the breaker's rules."""

    def __init__(self, failure_threshold: int, recovery_interval_ms: int, health_interval_ms: int) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_interval_ms = recovery_interval_ms
        self.health_interval_ms = health_interval_ms
        self._lock = threading.Lock()
        self._health: dict[str, ProviderHealth] = {}
        self._in_flight: dict[str, int] = {}  # this worker's calls to each provider now

    # ---- capacity: a registration's ``capacity`` (0: unstated) bounds this worker's calls ----

    def has_room(self, address: Address, capacity: int) -> bool:
        with self._lock:
            return capacity == 0 or self._in_flight.get(address.lower(), 0) < capacity

    def begin(self, address: Address) -> None:
        with self._lock:
            self._in_flight[address.lower()] = self._in_flight.get(address.lower(), 0) + 1

    def end(self, address: Address) -> None:
        with self._lock:
            left = self._in_flight.get(address.lower(), 0) - 1
            if left > 0:
                self._in_flight[address.lower()] = left
            else:
                self._in_flight.pop(address.lower(), None)

    def _get(self, address: Address) -> ProviderHealth:
        key = address.lower()
        found = self._health.get(key)
        if found is None:
            found = self._health[key] = ProviderHealth()
        return found

    def routable(self, address: Address) -> bool:
        """Closed circuits only: an open or half-open provider takes no paid call."""
        with self._lock:
            return self._get(address).state == CLOSED

    def snapshot(self, address: Address) -> ProviderHealth:
        with self._lock:
            h = self._get(address)
            return ProviderHealth(**h.__dict__)

    # ---- outcomes ----

    def succeeded(self, address: Address, latency_ms: float, output_tokens: int | None = None, *, probe: bool) -> None:
        with self._lock:
            h = self._get(address)
            h.consecutive_failures, h.state, h.last_error = 0, CLOSED, None
            h.latency_ms = _mean(h.latency_ms, latency_ms)
            if probe:
                h.probes_ok += 1
                h.probing = False
            else:
                h.calls_served += 1
                if output_tokens and latency_ms > 0:
                    h.throughput_tps = _mean(h.throughput_tps, output_tokens * 1000 / latency_ms)

    def failed(self, address: Address, error: str, *, probe: bool) -> None:
        with self._lock:
            h = self._get(address)
            h.consecutive_failures += 1
            h.last_error = error[:300]
            if probe:
                h.probes_failed += 1
                h.probing = False
            else:
                h.calls_failed += 1
            if h.state == HALF_OPEN or h.consecutive_failures >= self.failure_threshold:
                if h.state != OPEN or probe:  # opening now, or a failed recovery probe: wait another interval
                    h.opened_at_ms = monotonic_ms()
                h.state = OPEN

    # ---- what the checker asks ----

    def take_probe(self, address: Address, now_ms: int) -> bool:
        """Whether to probe ``address`` now (and mark the probe in flight): a closed provider
        once per health interval, an open one once per recovery interval (then half-open)."""
        with self._lock:
            h = self._get(address)
            if h.probing:
                return False
            if h.state == CLOSED:
                due = now_ms - h.last_probe_ms >= self.health_interval_ms
            else:
                due = now_ms - max(h.opened_at_ms, h.last_probe_ms) >= self.recovery_interval_ms
                if due:
                    h.state = HALF_OPEN
            if due:
                h.probing, h.last_probe_ms = True, now_ms
            return due

    def forget_except(self, addresses: set[str]) -> None:
        """Drop the figures of providers no longer in the directory (keeps label sets bounded)."""
        with self._lock:
            for key in set(self._health) - {a.lower() for a in addresses}:
                del self._health[key]

    def all(self) -> dict[str, ProviderHealth]:
        with self._lock:
            return {k: ProviderHealth(**v.__dict__) for k, v in self._health.items()}

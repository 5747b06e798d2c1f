"""Several targets measured side by side: round after round, each target once per round, back
to back, with the same generator and the same connection count, so a burst of outside load
sways one round of every target alike rather than one target's whole figure.

Used by the phases that compare inferpay with a peer (``bench.peers``), with itself under
another configuration (``bench.p5_witnessed``) or in front of another upstream
(``bench.p1_model``). A target's requests come from a supplier: cycled unpaid bytes, or paid
requests each carrying its own payment, signed (before the timed region) at the rate the
target was last seen to sustain, +30 %.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import loadgen
from bench.p1_gateway import _pool, measured_run
from bench.servers import Server


@dataclass
class Target:
    """One thing to load: ``supply(count)`` gives the request bytes for a run that needs about
    ``count`` requests (cycled targets return their one request, whatever the count)."""

    name: str
    server: Server
    supply: Callable[[int], list[bytes]]
    cycle: bool  # True: unpaid bytes, reused; False: each request used once (a payment each)
    rate: float = 200.0  # req/s last seen: how many paid requests to sign for the next run
    after: Callable[[], None] | None = None  # e.g. wait for the gateway's sealer to catch up


def cycled(request: bytes) -> Callable[[int], list[bytes]]:
    return lambda _count: [request]


@dataclass
class Settings:
    connections: int = 16
    duration: float = 6.0
    warmup: float = 2.0
    rounds: int = 5
    single_duration: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Settings(duration=2.0, warmup=0.5, rounds=2, single_duration=1.0)


def _one(
    target: Target, servers: dict[str, Server], *, connections: int, duration: float, warmup: float
) -> dict[str, Any]:
    requests = target.supply(int(target.rate * (warmup + duration) * 1.3) + 200)
    cpu_before = {name: s.cpu_seconds() for name, s in servers.items()}
    result = loadgen.run_load(
        target.server.port, requests, connections=connections, duration=duration, warmup=warmup, cycle=target.cycle
    )
    cpu_after = {name: s.cpu_seconds() for name, s in servers.items()}
    measured = measured_run(result, cpu_before, cpu_after, warmup)
    if measured["exhausted"]:
        target.rate = max(target.rate, measured["throughput_rps"]) * 1.5
    else:
        target.rate = max(50.0, measured["throughput_rps"])
    if target.after is not None:
        target.after()
    return measured


def calibrate(target: Target, servers: dict[str, Server], connections: int, log: Any) -> None:
    """A short unmeasured run: warms the target up and, for paid targets, learns its rate."""
    measured = _one(target, servers, connections=connections, duration=1.0, warmup=0.3)
    if measured["errors"]:
        raise RuntimeError(f"{target.name}: calibration failed: {measured['first_error']}")
    log(f"    calibrated {target.name}: {measured['throughput_rps']:.0f} req/s")


def run_rounds(
    targets: Sequence[Target], servers: dict[str, Server], settings: Settings, log: Any, label: str
) -> dict[str, list[dict[str, Any]]]:
    """``settings.rounds`` rounds of every target with ``settings.connections`` clients. Every
    other round runs the targets in reverse order, so that none always runs first (on a warmer
    or a quieter machine)."""
    raw: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for target in targets:
        calibrate(target, servers, settings.connections, log)
    for round_no in range(settings.rounds):
        for target in targets if round_no % 2 == 0 else list(reversed(targets)):
            time.sleep(0.5)
            result = _one(
                target, servers, connections=settings.connections, duration=settings.duration, warmup=settings.warmup
            )
            raw[target.name].append(result)
            log(
                f"  {label} {target.name:22s} round {round_no + 1}: {result['throughput_rps']:8.1f} req/s"
                f"  p50 {result['latency']['p50_ms']:7.2f} ms  p99 {result['latency']['p99_ms']:7.2f} ms"
                f"  errors {result['errors']}"
            )
            if result["errors"]:
                log(f"    first error: {result['first_error'][:300]!r}")
    return raw


def single_client(
    targets: Sequence[Target], servers: dict[str, Server], settings: Settings, log: Any, label: str
) -> dict[str, dict[str, Any]]:
    """One connection each: the latency a lone caller sees."""
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        result = _one(target, servers, connections=1, duration=settings.single_duration, warmup=0.5)
        result.pop("_latencies")
        out[target.name] = result
        log(f"  {label} {target.name:22s} 1 client: p50 {result['latency']['p50_ms']:7.3f} ms")
    return out


def pooled(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: _pool(results) for name, results in raw.items()}


def ratio_of_rounds(raw: dict[str, list[dict[str, Any]]], top: str, bottom: str) -> dict[str, Any]:
    """``top`` req/s ÷ ``bottom`` req/s within each round, and their median."""
    per_round = [
        round(a["throughput_rps"] / b["throughput_rps"], 4) if b["throughput_rps"] else 0.0
        for a, b in zip(raw[top], raw[bottom], strict=True)
    ]
    return {"median": round(statistics.median(per_round), 4) if per_round else 0.0, "per_round": per_round}


def brief(scenario: dict[str, Any]) -> dict[str, Any]:
    """A pooled scenario's headline figures (req/s, p50, p99, errors)."""
    return {
        "throughput_rps": scenario["throughput_rps"],
        "p50_ms": scenario["latency"]["p50_ms"],
        "p99_ms": scenario["latency"]["p99_ms"],
        "errors": scenario["errors"],
        "completed": scenario["completed"],
    }

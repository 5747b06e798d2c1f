"""P1 on PostgreSQL: the paid gateway with its ledger in PostgreSQL, served by one gateway
process and then by two, against a pass-through of the same shape.

"One gateway process" is one ``inferpay gateway --config`` server with one gunicorn worker;
"two" are two such servers on two ports with the same ``database = "postgresql://..."`` in their
configs and the same home (sealer key), standing in for two hosts. The load generator splits its
connections evenly over the servers of a topology. The baseline has the same shape: one, then
two pass-through gateways (``bench.servers.start_passthrough``: routes ``free = true``) of one
worker each (the same threads), over the same upstream,
with the load split the same way; so ``paid_vs_passthrough`` compares equal numbers of worker
processes. Each topology runs on a ledger of its own (a fresh schema, dropped afterwards; see
``bench.pg``) and is audited (``ledger.audit.audit`` on the store) after its load.

Rounds run pass-through then paid back to back; ratios are medians of per-round ratios, and
throughput and latencies pool the rounds, as in ``bench.p1_gateway``. CPU per request is read
from ``/proc`` for the gateways, the pass-through servers, the upstream, the load generator and
the PostgreSQL server (every ``postgres`` process on the machine, so anything else using that
server counts too). Everything shares the machine's cores.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, pg
from bench.common import new_ledger
from bench.p1_gateway import (
    ROUTES,
    _audit_after,
    _pool,
    _ratio,
    gateway_config,
    measured_run,
    offered_terms,
    sign_payments,
)
from bench.servers import Server, start_gateway, start_passthrough, start_upstream
from gateway.server.home import Home
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from ledger.storage import open_store
from ledger.storage.base import LedgerStore


@dataclass
class Settings:
    connections: int = 16
    duration: float = 5.0
    warmup: float = 1.5
    rounds: int = 3
    payers: int = 16
    threads: int = 8  # per worker: the gateway's default
    gateway_counts: tuple[int, ...] = (1, 2)
    routes: tuple[str, ...] = ("flat", "metered")


QUICK = Settings(duration=2.0, warmup=0.5, rounds=1, routes=("flat",))


@contextlib.contextmanager
def _store(url: str) -> Iterator[LedgerStore]:
    """A short-lived store: none stays open while the benchmark forks its signing workers."""
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _wait_quiet(url: str, timeout: float = 30.0) -> None:
    """Until the gateways' auto-sealers have resolved and sealed everything from the last run."""
    with _store(url) as store:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not store.open_holds() and store.unsealed()[0] == 0:
                return
            time.sleep(0.2)


def _cpu(groups: dict[str, Callable[[], float]]) -> dict[str, float]:
    return {name: read() for name, read in groups.items()}


def _measure(
    ports: Sequence[int],
    groups: dict[str, Callable[[], float]],
    requests: list[bytes],
    *,
    settings: Settings,
    cycle: bool,
) -> dict[str, Any]:
    before = _cpu(groups)
    result = loadgen.run_load(
        ports,
        requests,
        connections=settings.connections,
        duration=settings.duration,
        warmup=settings.warmup,
        cycle=cycle,
    )
    after = _cpu(groups)
    return measured_run(result, before, after, settings.warmup)


def _topology(
    out: Path,
    home: Home,
    url: str,
    count: int,
    upstream: Server,
    passthroughs: list[Server],
    settings: Settings,
    log: Any,
) -> dict[str, Any]:
    """One ledger (schema), ``count`` gateway servers on it, every route measured, then the audit."""
    fixture = new_ledger(url, settings.payers, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    chain = fixture.chain
    fixture.ledger.store.close()
    config = gateway_config(fixture.operator.address, 1, settings.threads, upstream.url, database=url)
    gateways: list[Server] = []
    try:
        for index in range(count):
            gateways.append(start_gateway(out, home.path, config, name=f"gateway-{count}x-{index + 1}"))
        gateway_ports = [g.port for g in gateways]
        pass_ports = [p.port for p in passthroughs]
        groups: dict[str, Callable[[], float]] = {
            "gateways": lambda: sum(g.cpu_seconds() for g in gateways),
            "passthrough": lambda: sum(p.cpu_seconds() for p in passthroughs),
            "upstream": upstream.cpu_seconds,
            "postgres_server": pg.server_cpu_seconds,
        }
        routes: dict[str, Any] = {}
        for name in settings.routes:
            path, _upstream_path, body = ROUTES[name]
            terms = offered_terms(gateways[0], path)

            def paid(n: int, path: str = path, body: bytes = body, terms: dict[str, Any] = terms) -> list[bytes]:
                # The Host header names the first gateway; gunicorn serves any Host, so the
                # same bytes go to either server.
                return [
                    loadgen.build_request("POST", path, gateways[0].port, body, {PAYMENT_SIGNATURE_HEADER: h})
                    for h in sign_payments(fixture.payers, terms, chain, n)
                ]

            probe = paid(600)
            calibration = loadgen.run_load(
                gateway_ports, probe, connections=settings.connections, duration=1.5, warmup=0.3, cycle=False
            )
            if calibration.errors:
                raise RuntimeError(f"paid calibration on {path} ({count} gateway(s)) failed: {calibration.first_error}")
            rate = max(calibration.throughput, 50.0)
            _wait_quiet(url)
            sample = {PAYMENT_SIGNATURE_HEADER: _payment_of(probe[0])}  # the unpaid baseline gets the same bytes
            pass_req = [loadgen.build_request("POST", path, passthroughs[0].port, body, sample)]
            raw: dict[str, list[dict[str, Any]]] = {"passthrough": [], "paid": []}
            for round_no in range(settings.rounds):
                for kind in ("passthrough", "paid"):
                    if kind == "paid":
                        count_needed = int(rate * (settings.warmup + settings.duration) * 1.3) + 200
                        reqs, ports, cycle = paid(count_needed), gateway_ports, False
                    else:
                        reqs, ports, cycle = pass_req, pass_ports, True
                    time.sleep(0.5)
                    result = _measure(ports, groups, reqs, settings=settings, cycle=cycle)
                    raw[kind].append(result)
                    if result["exhausted"]:
                        rate = max(rate, result["throughput_rps"]) * 1.5
                    log(
                        f"  P1pg {count} gw {name:8s} {kind:12s} round {round_no + 1}:"
                        f" {result['throughput_rps']:8.1f} req/s  p50 {result['latency']['p50_ms']:7.2f} ms"
                        f"  p99 {result['latency']['p99_ms']:7.2f} ms  errors {result['errors']}"
                    )
                    if kind == "paid":
                        _wait_quiet(url)
            routes[name] = _summarize(raw, settings)
        _wait_quiet(url)
        with _store(url) as store:
            audited = _audit_after(store)
        log(
            f"  P1pg {count} gw audit: ok={audited['ok']} ({audited['transactions']} transactions,"
            f" {audited['blocks']} blocks)"
        )
        return {
            "gateway_processes": count,
            "workers_per_gateway": 1,
            "threads_per_worker": settings.threads,
            "passthrough_processes": len(passthroughs),
            "routes": routes,
            "ledger_audit_after_run": audited,
        }
    finally:
        for gateway in gateways:
            gateway.stop()


def _summarize(raw: dict[str, list[dict[str, Any]]], settings: Settings) -> dict[str, Any]:
    pooled = {kind: _pool(results) for kind, results in raw.items()}
    rounds = [
        {
            "paid_vs_passthrough_throughput": _ratio(pd["throughput_rps"], ps["throughput_rps"]),
            "added_latency_p50_ms": round(pd["latency"]["p50_ms"] - ps["latency"]["p50_ms"], 3),
            "added_latency_p99_ms": round(pd["latency"]["p99_ms"] - ps["latency"]["p99_ms"], 3),
        }
        for ps, pd in zip(raw["passthrough"], raw["paid"], strict=True)
    ]

    def median_of(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 4)

    cpu = {
        kind: {
            n: round(statistics.fmean(r["cpu_ms_per_request"][n] for r in results), 3)
            for n in results[0]["cpu_ms_per_request"]
        }
        for kind, results in raw.items()
    }
    return {
        "concurrency": settings.connections,
        "scenarios": pooled,
        "per_round": rounds,
        "cpu_ms_per_request": cpu,
        "paid_vs_passthrough_throughput": median_of("paid_vs_passthrough_throughput"),
        "added_latency_p50_ms": median_of("added_latency_p50_ms"),
        "added_latency_p99_ms": median_of("added_latency_p99_ms"),
    }


def _payment_of(request: bytes) -> str:
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith(PAYMENT_SIGNATURE_HEADER))


def run(out: Path, base_url: str, settings: Settings, log: Any = print) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    home = Home(out / "home")
    home.ensure()
    home.create_sealer_key()
    servers: list[Server] = []
    topologies: dict[str, Any] = {}
    try:
        upstream = start_upstream(out)
        servers.append(upstream)
        passthroughs = []
        for index in range(max(settings.gateway_counts)):
            passthroughs.append(
                start_passthrough(
                    out,
                    lambda pay_to: gateway_config(pay_to, 1, settings.threads, upstream.url, free=True),
                    name=f"passthrough-{index + 1}",
                )
            )
            servers.append(passthroughs[-1])
        for count in settings.gateway_counts:
            with pg.throwaway_schema(base_url) as url:
                topologies[str(count)] = _topology(out, home, url, count, upstream, passthroughs[:count], settings, log)
    finally:
        for server in reversed(servers):
            server.stop()
    scale: dict[str, Any] = {}
    if "1" in topologies and "2" in topologies:
        for name in settings.routes:
            one, two = (topologies[k]["routes"][name]["scenarios"] for k in ("1", "2"))
            scale[name] = {
                "paid_2_vs_1": _ratio(two["paid"]["throughput_rps"], one["paid"]["throughput_rps"]),
                "passthrough_2_vs_1": _ratio(
                    two["passthrough"]["throughput_rps"], one["passthrough"]["throughput_rps"]
                ),
            }
    return {
        "settings": settings.__dict__,
        "servers": {
            "server": "gunicorn gthread",
            "gateway": "inferpay gateway --config, database = postgresql://",
            "passthrough": "inferpay gateway, free = true routes, one server per gateway, same workers/threads",
            "upstream": "bench/upstream.py, 1 gunicorn gthread worker x 16 threads",
        },
        "topologies": topologies,
        "scale_out": scale,
        "audits_ok": all(t["ledger_audit_after_run"]["ok"] for t in topologies.values()),
    }

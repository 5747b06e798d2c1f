"""P1, payment overhead: the paid gateway against a pass-through proxy and the upstream itself.

Three servers share one fast upstream (``bench.upstream``): the real gateway (``inferpay
gateway --config``: 2 gunicorn workers x 8 threads), the pass-through baseline (the same
gateway with payment switched off: the same routes marked ``free = true``, same settings, a
ledger of its own; ``bench.servers.start_passthrough``), and the upstream called directly. The
same requests (same bytes, a payment header included) go to each, from the same closed-loop
generator with the same number of keep-alive connections, on a flat route and a metered route.
Every paid request carries its own payment, signed before the timed region. The generator, the
servers and the upstream share the machine's cores; the CPU each one used per request is
reported so that the sharing is visible.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.common import new_ledger, summary_ms
from bench.servers import Server, start_gateway, start_passthrough, start_upstream
from gateway.server.home import Home
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, PaymentPayload, PaymentRequirement, decode_header, encode_header
from ledger.audit import audit  # imported up front: the whole run measures the code as it was at its start
from ledger.storage.base import LedgerStore
from ledger.storage.sqlite import SQLiteStore
from ledger.types import ChainInfo
from wallets.wallet import Wallet

WORKERS = 2
THREADS = 8
UPSTREAM_TIMEOUT = 60.0
ROUTES = {
    # name: (gateway path, upstream path, request body)
    "flat": ("/v1/flat", "/v1/echo", b'{"input": "benchmark call"}'),
    "metered": ("/v1/embeddings", "/v1/embeddings", b'{"model": "bench", "input": "the quick brown fox jumps"}'),
}

# The benchmark's two routes: their prices on the paid gateway; `free = true` on the pass-through.
PAID_TERMS = {
    "flat": 'price = "0.001"',
    "metered": 'price = "0.0001"\nprice_per_1k_input_tokens = "0.0015"\nmax_amount = "0.01"',
}


def gateway_config(
    pay_to: str,
    workers: int,
    threads: int,
    upstream: str,
    *,
    free: bool = False,
    database: str | None = None,
    routes: dict[str, tuple[str, str, bytes]] | None = None,
    extra: str = "",
) -> str:
    """The TOML of a benchmark gateway (``@PORT@`` left for ``bench.servers.start_gateway``):
    the same routes and settings for the paid gateway and, with ``free``, for its pass-through.
    ``routes``: a subset of ``ROUTES`` (default: all); ``extra``: more TOML tables appended."""
    lines = [
        "[gateway]",
        'host = "127.0.0.1"',
        "port = @PORT@",
        f'pay_to = "{pay_to}"',
        f"workers = {workers}",
        f"threads = {threads}",
        f"upstream_timeout_seconds = {UPSTREAM_TIMEOUT}",
    ]
    if database is not None:
        lines.append(f'database = "{database}"')
    for name, (path, upstream_path, _) in (routes or ROUTES).items():
        terms = "free = true" if free else PAID_TERMS[name]
        lines += ["", "[[routes]]", f'path = "{path}"', f'upstream = "{upstream}{upstream_path}"', terms]
    return "\n".join(lines) + "\n" + extra


@dataclass
class Settings:
    """Each round runs direct, pass-through and paid back to back; the ratios are taken within
    a round (the three ran seconds apart, under the same outside load) and the median over the
    rounds is reported, so a burst of load from other programs sways one round, not the verdict."""

    connections: int = 16
    duration: float = 6.0
    warmup: float = 2.0
    rounds: int = 5
    single_duration: float = 5.0  # the one-connection (unloaded) latency runs
    payers: int = 16


QUICK = Settings(duration=2.0, warmup=0.5, rounds=2, single_duration=1.0)


# ---- payments, signed ahead of time in worker processes ----


def _sign_headers(args: tuple[list[bytes], dict[str, Any], dict[str, Any], int, int]) -> list[str]:
    keys, terms, chain_dict, count, offset = args
    chain = ChainInfo.from_dict(chain_dict)
    wallets = [Wallet.from_private_key(f"payer{i}", k) for i, k in enumerate(keys)]
    requirement = PaymentRequirement.from_dict(terms)
    headers = []
    for i in range(count):
        wallet = wallets[(offset + i) % len(wallets)]
        # A fresh random nonce each (authorize_transfer's default): every payment is used once.
        auth, signature = wallet.authorize_transfer(chain, terms["payTo"], int(terms["amount"]), ttl_seconds=1800)
        payload = PaymentPayload(2, auth, signature, terms["scheme"], terms["network"], requirement, None)
        headers.append(encode_header(payload.to_dict()))
    return headers


def sign_payments(payers: list[Wallet], terms: dict[str, Any], chain: ChainInfo, count: int) -> list[str]:
    import multiprocessing
    import os

    keys = [w.private_key_bytes() for w in payers]
    chunk = 1000
    jobs = [(keys, terms, chain.to_dict(), min(chunk, count - start), start) for start in range(0, count, chunk)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        return [h for part in pool.map(_sign_headers, jobs) for h in part]


def offered_terms(gateway: Server, path: str) -> dict[str, Any]:
    """The route's terms from a real 402 (as any x402 client reads them)."""
    request = urllib.request.Request(
        gateway.url + path, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code != 402:
            raise
        terms: dict[str, Any] = decode_header(exc.headers["PAYMENT-REQUIRED"])["accepts"][0]
        return terms
    raise RuntimeError(f"{path} answered without payment")


# ---- one measured run ----


def _measure(
    target: Server,
    servers: dict[str, Server],
    requests: list[bytes],
    *,
    connections: int,
    duration: float,
    warmup: float,
    cycle: bool,
) -> dict[str, Any]:
    cpu_before = {name: s.cpu_seconds() for name, s in servers.items()}
    result = loadgen.run_load(
        target.port, requests, connections=connections, duration=duration, warmup=warmup, cycle=cycle
    )
    cpu_after = {name: s.cpu_seconds() for name, s in servers.items()}
    return measured_run(result, cpu_before, cpu_after, warmup)


def measured_run(
    result: Any, cpu_before: dict[str, float], cpu_after: dict[str, float], warmup: float
) -> dict[str, Any]:
    """One load run's figures: throughput, statuses, latencies, and the CPU each process group
    (``cpu_before``/``cpu_after``: seconds by name) spent per request."""
    total = max(1, result.completed)
    # CPU is read over the whole run (warm-up included), so divide by everything that ran.
    issued = total + int(result.throughput * warmup) if warmup else total
    return {
        "throughput_rps": round(result.throughput, 1),
        "window_seconds": round(result.window_seconds, 3),
        "completed": result.completed,
        "errors": result.errors,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "first_error": result.first_error[:400],
        "exhausted": result.exhausted,
        "reconnects": result.reconnects,
        "latency": summary_ms(result.latencies_ms),
        "gateway_reported_overhead": summary_ms(result.overheads_ms) if result.overheads_ms else None,
        "cpu_ms_per_request": {
            **{name: round((cpu_after[name] - cpu_before[name]) * 1000 / issued, 3) for name in cpu_before},
            "load_generator": round(result.generator_cpu_seconds * 1000 / issued, 3),
        },
        "_latencies": result.latencies_ms,
    }


def _wait_quiet(store: LedgerStore, timeout: float = 30.0) -> None:
    """Until the gateway's auto-sealers have resolved and sealed everything from the last run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not store.open_holds() and store.unsealed()[0] == 0:
            return
        time.sleep(0.2)


def _pool(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one scenario as one: throughput over all windows, pooled latencies."""
    latencies = [x for r in results for x in r["_latencies"]]
    window = sum(r["window_seconds"] for r in results)
    ok = sum(r["completed"] - r["errors"] for r in results)
    return {
        "throughput_rps": round(ok / window, 1) if window else 0.0,
        "latency": summary_ms(latencies),
        "errors": sum(r["errors"] for r in results),
        "completed": sum(r["completed"] for r in results),
        "rounds": [{k: v for k, v in r.items() if k != "_latencies"} for r in results],
    }


@dataclass
class Environment:
    servers: dict[str, Server]
    fixture: Any  # bench.common.Fixture (its ledger handle is closed: the gateway owns the file)
    chain: ChainInfo
    home: Home

    @property
    def gateway(self) -> Server:
        return self.servers["gateway"]

    def paid_requests(self, path: str, body: bytes, terms: dict[str, Any], count: int) -> list[bytes]:
        headers = sign_payments(self.fixture.payers, terms, self.chain, count)
        return [
            loadgen.build_request("POST", path, self.gateway.port, body, {PAYMENT_SIGNATURE_HEADER: h}) for h in headers
        ]


@contextlib.contextmanager
def environment(out: Path, payers: int, server: str = "gunicorn") -> Iterator[Environment]:
    """A fresh home and ledger with funded payers, the upstream, the pass-through and the
    gateway (both under ``server``: ``bench.servers.start_gateway``), all started; all stopped
    on exit."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    home = Home(out / "home")
    home.ensure()
    home.create_sealer_key()
    fixture = new_ledger(home.ledger_path, payers, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    chain = fixture.chain
    fixture.ledger.store.close()
    upstream = start_upstream(out)
    servers: dict[str, Server] = {"upstream": upstream}
    try:
        servers["passthrough"] = start_passthrough(
            out, lambda pay_to: gateway_config(pay_to, WORKERS, THREADS, upstream.url, free=True), server=server
        )
        servers["gateway"] = start_gateway(
            out, home.path, gateway_config(fixture.operator.address, WORKERS, THREADS, upstream.url), server=server
        )
        yield Environment(servers, fixture, chain, home)
    finally:
        for server in reversed(list(servers.values())):
            server.stop()


def run(out: Path, settings: Settings, log: Any = print, server: str = "gunicorn") -> dict[str, Any]:
    with environment(out, settings.payers, server) as env:
        servers, upstream, home = env.servers, env.servers["upstream"], env.home
        store = SQLiteStore(home.ledger_path)
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            r: {"direct": [], "passthrough": [], "paid": []} for r in ROUTES
        }
        single: dict[str, dict[str, Any]] = {}
        rates: dict[str, float] = {}
        for name, (path, upstream_path, body) in ROUTES.items():
            terms = offered_terms(servers["gateway"], path)
            # Calibrate: how many payments will a run use? Sign that many (+30%) before timing.
            probe = env.paid_requests(path, body, terms, 600)
            requests = probe
            calibration = loadgen.run_load(
                servers["gateway"].port,
                requests,
                connections=settings.connections,
                duration=1.5,
                warmup=0.3,
                cycle=False,
            )
            if calibration.errors:
                raise RuntimeError(f"paid calibration on {path} failed: {calibration.first_error}")
            rates[name] = max(calibration.throughput, 50.0)
            _wait_quiet(store)
            sample_header = {PAYMENT_SIGNATURE_HEADER: _payment_of(probe[0])}  # unpaid targets: the same bytes
            direct_req = [loadgen.build_request("POST", upstream_path, upstream.port, body, sample_header)]
            pass_req = [loadgen.build_request("POST", path, servers["passthrough"].port, body, sample_header)]

            def paid_requests(
                seconds: float, path: str = path, body: bytes = body, terms: dict = terms, rate: str = name
            ) -> list[bytes]:
                return env.paid_requests(path, body, terms, int(rates[rate] * seconds * 1.3) + 200)

            for round_no in range(settings.rounds):
                for kind, target, reqs, cycle in (
                    ("direct", upstream, direct_req, True),
                    ("passthrough", servers["passthrough"], pass_req, True),
                    ("paid", servers["gateway"], None, False),
                ):
                    if reqs is None:
                        reqs = paid_requests(settings.warmup + settings.duration)
                    time.sleep(0.5)
                    result = _measure(
                        target,
                        servers,
                        reqs,
                        connections=settings.connections,
                        duration=settings.duration,
                        warmup=settings.warmup,
                        cycle=cycle,
                    )
                    raw[name][kind].append(result)
                    if result["exhausted"]:
                        rates[name] = max(rates[name], result["throughput_rps"]) * 1.5
                    log(
                        f"  P1 {name:8s} {kind:12s} round {round_no + 1}: {result['throughput_rps']:8.1f} req/s"
                        f"  p50 {result['latency']['p50_ms']:7.2f} ms  p99 {result['latency']['p99_ms']:7.2f} ms"
                        f"  errors {result['errors']}"
                    )
                    if kind == "paid":
                        _wait_quiet(store)
            # One connection: the latency a lone caller sees, with the machine otherwise idle.
            single[name] = {}
            for kind, target, reqs, cycle in (
                ("direct", upstream, direct_req, True),
                ("passthrough", servers["passthrough"], pass_req, True),
                ("paid", servers["gateway"], None, False),
            ):
                if reqs is None:
                    reqs = paid_requests(settings.single_duration + 0.5)
                result = _measure(
                    target, servers, reqs, connections=1, duration=settings.single_duration, warmup=0.5, cycle=cycle
                )
                result.pop("_latencies")
                single[name][kind] = result
                log(f"  P1 {name:8s} {kind:12s} 1 client: p50 {result['latency']['p50_ms']:7.3f} ms")
            _wait_quiet(store)
        audit_ok = _audit_after(store)
        store.close()

    routes: dict[str, Any] = {}
    for name in ROUTES:
        pooled = {kind: _pool(results) for kind, results in raw[name].items()}
        paid, passthrough = pooled["paid"], pooled["passthrough"]
        rounds = [
            {
                "paid_vs_passthrough_throughput": _ratio(pd["throughput_rps"], ps["throughput_rps"]),
                "passthrough_vs_direct_throughput": _ratio(ps["throughput_rps"], dr["throughput_rps"]),
                "paid_vs_direct_throughput": _ratio(pd["throughput_rps"], dr["throughput_rps"]),
                "added_latency_p50_ms": round(pd["latency"]["p50_ms"] - ps["latency"]["p50_ms"], 3),
                "added_latency_p99_ms": round(pd["latency"]["p99_ms"] - ps["latency"]["p99_ms"], 3),
            }
            for dr, ps, pd in zip(raw[name]["direct"], raw[name]["passthrough"], raw[name]["paid"], strict=True)
        ]

        def median_of(key: str, rounds: list[dict[str, float]] = rounds) -> float:
            return round(statistics.median(r[key] for r in rounds), 4)

        routes[name] = {
            "concurrency": settings.connections,
            "scenarios": pooled,
            "per_round": rounds,
            "paid_vs_passthrough_throughput": median_of("paid_vs_passthrough_throughput"),
            "passthrough_vs_direct_throughput": median_of("passthrough_vs_direct_throughput"),
            "paid_vs_direct_throughput": median_of("paid_vs_direct_throughput"),
            "added_latency_p50_ms": median_of("added_latency_p50_ms"),
            "added_latency_p99_ms": median_of("added_latency_p99_ms"),
            "pooled_paid_vs_passthrough_throughput": _ratio(paid["throughput_rps"], passthrough["throughput_rps"]),
            "single_client": single[name],
            "single_client_added_latency_p50_ms": round(
                single[name]["paid"]["latency"]["p50_ms"] - single[name]["passthrough"]["latency"]["p50_ms"], 3
            ),
        }
    return {
        "settings": settings.__dict__,
        "servers": {
            "workers": WORKERS,
            "threads": THREADS,
            "server": "gunicorn gthread" if server == "gunicorn" else f"{server} (bench.granian_app)",
            "passthrough": "inferpay gateway, the same routes with free = true",
            "upstream": "bench/upstream.py, 1 gunicorn gthread worker x 16 threads",
        },
        "routes": routes,
        "ledger_audit_after_run": audit_ok,
        "paid_vs_passthrough_throughput": min(r["paid_vs_passthrough_throughput"] for r in routes.values()),
        "paid_vs_direct_throughput": min(r["paid_vs_direct_throughput"] for r in routes.values()),
        "added_latency_p50_ms": max(r["added_latency_p50_ms"] for r in routes.values()),
        "added_latency_p99_ms": max(r["added_latency_p99_ms"] for r in routes.values()),
    }


def _payment_of(request: bytes) -> str:
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith(PAYMENT_SIGNATURE_HEADER))


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0


def _audit_after(store: LedgerStore) -> dict[str, Any]:
    """The gateway's ledger after the load: still a valid chain? (a fast gateway that corrupts
    the ledger would not count)."""
    try:
        report = audit(store)
    except Exception as exc:  # e.g. the code changed under a long run: report it, keep the figures
        return {"ok": False, "transactions": 0, "blocks": 0, "problems": [f"audit failed: {exc!r}"]}
    return {
        "ok": report.ok,
        "transactions": report.transactions,
        "blocks": report.blocks,
        "problems": [str(p) for p in report.problems[:5]],
    }


if __name__ == "__main__":
    print(json.dumps(run(Path("bench/out/p1"), QUICK), indent=2, default=str)[:4000])

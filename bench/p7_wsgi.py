"""The WSGI server: gunicorn (what ``inferpay gateway`` runs) against granian, on P1's load.

Issue #15 asks for "a faster WSGI server if it helps both paths (measure; gunicorn stays if
not)". This phase runs P1 (``bench.p1_gateway.run``: the pass-through and the paid gateway,
flat and metered routes, 16 keep-alive clients, then one client) once per server and repeat,
the servers alternating (gunicorn, granian, gunicorn, granian …) so that outside load falls on
both. granian serves the same app (``bench.granian_app``) with the same worker and thread
counts. Reported per server, medians over repeats: req/s and gateway CPU per request of each
path, the one-client p50; and granian ÷ gunicorn for each.

Not a phase of ``make bench``: it answers a design question, it is not a figure to hold the
code to. ``make bench-wsgi`` (``python -m bench.p7_wsgi [--quick]``) writes
``bench/out/wsgi/report.json``; granian comes from ``make bench-install`` (the bench extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import p1_gateway
from bench.common import write_json

SERVERS = ("gunicorn", "granian")


@dataclass
class Settings:
    repeats: int = 2
    p1: p1_gateway.Settings = field(default_factory=lambda: p1_gateway.Settings(rounds=3))


QUICK = Settings(repeats=1, p1=replace(p1_gateway.QUICK, rounds=1))


def _figures(p1: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for route, figures in p1["routes"].items():
        scenarios, single = figures["scenarios"], figures["single_client"]
        for kind in ("passthrough", "paid"):
            rounds = scenarios[kind]["rounds"]
            out[f"{route}_{kind}_rps"] = scenarios[kind]["throughput_rps"]
            server = "gateway" if kind == "paid" else "passthrough"
            cpu = statistics.mean(r["cpu_ms_per_request"][server] for r in rounds)
            out[f"{route}_{kind}_gateway_cpu_ms"] = round(cpu, 3)
            out[f"{route}_{kind}_one_client_p50_ms"] = single[kind]["latency"]["p50_ms"]
        out[f"{route}_paid_vs_passthrough"] = figures["paid_vs_passthrough_throughput"]
    return out


def run(out: Path, settings: Settings, log: Any = print) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    for repeat in range(settings.repeats):
        for server in SERVERS:
            log(f"  wsgi: {server}, repeat {repeat + 1} of {settings.repeats}")
            p1 = p1_gateway.run(out / f"{server}-{repeat}", settings.p1, log=log, server=server)
            if not p1["ledger_audit_after_run"].get("ok", False):
                raise RuntimeError(f"the ledger written under {server} does not audit: {p1['ledger_audit_after_run']}")
            runs[server].append(_figures(p1))
    medians = {
        server: {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
        for server, results in runs.items()
    }
    ratios = {
        k: round(medians["granian"][k] / medians["gunicorn"][k], 4) if medians["gunicorn"][k] else None
        for k in medians["gunicorn"]
    }
    for k, ratio in ratios.items():
        gunicorn, granian = medians["gunicorn"][k], medians["granian"][k]
        log(f"  wsgi {k:40s} gunicorn {gunicorn:9.3f}  granian {granian:9.3f}  ratio {ratio}")
    return {
        "settings": {"repeats": settings.repeats, "p1": settings.p1.__dict__},
        "servers": {"gunicorn": "gunicorn gthread (inferpay gateway)", "granian": "granian --interface wsgi --factory"},
        "per_repeat": runs,
        "medians": medians,
        "granian_vs_gunicorn": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.p7_wsgi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of one round per route (about 3 min)")
    ns = parser.parse_args(argv)
    out = Path(__file__).resolve().parent / "out" / "wsgi"

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {"started_at": started, "quick": ns.quick, **run(out, QUICK if ns.quick else Settings(), log)}
    write_json(out / "report.json", result)
    print(json.dumps(result["granian_vs_gunicorn"], indent=2))
    log(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

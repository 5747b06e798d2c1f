"""The PostgreSQL section of the benchmark's report (``report.json``'s ``postgresql`` key and its
Markdown), and how it joins the SQLite report.

The PostgreSQL phases (``bench.p1_postgres``, ``bench.p2_postgres``) are run on their own
(``python -m bench.run --database URL``), so their section is added to the report already at
the same place (``docs/performance/report.*`` for a full run, ``bench/out/report-quick.*`` for a quick one)
without touching its SQLite figures; a SQLite run that measures no PostgreSQL keeps the section
it finds. Each section says when it was measured, on what code and under what outside load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_existing(stem: Path) -> dict[str, Any] | None:
    """The report already at ``stem`` (None if there is none, or it cannot be read)."""
    try:
        data = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summary(section: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat, for the log and the docs."""
    out: dict[str, Any] = {}
    p1 = section.get("p1")
    if p1:
        for count, topology in p1["topologies"].items():
            for route, r in topology["routes"].items():
                paid = r["scenarios"]["paid"]
                out[f"p1_{count}gw_{route}"] = {
                    "paid_rps": paid["throughput_rps"],
                    "paid_p50_ms": paid["latency"]["p50_ms"],
                    "paid_p99_ms": paid["latency"]["p99_ms"],
                    "passthrough_rps": r["scenarios"]["passthrough"]["throughput_rps"],
                    "paid_vs_passthrough": r["paid_vs_passthrough_throughput"],
                    "errors": paid["errors"],
                }
            out[f"p1_{count}gw_audit_ok"] = topology["ledger_audit_after_run"]["ok"]
    p2 = section.get("p2")
    if p2:
        out["p2_best_1_process_per_s"] = p2["best_1_process_per_s"]
        out["p2_best_2_processes_per_s"] = p2["best_2_processes_per_s"]
        out["p2_recovery_one_core_per_s"] = p2["verification"]["single_core_per_s"]
        out["p2_recovery_all_cores_per_s"] = p2["verification"]["all_cores_per_s"]
        out["p2_ingest_vs_verify_limit"] = p2["ingest_vs_verify_limit"]
    return out


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def markdown(section: dict[str, Any]) -> str:
    server = section["server"]
    lines = [
        "## PostgreSQL: P1 and P2 with one and two gateway processes",
        "",
        f"{section['mode'].capitalize()} run {section['started_at']} for {section['seconds']:.0f} s; PostgreSQL"
        f" {server['version']} at `{server['database']}` (fsync={server['fsync']},"
        f" synchronous_commit={server['synchronous_commit']}), a fresh schema per ledger, dropped afterwards."
        " Sources measured: " + ", ".join(f"{k} `{v}`" for k, v in section["sources"].items()) + ".",
        "",
    ]
    if section.get("sources_at_end") and section["sources_at_end"] != section["sources"]:
        lines += [
            "**The measured sources changed during this run** (now: "
            + ", ".join(f"{k} `{v}`" for k, v in section["sources_at_end"].items())
            + ").",
            "",
        ]
    loads = [(p, m) for p, m in section.get("machine_load", {}).items() if m["foreign_share_of_machine"] > 0.05]
    if loads:
        lines += [
            "**Shared machine:** other programs used "
            + "; ".join(f"{m['foreign_share_of_machine']:.0%} of the machine during {p}" for p, m in loads)
            + ".",
            "",
        ]
    p1 = section.get("p1")
    if p1:
        s = p1["settings"]
        lines += [
            f"P1: {s['connections']} keep-alive clients split evenly over the servers, {s['rounds']} round(s) of"
            f" {s['duration']} s (after {s['warmup']} s warm-up), pass-through then paid in each round; each gateway"
            f" and each pass-through server is one gunicorn worker × {s['threads']} threads; CPU ms per request"
            " from /proc (PostgreSQL: every `postgres` process on the machine).",
            "",
            "| gateway processes | route | target | req/s | p50 ms | p99 ms | errors | CPU ms/req servers"
            " | CPU ms/req PostgreSQL | paid ÷ pass-through | audit after |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for count, topology in p1["topologies"].items():
            audit = topology["ledger_audit_after_run"]
            audit_text = f"ok ({audit['transactions']:,} tx)" if audit["ok"] else f"FAILED: {audit['problems'][:2]}"
            for route, r in topology["routes"].items():
                for kind in ("passthrough", "paid"):
                    sc = r["scenarios"][kind]
                    cpu = r["cpu_ms_per_request"][kind]
                    server_cpu = cpu["gateways"] if kind == "paid" else cpu["passthrough"]
                    lines.append(
                        f"| {count} | {route} | {kind} | {_f(sc['throughput_rps'])} | {_f(sc['latency']['p50_ms'], 2)}"
                        f" | {_f(sc['latency']['p99_ms'], 2)} | {sc['errors']} | {_f(server_cpu, 2)}"
                        f" | {_f(cpu['postgres_server'], 2)}"
                        f" | {_f(r['paid_vs_passthrough_throughput'], 3) if kind == 'paid' else ''}"
                        f" | {audit_text if kind == 'paid' else ''} |"
                    )
        lines.append("")
        for route, scale in p1.get("scale_out", {}).items():
            lines.append(
                f"- {route}: two gateway processes ÷ one: paid {scale['paid_2_vs_1']:.3f},"
                f" pass-through {scale['passthrough_2_vs_1']:.3f}."
            )
        lines.append("")
    p2 = section.get("p2")
    if p2:
        v = p2["verification"]
        lines += [
            f"P2: `Ledger.transfer` from separate processes on one PostgreSQL ledger, each with its own"
            f" connection pool and auto-sealer, {p2['settings']['ingest_seconds']} s per configuration."
            f" Signature recovery: {_f(v['single_core_per_s'], 0)}/s on one core,"
            f" {_f(v['all_cores_per_s'], 0)}/s on {v['processes']} processes at once.",
            "",
            "| processes | threads each | transfers | seconds | transfers/s | per process |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for r in p2["ingest"]:
            lines.append(
                f"| {r['processes']} | {r['threads_per_process']} | {r['transfers']:,} | {r['seconds']}"
                f" | {_f(r['per_s'])} | {', '.join(_f(x) for x in r['per_process_per_s'])} |"
            )
        lines += [
            "",
            f"Best: {_f(p2['best_ingest_per_s'])}/s ({p2['best_processes']} process(es) ×"
            f" {p2['best_threads_per_process']} threads); two processes ÷ one: {p2['two_vs_one_process']:.3f};"
            f" best ÷ all-core recovery: {p2['ingest_vs_verify_limit']:.4f}, ÷ one core:"
            f" {p2['ingest_vs_single_core_verify']:.4f}.",
            "",
        ]
    return "\n".join(lines) + "\n"

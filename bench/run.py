"""``python -m bench.run [--quick] [--only p1,p2,p3,p4] [--database postgresql://...]``: the whole
benchmark, one command.

A full run writes ``docs/performance/report.json``, ``report.md`` and ``report.png``; a quick
run (small sizes, short durations: about two minutes for p1–p4 once its small chains are
cached, four more for peers, witnessed and model) writes
``bench/out/report-quick.*`` so it never replaces the full report. Scratch files (ledgers,
server logs, cached chains) go to ``bench/out/``. Used by ``make bench`` / ``make bench-quick``,
never by the test suite.

The phases ``peers`` (LiteLLM's proxy and the official x402 middleware beside the gateway,
``bench.peers``), ``witnessed`` (P1 with two real witnesses, ``bench.p5_witnessed``) and
``model`` (the real embedding model as upstream, ``bench.p1_model``) run with the rest, or on
their own (``--only peers,witnessed,model``); ``memory`` (a gateway worker's RSS after 1k and
after 100k paid calls, ``bench.p6_memory``) likewise. A run that measures some phases keeps the other
phases' sections and keys from the report already there (same mode), each with the time it was
measured (``measured_at``), so one phase can be re-measured without losing the rest.

``--database URL`` runs P1 and P2 with the ledger in PostgreSQL instead (phases ``p1pg`` and
``p2pg``; ``--only p1,p2`` means those then): with one and with two gateway (or writer)
processes on one database, each ledger in a throwaway schema of the server at URL. Their
figures go to the report's ``postgresql`` section (``bench.report_pg``), added to the report
already there, so the SQLite figures stay as they were measured. Used by ``make bench-pg`` /
``make bench-pg-quick``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import p1_gateway, p2_ingest, p3_audit, p4_growth, report, report_pg, sidebyside
from bench.common import OUT, REPORTS, MachineLoad, machine, measured_sources

PHASES = ("p1", "p2", "p3", "p4", "peers", "witnessed", "model", "memory")
PG_PHASES = ("p1pg", "p2pg")  # P1 and P2 with the ledger in PostgreSQL (--database)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs (≈ 6 min)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated phases (default: p1,p2,p3,p4,peers,witnessed,model,memory; with --database: p1pg,p2pg)",
    )
    parser.add_argument(
        "--p4-build-budget",
        type=float,
        default=600.0,
        help="seconds the 1M-transaction ledger may take to build before 200k is used instead",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help="run P1 and P2 with the ledger in PostgreSQL at URL (postgresql://user@host:port/db;"
        " each run makes and drops a schema of its own): phases p1pg, p2pg",
    )
    parser.add_argument(
        "--litellm-database",
        metavar="URL",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL the peers phase offers LiteLLM's per-key budgets (its Prisma layer; a schema of its own)",
    )
    ns = parser.parse_args(argv)
    phases = [p.strip() for p in ns.only.split(",") if p.strip()] if ns.only else []
    if ns.database:
        phases = phases or list(PG_PHASES)
        if sqlite_only := [p for p in phases if p not in ("p1", "p2", *PG_PHASES)]:
            parser.error(f"{', '.join(sqlite_only)} measure the SQLite ledger only; with --database use p1, p2")
        phases = [p + "pg" if p in ("p1", "p2") else p for p in phases]
    phases = phases or list(PHASES)
    if unknown := set(phases) - set(PHASES) - set(PG_PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if any(p in PG_PHASES for p in phases) and not ns.database:
        parser.error("p1pg and p2pg need --database postgresql://...")
    if "peers" in phases:
        from bench import litellm_peer

        try:
            litellm_peer.binary()  # missing: say so now, not after the phases before it have run
        except RuntimeError as exc:
            parser.error(str(exc))
    database = None
    if ns.database:
        from bench import pg

        try:
            database = pg.check_base_url(ns.database)
            pg.server_info(database)  # answers now, or the run stops before measuring anything
        except ValueError as exc:
            parser.error(str(exc))
        except Exception as exc:  # psycopg's errors: unreachable, unknown database, refused
            from ledger.storage import describe  # the URL without any password in it

            parser.error(f"PostgreSQL at {describe(ns.database)} does not answer: {str(exc).strip().splitlines()[0]}")
    quick = ns.quick
    started = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "sources": measured_sources(),
        "machine_load": {},
    }
    keys: dict[str, Any] = {}

    result["measured_at"] = {}

    def phase(name: str, body: Any) -> Any:
        log(f"{name} ...")
        load = MachineLoad()
        value = body()
        result["machine_load"][name] = load.stop()
        result["measured_at"][name] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        result[name] = value
        return value

    if "p1" in phases:
        p1 = phase(
            "p1", lambda: p1_gateway.run(OUT / "p1", p1_gateway.QUICK if quick else p1_gateway.Settings(), log=log)
        )
        routes = ", ".join(f"{r}: {v['paid_vs_passthrough_throughput']:.3f}" for r, v in p1["routes"].items())
        keys["paid_vs_passthrough_throughput"] = report.key(
            p1["paid_vs_passthrough_throughput"], "paid_vs_passthrough_throughput", f"per route: {routes}"
        )
        lat = ", ".join(f"{r}: {v['added_latency_p50_ms']:.2f} ms" for r, v in p1["routes"].items())
        single = ", ".join(f"{r}: {v['single_client_added_latency_p50_ms']:.2f} ms" for r, v in p1["routes"].items())
        keys["added_latency_p50_ms"] = report.key(
            p1["added_latency_p50_ms"],
            "added_latency_p50_ms",
            f"per route: {lat}; with one client instead of 16: {single}",
        )
        keys["added_latency_p99_ms"] = report.key(p1["added_latency_p99_ms"], "added_latency_p99_ms")
        direct = ", ".join(f"{r}: {v['paid_vs_direct_throughput']:.3f}" for r, v in p1["routes"].items())
        keys["paid_vs_direct_throughput"] = report.key(
            p1["paid_vs_direct_throughput"], "paid_vs_direct_throughput", f"per route: {direct}"
        )
    verification = None
    if "p2" in phases:
        p2 = phase("p2", lambda: p2_ingest.run(OUT / "p2", p2_ingest.QUICK if quick else p2_ingest.Settings(), log=log))
        verification = p2["verification"]
        keys["ingest_vs_verify_limit"] = report.key(
            p2["ingest_vs_verify_limit"],
            "ingest_vs_verify_limit",
            f"best ingest {p2['best_ingest_per_s']:.0f}/s ({p2['best_threads']} thread(s)"
            f"{', group commit' if p2.get('best_group_commit') else ''}) vs"
            f" {verification['all_cores_per_s']:.0f}/s recovery on all cores; vs one core:"
            f" {p2['ingest_vs_single_core_verify']:.4f}",
        )
    if "p3" in phases:

        def p3_body() -> Any:
            rates = verification or p2_ingest.standalone_verification(1.0 if quick else 3.0)
            out = p3_audit.run(p3_audit.QUICK if quick else p3_audit.Settings(), rates["single_core_per_s"], log=log)
            out["verification_used"] = rates
            return out

        p3 = phase("p3", p3_body)
        small, large = p3["settings"]["sizes"]
        keys["verify_vs_limit"] = report.key(
            p3["verify_vs_limit"],
            "verify_vs_limit",
            f"{large}-transaction chain: {p3['audits'][str(large)]['per_s']:.0f} tx/s vs {p3['limit_per_s']:.0f} tx/s",
        )
        keys["verify_memory_ratio_100k_vs_10k"] = report.key(
            p3["verify_memory_ratio"],
            "verify_memory_ratio_100k_vs_10k",
            f"chains of {large} and {small} transactions; peak PSS of the auditor and its workers;"
            f" growth above baseline: {p3['verify_memory_growth_ratio']:.3f}",
        )
        if "flatness_size" in p3:
            longest = p3["flatness_size"]
            keys["verify_memory_ratio_1m_vs_10k"] = report.key(
                p3["verify_memory_ratio_flatness"],
                "verify_memory_ratio_1m_vs_10k",
                f"chains of {longest} and {small} transactions, peak PSS of the auditor and its workers;"
                f" the {longest}'s audit at {p3['audits'][str(longest)]['per_s']:.0f} tx/s"
                f" ({p3['verify_vs_limit_flatness']:.3f} of the limit)",
            )
    if "p4" in phases:
        settings = p4_growth.QUICK if quick else p4_growth.Settings(build_budget_seconds=ns.p4_build_budget)
        p4 = phase("p4", lambda: p4_growth.run(OUT / "p4", settings, log=log))
        note = f"ledgers of {p4['small']['transactions']} and {p4['large']['transactions']} transactions"
        if p4["large_is_fallback"]:
            note += f" ({p4['large']['requested']} would have taken longer than the build budget)"
        keys["balance_latency_ratio_1m_vs_1k"] = report.key(
            p4["balance_latency_ratio"], "balance_latency_ratio_1m_vs_1k", note
        )
    side = sidebyside.QUICK if quick else sidebyside.Settings()
    if "peers" in phases:
        peers_db = ns.litellm_database
        from bench import peers as peers_phase

        peers = phase("peers", lambda: peers_phase.run(OUT / "peers", side, log=log, database=peers_db))
        report.add_peer_keys(keys, peers)
    if "witnessed" in phases:
        from bench import p5_witnessed

        witnessed = phase("witnessed", lambda: p5_witnessed.run(OUT / "witnessed", side, log=log))
        report.add_witnessed_key(keys, witnessed)
    if "model" in phases:
        from bench import p1_model

        model = phase("model", lambda: p1_model.run(OUT / "model", side, log=log))
        report.add_model_key(keys, model)
    if "memory" in phases:
        from bench import p6_memory

        memory = phase(
            "memory", lambda: p6_memory.run(OUT / "memory", p6_memory.QUICK if quick else p6_memory.Settings(), log=log)
        )
        report.add_memory_key(keys, memory)
    postgresql = None
    if database is not None and any(p in PG_PHASES for p in phases):
        postgresql = _postgres_phases(phases, database, quick, result)
    result["keys"] = dict(keys)  # carry_over may add earlier runs' keys there; the log below shows this run's
    result["sources_at_end"] = measured_sources()
    result["seconds"] = round(time.perf_counter() - started, 1)
    stem = OUT / "report-quick" if quick else REPORTS / "report"
    stem.parent.mkdir(parents=True, exist_ok=True)
    existing = report_pg.load_existing(stem)
    sqlite_measured = any(p in PHASES for p in phases)
    if sqlite_measured:
        # The SQLite figures are this run's; a PostgreSQL section measured earlier stays, and so
        # do the sections (and keys) of phases this run did not measure.
        if postgresql is None and existing and existing.get("postgresql"):
            result["postgresql"] = existing["postgresql"]
        if existing and existing.get("mode") == result["mode"]:
            report.carry_over(existing, result, [p for p in PHASES if p not in phases])
    else:
        # Only PostgreSQL measured: its section joins the report already there, SQLite figures untouched.
        result = existing if existing and existing.get("keys") is not None else {**result, "keys": {}}
    if postgresql is not None:
        postgresql["seconds"] = round(time.perf_counter() - started, 1)
        postgresql["sources_at_end"] = result["sources_at_end"] if sqlite_measured else measured_sources()
        result["postgresql"] = postgresql
    report.write(result, stem, with_chart=sqlite_measured)
    log(f"wrote {stem}.json, .md{', .png' if sqlite_measured else ''} in {time.perf_counter() - started:.0f} s")
    for name, k in keys.items():
        verdict = "—" if k["pass"] is None else ("PASS" if k["pass"] else "FAIL")
        target = "" if k["target"] is None else f" (target {k['comparison']} {k['target']})"
        log(f"  {name:36s} {k['value']:>12}{target:18s} {verdict}")
    if postgresql is not None:
        for name, value in report_pg.summary(postgresql).items():
            log(f"  postgresql {name:28s} {value}")
    return 0


def _postgres_phases(phases: list[str], database: str, quick: bool, result: dict[str, Any]) -> dict[str, Any]:
    """P1 and P2 on PostgreSQL; returns the report's ``postgresql`` section."""
    from bench import p1_postgres, p2_postgres, pg

    section: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": result["machine"],
        "sources": measured_sources(),
        "server": pg.server_info(database),
        "machine_load": {},
    }
    for name, run_phase in (
        (
            "p1pg",
            lambda: p1_postgres.run(
                OUT / "p1pg", database, p1_postgres.QUICK if quick else p1_postgres.Settings(), log=log
            ),
        ),
        (
            "p2pg",
            lambda: p2_postgres.run(
                OUT / "p2pg", database, p2_postgres.QUICK if quick else p2_postgres.Settings(), log=log
            ),
        ),
    ):
        if name not in phases:
            continue
        log(f"{name} ...")
        load = MachineLoad()
        section[name.removesuffix("pg")] = run_phase()
        section["machine_load"][name] = load.stop()
    return section


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's three outputs: ``report.json`` (everything), ``report.md`` (the key figures
and the absolute numbers behind them, for people) and ``report.png`` (a chart)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.common import write_json

# key: (target, "ge" | "le", what it is)
TARGETS: dict[str, tuple[float | None, str, str]] = {
    "paid_vs_passthrough_throughput": (
        0.85,
        "ge",
        "paid req/s ÷ pass-through req/s, 16 clients: median of rounds, worse route",
    ),
    "added_latency_p50_ms": (1.0, "le", "paid p50 − pass-through p50, 16 clients: median of rounds, worse route"),
    "added_latency_p99_ms": (None, "le", "paid p99 − pass-through p99, 16 clients: median of rounds, worse route"),
    "ingest_vs_verify_limit": (0.5, "ge", "durable transfers/s ÷ all-core signature recovery/s"),
    "verify_vs_limit": (0.8, "ge", "audit tx/s (larger chain) ÷ 2 × single-core recovery/s"),
    "verify_memory_ratio_100k_vs_10k": (
        1.2,
        "le",
        "audit peak PSS (auditor and workers), larger chain ÷ smaller",
    ),
    "verify_memory_ratio_1m_vs_10k": (1.2, "le", "audit peak memory, 1M-transaction chain ÷ 10k (full run only)"),
    "balance_latency_ratio_1m_vs_1k": (1.2, "le", "balance lookup p50, long ledger ÷ short ledger"),
    "paid_vs_direct_throughput": (
        None,
        "ge",
        "paid req/s ÷ upstream called directly, 16 clients: median of rounds, worse route",
    ),
    "paid_vs_litellm_throughput": (
        1.0,
        "ge",
        "paid gateway req/s ÷ LiteLLM proxy (unpaid, master key) req/s, embeddings route, 16 clients: median of rounds",
    ),
    "added_latency_vs_litellm_ms": (0.0, "le", "paid gateway p50 − LiteLLM proxy p50, one client, embeddings route"),
    "gateway_vs_x402_middleware_throughput": (
        1.0,
        "ge",
        "paid gateway req/s ÷ official x402 Flask middleware + inferpay facilitator req/s, flat route, 16 clients",
    ),
    "witnessed_vs_plain_paid_throughput": (
        0.97,
        "ge",
        "paid req/s with two witnesses cosigning checkpoints ÷ without, flat route, 16 clients: median of rounds",
    ),
    "paid_vs_passthrough_throughput_model": (
        0.97,
        "ge",
        "paid ÷ pass-through req/s with the real embedding model as upstream, 16 clients: median of rounds",
    ),
    "gateway_rss_ratio_100k_vs_1k": (
        1.10,
        "le",
        "largest gunicorn worker's RSS after 100k paid calls ÷ after 1k (quick: 10k ÷ 1k), flat route",
    ),
}

# Which phase measures each key: a run that skips a phase keeps that phase's keys from before.
PHASE_OF_KEY = {
    "paid_vs_passthrough_throughput": "p1",
    "added_latency_p50_ms": "p1",
    "added_latency_p99_ms": "p1",
    "paid_vs_direct_throughput": "p1",
    "ingest_vs_verify_limit": "p2",
    "verify_vs_limit": "p3",
    "verify_memory_ratio_100k_vs_10k": "p3",
    "verify_memory_ratio_1m_vs_10k": "p3",
    "balance_latency_ratio_1m_vs_1k": "p4",
    "paid_vs_litellm_throughput": "peers",
    "added_latency_vs_litellm_ms": "peers",
    "gateway_vs_x402_middleware_throughput": "peers",
    "witnessed_vs_plain_paid_throughput": "witnessed",
    "paid_vs_passthrough_throughput_model": "model",
    "gateway_rss_ratio_100k_vs_1k": "memory",
}


def key(value: float, name: str, note: str = "") -> dict[str, Any]:
    target, sense, what = TARGETS[name]
    passed = None if target is None else (value >= target if sense == "ge" else value <= target)
    return {
        "value": value,
        "target": target,
        "comparison": ">=" if sense == "ge" else "<=",
        "pass": passed,
        "what": what,
        "note": note,
    }


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def add_peer_keys(keys: dict[str, Any], peers: dict[str, Any]) -> None:
    s = peers["scenarios"]
    keys["paid_vs_litellm_throughput"] = key(
        peers["paid_vs_litellm_throughput"],
        "paid_vs_litellm_throughput",
        f"inferpay paid {s['inferpay_paid_metered']['throughput_rps']:.0f} req/s vs LiteLLM"
        f" {s['litellm_metered']['throughput_rps']:.0f} req/s (pooled); rounds:"
        f" {_rounds(peers['paid_vs_litellm_per_round'])}",
    )
    one = peers["single_client"]
    keys["added_latency_vs_litellm_ms"] = key(
        peers["added_latency_vs_litellm_ms"],
        "added_latency_vs_litellm_ms",
        f"one client: inferpay paid p50 {one['inferpay_paid_metered']['p50_ms']:.2f} ms, LiteLLM p50"
        f" {one['litellm_metered']['p50_ms']:.2f} ms",
    )
    keys["gateway_vs_x402_middleware_throughput"] = key(
        peers["gateway_vs_x402_middleware_throughput"],
        "gateway_vs_x402_middleware_throughput",
        f"inferpay paid {s['inferpay_paid_flat']['throughput_rps']:.0f} req/s vs x402 middleware"
        f" {s['x402_middleware_flat']['throughput_rps']:.0f} req/s (pooled); rounds:"
        f" {_rounds(peers['gateway_vs_x402_per_round'])}",
    )


def add_witnessed_key(keys: dict[str, Any], witnessed: dict[str, Any]) -> None:
    cosigned = witnessed["checkpoints_cosigned_during_rounds"]
    keys["witnessed_vs_plain_paid_throughput"] = key(
        witnessed["witnessed_vs_plain_paid_throughput"],
        "witnessed_vs_plain_paid_throughput",
        f"rounds: {_rounds(witnessed['per_round'])}; checkpoints cosigned during the rounds: "
        + ", ".join(f"{name} {n}" for name, n in cosigned.items())
        + f" (interval_ms {witnessed['interval_ms']}); at the default interval_ms"
        f" {witnessed.get('default_interval_ms', 2000)}:"
        f" {witnessed.get('witnessed_default_interval_vs_plain', 0.0):.3f}",
    )


def add_model_key(keys: dict[str, Any], model: dict[str, Any]) -> None:
    s = model["scenarios"]
    keys["paid_vs_passthrough_throughput_model"] = key(
        model["paid_vs_passthrough_throughput_model"],
        "paid_vs_passthrough_throughput_model",
        f"paid {s['paid']['throughput_rps']:.1f} req/s vs pass-through {s['passthrough']['throughput_rps']:.1f}"
        f" vs model direct {s['direct']['throughput_rps']:.1f} (pooled); rounds: {_rounds(model['per_round'])}",
    )


def add_memory_key(keys: dict[str, Any], memory: dict[str, Any]) -> None:
    first, last = memory["snapshots"][0], memory["snapshots"][-1]
    keys["gateway_rss_ratio_100k_vs_1k"] = key(
        memory["gateway_rss_ratio"],
        "gateway_rss_ratio_100k_vs_1k",
        f"largest worker {first['largest_worker_rss_kib']} KiB after {first['paid_calls']} paid calls,"
        f" {last['largest_worker_rss_kib']} KiB after {last['paid_calls']}; the ledger file grew from"
        f" {first['ledger_file_kib']} to {last['ledger_file_kib']} KiB",
    )


def carry_over(existing: dict[str, Any], result: dict[str, Any], phases: list[str]) -> None:
    """Copy into ``result`` the sections, keys and machine load of ``phases`` (not measured by
    this run) from the ``existing`` report, each with the time it was measured."""
    for phase in phases:
        if phase not in existing:
            continue
        result.setdefault("carried_over", []).append(phase)
        result[phase] = existing[phase]
        result.setdefault("measured_at", {})[phase] = existing.get("measured_at", {}).get(
            phase, existing.get("started_at", "?")
        )
        if phase in existing.get("machine_load", {}):
            result["machine_load"][phase] = existing["machine_load"][phase]
        for name, k in existing.get("keys", {}).items():
            if PHASE_OF_KEY.get(name) == phase and name not in result["keys"]:
                result["keys"][name] = k
    # Keys in the order of TARGETS, whichever run measured them.
    order = list(TARGETS)
    result["keys"] = dict(sorted(result["keys"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def write(report: dict[str, Any], stem: Path, *, with_chart: bool = True) -> None:
    """``with_chart=False`` leaves the chart as it is (a run that measured only PostgreSQL has
    nothing new for it)."""
    write_json(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(markdown(report, stem.with_suffix(".png").name))
    if with_chart:
        chart(report, stem.with_suffix(".png"))


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _mean_cpu(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """CPU ms per request of each process group, averaged over the rounds."""
    names = rounds[0]["cpu_ms_per_request"]
    return {n: statistics.fmean(r["cpu_ms_per_request"][n] for r in rounds) for n in names}


def markdown(report: dict[str, Any], png_name: str) -> str:
    lines = [
        f"# inferpay benchmark ({report['mode']} run)",
        "",
        f"Run {report['started_at']} for {report['seconds']:.0f} s on {report['machine']['cpus']} CPUs"
        f" ({report['machine']['cpu_model']}), Python {report['machine']['python']},"
        f" SQLite {report['machine']['sqlite']}. Sources measured: "
        + ", ".join(f"{k} `{v}`" for k, v in report["sources"].items())
        + ".",
    ]
    if report.get("keys"):
        lines += [
            "Every key is a ratio of two things measured side by side in one run; the absolute numbers follow.",
            "",
            "| key | value | target | pass |",
            "|---|---:|---:|:---:|",
        ]
        for name, k in report["keys"].items():
            target = "—" if k["target"] is None else f"{k['comparison']} {k['target']}"
            verdict = "—" if k["pass"] is None else ("PASS" if k["pass"] else "FAIL")
            lines.append(f"| `{name}` | {_fmt(k['value'], 4)} | {target} | {verdict} |")
        lines.append("")
        for name, k in report["keys"].items():
            if k["note"]:
                lines.append(f"- `{name}`: {k['note']}")
        lines += ["", f"![chart]({png_name})", ""]
    else:
        lines += ["No SQLite phase has been run into this report yet; the PostgreSQL section follows.", ""]
    carried = report.get("carried_over", [])
    if carried:
        measured_at = report.get("measured_at", {})
        lines += [
            "Kept from an earlier run (this run did not measure them): "
            + ", ".join(f"{p} (measured {measured_at.get(p, '?')})" for p in carried)
            + ".",
            "",
        ]
    if report.get("sources_at_end") and report["sources_at_end"] != report["sources"]:
        lines += [
            "**The measured sources changed during the run** (now: "
            + ", ".join(f"{k} `{v}`" for k, v in report["sources_at_end"].items())
            + "): phases that ran after the change measured other code. Run again.",
            "",
        ]
    disturbed = [(p, m) for p, m in report.get("machine_load", {}).items() if m["foreign_share_of_machine"] > 0.05]
    if disturbed:
        lines.append(
            "**Shared machine:** other programs used "
            + "; ".join(f"{m['foreign_share_of_machine']:.0%} of the machine during {p}" for p, m in disturbed)
            + ". Ratios are measured side by side and hold up better than absolute numbers."
        )
        lines.append("")
    if "p1" in report:
        p1 = report["p1"]
        lines += [
            "## P1 payment overhead",
            "",
            f"{p1['settings']['connections']} keep-alive clients, {p1['settings']['rounds']} round(s) of "
            f"{p1['settings']['duration']} s (after {p1['settings']['warmup']} s warm-up) per scenario, the"
            " three scenarios back to back in each round; ratios are medians of the per-round ratios;"
            " req/s and latencies below pool all rounds; "
            f"gunicorn {p1['servers']['workers']} workers × {p1['servers']['threads']} threads. "
            f"Ledger audit after the load: ok={p1['ledger_audit_after_run']['ok']}"
            f" ({p1['ledger_audit_after_run']['transactions']} transactions).",
            "",
            "| route | target | req/s | p50 ms | p99 ms | errors | CPU ms/req (server) | CPU ms/req (upstream)"
            " | CPU ms/req (load gen) | 1-client p50 ms |",
            # (CPU per request: mean over rounds, read from /proc for each process tree)
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for route, r in p1["routes"].items():
            for kind, server in (("direct", "upstream"), ("passthrough", "passthrough"), ("paid", "gateway")):
                s = r["scenarios"][kind]
                cpu = _mean_cpu(s["rounds"])
                single = r["single_client"][kind]["latency"]["p50_ms"]
                lines.append(
                    f"| {route} | {kind} | {_fmt(s['throughput_rps'], 1)} | {_fmt(s['latency']['p50_ms'], 2)} |"
                    f" {_fmt(s['latency']['p99_ms'], 2)} | {s['errors']} |"
                    f" {_fmt(cpu[server], 3) if kind != 'direct' else '—'} | {_fmt(cpu['upstream'], 3)} |"
                    f" {_fmt(cpu['load_generator'], 3)} | {_fmt(single, 3)} |"
                )
        lines.append("")
        for route, r in p1["routes"].items():
            overheads = [
                x["gateway_reported_overhead"]["p50_ms"]
                for x in r["scenarios"]["paid"]["rounds"]
                if x.get("gateway_reported_overhead")
            ]
            overhead = {"p50_ms": statistics.median(overheads) if overheads else 0.0}
            lines.append(
                f"- {route}: paid/pass-through {r['paid_vs_passthrough_throughput']:.3f} (rounds: "
                + ", ".join(f"{x['paid_vs_passthrough_throughput']:.3f}" for x in r.get("per_round", []))
                + f"), pass-through/direct"
                f" {r['passthrough_vs_direct_throughput']:.3f}; added p50 {r['added_latency_p50_ms']:.2f} ms, p99"
                f" {r['added_latency_p99_ms']:.2f} ms; one client: added p50"
                f" {r['single_client_added_latency_p50_ms']:.3f} ms; gateway's own X-Inferpay-Overhead-Ms p50"
                f" {overhead.get('p50_ms', 0):.2f} ms (median of rounds)."
            )
        lines.append("")
    if "p2" in report:
        p2 = report["p2"]
        v = p2["verification"]
        lines += [
            "## P2 ledger ingest",
            "",
            f"Signature recovery: {_fmt(v['single_core_per_s'], 0)}/s on one core,"
            f" {_fmt(v['all_cores_per_s'], 0)}/s on {v['processes']} processes at once. Ledger connection:"
            f" journal_mode={p2['durability']['journal_mode']}, synchronous={p2['durability']['synchronous']}.",
            "",
            "| threads | group commit | transfers | seconds | transfers/s |",
            "|---:|:---:|---:|---:|---:|",
        ]
        for r in p2["ingest"]:
            lines.append(
                f"| {r['threads']} | {'yes' if r.get('group_commit') else 'no'} | {r['transfers']} |"
                f" {r['seconds']} | {_fmt(r['per_s'], 1)} |"
            )
        lines += ["", f"Best ingest ÷ single-core recovery: {p2['ingest_vs_single_core_verify']:.4f}.", ""]
    if "p3" in report:
        p3 = report["p3"]
        lines += [
            "## P3 audit",
            "",
            f"Limit: {_fmt(p3['limit_per_s'], 0)} tx/s ({p3['limit']}).",
            "",
            "| transactions | seconds | tx/s | ÷ limit | RSS before audit MiB | peak RSS MiB | ok |",
            "|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for size, a in p3["audits"].items():
            lines.append(
                f"| {size} | {a['seconds']} | {_fmt(a['per_s'], 1)} | {a['vs_limit']:.4f} |"
                f" {a['rss_before_audit_kb'] / 1024:.1f} | {a['memory_kb'] / 1024:.1f} | {a['ok']} |"
            )
        lines += [
            "",
            f"Peak-RSS growth above the process baseline, larger ÷ smaller: {p3['verify_memory_growth_ratio']:.3f}.",
            "",
        ]
    if "p4" in report:
        p4 = report["p4"]
        lines += [
            "## P4 growth",
            "",
            "| ledger | balance p50 µs | balance p99 µs | history page (50) p50 ms | rows of the payer |",
            "|---:|---:|---:|---:|---:|",
        ]
        for label in ("small", "large"):
            g = p4[label]
            lines.append(
                f"| {g['transactions']} tx | {g['balance']['p50_ms'] * 1000:.1f} |"
                f" {g['balance']['p99_ms'] * 1000:.1f} |"
                f" {g['history_page_50']['p50_ms']:.3f} | {g['history_rows_of_one_payer']} |"
            )
        if p4["large_is_fallback"]:
            lines.append(
                f"\nThe long ledger holds {p4['large']['transactions']} transactions, not"
                f" {p4['large']['requested']}: building that many was projected past the build budget."
            )
        lines += [
            "",
            f"History page latency, long ÷ short: {p4['history_latency_ratio']:.3f}.",
            "",
            "| block size | seal ms | µs per tx |",
            "|---:|---:|---:|",
        ]
        for size, s in p4["sealing"].items():
            lines.append(f"| {size} | {s['seal_ms']:.2f} | {s['per_tx_us']:.1f} |")
        lines.append("")
    lines += _peers_markdown(report)
    if report.get("postgresql"):
        from bench import report_pg

        lines.append(report_pg.markdown(report["postgresql"]))
    return "\n".join(lines) + "\n"


def _scenario_rows(scenarios: dict[str, Any], single: dict[str, Any], labels: dict[str, str]) -> list[str]:
    lines = ["| what | req/s | p50 ms | p99 ms | errors | 1-client p50 ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, label in labels.items():
        if name not in scenarios:
            continue
        s, one = scenarios[name], single.get(name, {})
        lines.append(
            f"| {label} | {_fmt(s['throughput_rps'], 1)} | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} |"
            f" {s['errors']} | {_fmt(one['p50_ms'], 3) if one else '—'} |"
        )
    return lines


def _peers_markdown(report: dict[str, Any]) -> list[str]:
    """The sections of the peers, witnessed and model phases."""
    lines: list[str] = []
    if "peers" in report:
        p = report["peers"]
        st = p["settings"]
        lines += [
            "## Peers",
            "",
            f"{st['connections']} keep-alive clients, {st['rounds']} round(s) of {st['duration']} s (after"
            f" {st['warmup']} s warm-up) per target, the targets back to back in each round; req/s and latencies"
            " pool the rounds, ratios are medians of per-round ratios. "
            + "; ".join(f"{k}: {v}" for k, v in p["servers"].items())
            + ".",
            "",
        ]
        lines += _scenario_rows(
            p["scenarios"],
            p["single_client"],
            {
                "litellm_metered": "LiteLLM proxy, unpaid (embeddings)",
                "inferpay_paid_metered": "inferpay gateway, paid (embeddings)",
                "x402_middleware_flat": "x402 Flask middleware + inferpay facilitator, paid (flat)",
                "inferpay_paid_flat": "inferpay gateway, paid (flat)",
            },
        )
        b = p["litellm_budgets"]
        lines += [
            "",
            f"- LiteLLM per-key budgets: {'ran' if b['runs'] else 'could not run here'}: {b['reason']}",
            "",
        ]
    if "witnessed" in report:
        w = report["witnessed"]
        lines += [
            "## Witnessed checkpoints",
            "",
            "Paid gateways on ledgers of their own: one plain, one with a checkpoint key, interval_ms"
            f" {w['interval_ms']}"
            f" (and a third at the default interval) with two `inferpay witness` servers; flat route,"
            f" {w['settings']['connections']} clients, rounds in"
            f" turn. Ratio per round: {_rounds(w['per_round'])}.",
            "",
        ]
        lines += _scenario_rows(
            w["scenarios"],
            {},
            {
                "plain": "paid, no checkpoints",
                "witnessed": f"paid, 2 witnesses, interval_ms {w['interval_ms']}",
                "witnessed_default_interval": f"paid, 2 witnesses, interval_ms {w.get('default_interval_ms')}",
            },
        )
        after = w["checkpoint_after"]
        lines += [
            "",
            "- Pushes during the rounds: "
            + ", ".join(f"{k}: {v}" for k, v in w["witness_pushes_during_rounds"].items())
            + f"; after the load: checkpoint size {after['checkpointSize']} of head {after['headSize']},"
            f" cosigned by {', '.join(after['cosignedBy']) or 'nobody'}.",
            "",
        ]
    if "model" in report:
        m = report["model"]
        lines += [
            "## The real model as upstream",
            "",
            f"{m['servers']['model']}; {m['servers']['gateway']}. {m['settings']['connections']} clients."
            f" Paid ÷ pass-through per round: {_rounds(m['per_round'])}; pass-through ÷ direct"
            f" {m['passthrough_vs_direct_throughput_model']:.3f}; one client, paid − pass-through p50"
            f" {m['single_client_added_latency_p50_ms']:.2f} ms.",
            "",
        ]
        lines += _scenario_rows(
            m["scenarios"],
            m["single_client"],
            {"direct": "model server directly", "passthrough": "pass-through gateway", "paid": "paid gateway"},
        )
        lines.append("")
    return lines


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(f"inferpay benchmark ({report['mode']}, {report['started_at']})", fontsize=13)

    ax = axes[0][0]
    if "p1" in report:
        routes = list(report["p1"]["routes"])
        kinds = ["direct", "passthrough", "paid"]
        width = 0.25
        for i, kind in enumerate(kinds):
            values = [report["p1"]["routes"][r]["scenarios"][kind]["throughput_rps"] for r in routes]
            bars = ax.bar([x + (i - 1) * width for x in range(len(routes))], values, width, label=kind)
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(routes)), routes)
        ax.set_ylabel("requests / s (16 clients)")
        ax.set_title("P1 throughput: upstream direct, pass-through, paid")
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()

    ax = axes[0][1]
    if "p1" in report:
        routes = list(report["p1"]["routes"])
        labels, p50, p99 = [], [], []
        for r in routes:
            for kind in ("passthrough", "paid"):
                lat = report["p1"]["routes"][r]["scenarios"][kind]["latency"]
                labels.append(f"{r}\n{kind}")
                p50.append(lat["p50_ms"])
                p99.append(lat["p99_ms"])
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], p50, 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], p99, 0.4, label="p99")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("latency ms (log), 16 clients")
        ax.set_title("P1 latency")
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()

    ax = axes[1][0]
    labels, values, colors = [], [], []
    if "p2" in report:
        v = report["p2"]["verification"]
        labels += ["recover\n1 core", f"recover\n{v['processes']} procs"]
        values += [v["single_core_per_s"], v["all_cores_per_s"]]
        colors += ["tab:gray", "tab:gray"]
        for r in report["p2"]["ingest"]:
            labels.append(f"ingest\n{r['threads']} thr{' GC' if r.get('group_commit') else ''}")
            values.append(r["per_s"])
            colors.append("tab:blue")
    if "p3" in report:
        for size, a in report["p3"]["audits"].items():
            labels.append(f"audit\n{int(size) // 1000}k")
            values.append(a["per_s"])
            colors.append("tab:orange")
    if labels:
        bars = ax.bar(range(len(labels)), values, color=colors)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("per second (log)")
        ax.set_title("P2/P3: signature recovery vs durable ingest vs audit")
    else:
        ax.set_axis_off()

    ax = axes[1][1]
    if "p4" in report:
        seal = report["p4"]["sealing"]
        sizes = [int(s) for s in seal]
        ax.plot(sizes, [seal[str(s)]["seal_ms"] for s in sizes], "o-", label="seal time (ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("block size (transactions)")
        ax.set_ylabel("ms (log)")
        small, large = report["p4"]["small"], report["p4"]["large"]
        ax.set_title(
            f"P4 sealing; balance p50 {small['balance']['p50_ms'] * 1000:.1f} µs @ {small['transactions']} tx vs"
            f" {large['balance']['p50_ms'] * 1000:.1f} µs @ {large['transactions']} tx",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""``python -m reliability.markdown [report.json ...]``: a run's figures as the Markdown tables of
docs/reliability.md, so the document quotes the report and never retypes a number. Given
several reports (a full run made in ``--only`` groups), first one table of every phase of them
all (``phase_table``), then each report's tables."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from reliability.report import OUT

LOAD = ("bank", "crash", "clock", "bank-pg")


def render(report: dict[str, Any]) -> str:
    phases = report["phases"]
    summary = report["summary"]
    out = [
        f"Run of {report['startedAt']} ({report['mode']}, seed {report['seed']}), on "
        f"{report['machine']['cpus']} cores, Python {report['machine']['python']}: "
        f"{report['elapsedSeconds'] / 60:.1f} minutes in all. "
        f"**{summary['newFindings']} findings**"
        + (
            f", {sum(summary['knownDefectFindings'].values())} of known defects"
            if summary["knownDefectFindings"]
            else ""
        )
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| operations (load phases) | {summary['operations']:,} |",
        f"| acknowledged (2xx with a verified receipt, or 201) | {summary['acknowledged']:,} |",
        f"| **lost acknowledged payments** | **{summary['lostAcknowledgedPayments']}** |",
        f"| **overspent** (most negative balance seen, base units) | **{summary['overspendBaseUnits']}** |",
        f"| faults injected | {summary['faultsInjected']} |",
        f"| verify after each load phase | {'passed' if summary['auditOk'] else 'FAILED'} |",
        f"| attacks tried / refused | {summary['attacksTried']:,} / {summary['attacksRefused']:,} |",
        f"| inputs fuzzed | {summary['inputsFuzzed']:,} |",
        f"| tamper cases detected | {summary['tamperCasesDetected']} of {summary['tamperCases']} |",
        "",
    ]
    loads = [p for p in LOAD if p in phases]
    if loads:
        out += ["| load phase | " + " | ".join(loads) + " |", "|---|" + "---|" * len(loads)]
        rows: list[tuple[str, Any]] = [
            ("seconds of load, client threads", lambda p: f"{p['durationSeconds']:.0f} s, {p['clients']}"),
            ("operations (per second)", lambda p: f"{p['operations']['total']:,} ({p['operations']['perSecond']})"),
            ("acknowledged", lambda p: f"{p['operations']['acknowledged']:,}"),
            ("refused", lambda p: f"{_count(p, 'refused'):,}"),
            ("cut off (ambiguous) / never sent", lambda p: f"{_count(p, 'ambiguous'):,} / {_count(p, 'unsent'):,}"),
            ("errors (5xx, bad receipt)", lambda p: f"{_count(p, 'error')}"),
            (
                "refusals by code",
                lambda p: ", ".join(f"{c}: {n:,}" for c, n in p["operations"]["refusalCodes"].items()),
            ),
            ("mints while loaded", lambda p: f"{p['operations']['mints']}"),
            ("faults", lambda p: ", ".join(f"{k}: {v}" for k, v in p["faults"]["byKind"].items()) or "none"),
            (
                "ledger polls (file / HTTP)",
                lambda p: f"{p['monitor']['ledgerPolls']:,} / {p['monitor']['httpPolls']:,}",
            ),
            ("lowest balance seen (base units)", lambda p: f"{p['monitor']['minAvailableSeen']}"),
            ("longest wait to be sealed", lambda p: f"{p['monitor']['longestSealWaitSeconds']} s"),
            (
                "settles in the ledger / matched to a call",
                lambda p: f"{p['reconcile']['settlesInLedger']:,} / {p['reconcile']['settlesMatched']:,}",
            ),
            (
                "cut-off calls charged once / not charged",
                lambda p: f"{p['reconcile']['cutOffCallsSettled']} / {p['reconcile']['cutOffCallsNotCharged']}",
            ),
            (
                "cut-off transfers applied / not applied",
                lambda p: f"{p['reconcile']['cutOffTransfersApplied']} / {p['reconcile']['cutOffTransfersNotApplied']}",
            ),
            (
                "holds expired by the sealer (stranded by crashes)",
                lambda p: f"{p['reconcile']['ledgerTransactionsByKind'].get('expire', 0)}",
            ),
            (
                "holds open past expiry / unsealed at the end",
                lambda p: f"{p['settleDown']['holdsPastExpiry']} / {p['settleDown']['unsealedAfterGrace']}",
            ),
            ("lost acknowledged", lambda p: f"**{p['reconcile']['lostAcknowledged']}**"),
            (
                "verify (blocks, transactions)",
                lambda p: (
                    f"{'ok' if p['audit']['ok'] else 'FAILED'} "
                    f"({p['audit']['blocks']:,}, {p['audit']['transactions']:,})"
                ),
            ),
            ("findings", lambda p: f"{p['findings']}"),
        ]
        for label, cell in rows:
            out.append(f"| {label} | " + " | ".join(cell(phases[p]) for p in loads) + " |")
        pg = phases.get("bank-pg", {}).get("postgresql")
        if pg:
            heads = pg["heads"]
            spread = ", ".join(
                f"{n:,} operations ({pg['acknowledgedByGateway'][u]:,} acknowledged)"
                for u, n in pg["operationsByGateway"].items()
            )
            out += [
                "",
                f"bank-pg: {pg['gateways']} gateway servers ({pg['workersPerGateway']} workers each) on one "
                f"PostgreSQL ledger (`{pg['database']}`, schema `{pg['schema']}`, dropped afterwards); "
                f"per gateway: {spread}. Heads once sealing settled: "
                f"{'equal' if heads['equal'] else 'DIFFERENT'} (height {heads['height']}, "
                f"{heads['treeSize']} transactions, `{str(heads['hash'])[:18]}…`), and the head verify replayed "
                f"to {'is the same' if heads['verifyHead'] == heads['hash'] else 'DIFFERS'}. "
                "Acknowledged charges ÷ funds received, per wallet: "
                + ", ".join(f"{c:,} ÷ {r:,}" for c, r in pg.get("acknowledgedChargesVsReceived", {}).values())
                + f" base units. Tracebacks in the gateways' logs: {pg['gatewayLogTracebacks']}.",
            ]
        probe = phases.get("clock", {}).get("sealAfterClockCorrection")
        if probe:
            out += [
                "",
                f"Seal after a clock correction ({probe['clockAheadSeconds']:.0f} s): sealed within "
                f"{probe['sealedWithinSeconds']} s of the gateway's start.",
            ]
        out.append("")
    if "attacks" in phases:
        a = phases["attacks"]
        out += ["| attack at the gateway | tried | refused | answers |", "|---|---|---|---|"]
        for name, r in a["refusedAtTheGateway"].items():
            answers = ", ".join(f"{k} ×{v}" for k, v in r["got"].items())
            out.append(f"| {name.replace('_', ' ')} | {r['tried']} | {r['refused']} | {answers} |")
        t, c = a["transferReplays"], a["concurrentReplays"]
        out.append(f"| used transfer submitted again | {t['tried']} | {t['refused']} | {t['answer']} |")
        out.append(
            f"| concurrent replays ({c['threadsPerPayment']} threads per payment) | {c['tried']} | "
            f"{c['refused']} | charged once each |"
        )
        out += ["", "| lie told to the client SDK | tried | refused |", "|---|---|---|"]
        for name, r in a["refusedByTheClientSdk"].items():
            out.append(f"| {name.replace('_', ' ')} | {r['tried']} | {r['refused']} |")
        out += [
            "",
            f"Ledger unchanged by the refused attacks: {'yes' if a['ledgerUnchangedByRefusedAttacks'] else 'NO'}.",
            "",
        ]
    if "fuzz" in phases:
        f = phases["fuzz"]
        out += ["| fuzzed | inputs |", "|---|---|"]
        out += [f"| {k} | {v:,} |" for k, v in f["inputsByTarget"].items() if v]
        statuses = ", ".join(f"{k}: {v:,}" for k, v in f["httpStatuses"].items())
        out += [
            "",
            f"HTTP answers: {statuses}. Ledger unchanged: {'yes' if f['ledgerUnchanged'] else 'NO'}. "
            f"Tracebacks in the gateway's log: {f['gatewayTracebacks']}.",
            "",
        ]
    if "tamper" in phases:
        t = phases["tamper"]
        out += ["| tampering | verify | client with a newer head |", "|---|---|---|"]
        for name, case in t["byCase"].items():
            if "skipped" in case:
                out.append(f"| {name.replace('_', ' ')} | skipped: {case['skipped']} | |")
                continue
            verify = {True: "reports it", False: "passes", None: "not run"}[case.get("detectedByVerify")]
            if case.get("verifyCrashed"):
                verify = f"crashed: {case['verifyCrashed']}"
            if case["expectedDetector"] == "verify" and case.get("firstProblem"):
                verify += f" (`{case['firstProblem'].split('[')[-1].rstrip(']')}`)"
            client = {True: "refuses", False: "NOTICES NOTHING", None: ""}[case.get("detectedByClient")]
            out.append(f"| {case['what']} | {verify} | {client} |")
        out.append("")
    return "\n".join(out)


DASH = "–"


def _figures(name: str, p: dict[str, Any]) -> dict[str, Any]:
    """One phase's row: operations, acknowledged, lost, overspent, faults, attacks refused (of
    tried), tampers detected (of cases); a dash where the phase has no such thing."""
    row: dict[str, Any] = dict.fromkeys(("ops", "ack", "lost", "over", "faults", "attacks", "tampers"), DASH)
    if "reconcile" in p:  # the bank-style load phases
        row |= {
            "ops": p["operations"]["total"],
            "ack": p["operations"]["acknowledged"],
            "lost": p["reconcile"]["lostAcknowledged"],
            "over": p["monitor"]["overspendBaseUnits"],
            "faults": p["faults"]["injected"],
        }
        if name == "disk-full":
            row["faults"] = f"{p['faults']['injected']} + 1 (the witness's disk)"
    elif name == "facilitator":
        refused = p["replays"]["sent"] - p["replays"]["accepted"]
        over = p.get("upto", {})
        tried = p["replays"]["sent"] + over.get("settlesAboveMaximum", 0)
        refused += over.get("settlesAboveMaximum", 0) - over.get("settlesAboveMaximumAccepted", 0)
        row |= {
            "ops": p["operations"]["total"],
            "ack": p["operations"]["acknowledged"],
            "lost": p["money"]["lostAcknowledged"],
            "over": p["money"]["overspendBaseUnits"],
            "faults": 0,
            "attacks": f"{refused} / {tried}",
        }
    elif name == "providers":
        row |= {"ops": p["calls"], "ack": p["served"], "lost": p["lost"], "faults": "1 kill, 1 rogue"}
    elif name == "rate-limits":
        ops = p["operations"]
        row |= {"ops": ops["total"], "ack": ops["admitted"], "lost": DASH, "faults": 0}
    elif name == "attacks":
        row["attacks"] = f"{p['refused']:,} / {p['tried']:,}"
    elif name == "fuzz":
        row["ops"] = p["inputs"]
    elif name == "tamper":
        row["tampers"] = f"{p['detected']} / {p['cases']}"
    elif name == "tlog":
        mirror, witness, split = p["mirror"], p["witness"], p.get("splitView", {})
        told = mirror.get("liesTold", 0) + split.get("attempted", 0)
        caught = mirror.get("detected", 0) + min(split.get("refusedByWitnesses", 0), split.get("refusedByClients", 0))
        row |= {"faults": f"{witness.get('kills', 0)} witness kills", "tampers": f"{caught} / {told}"}
    return row


def phase_table(reports: list[dict[str, Any]]) -> list[str]:
    out = [
        "| phase | seconds | operations | acknowledged | lost | overspent | faults injected "
        "| attacks refused / tried | tampers detected / told | findings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        counted = Counter(f["phase"] for f in report.get("findings", []))
        for name, p in report["phases"].items():
            row = _figures(name, p)
            seconds = report.get("phaseSeconds", {}).get(name, p.get("durationSeconds", DASH))
            cells = [row[k] for k in ("ops", "ack", "lost", "over", "faults", "attacks", "tampers")]
            cells = [f"{c:,}" if isinstance(c, int) else c for c in cells]
            out.append(f"| {name} | {seconds} | " + " | ".join(cells) + f" | {counted[name]} |")
    return out


def _count(phase: dict[str, Any], outcome: str) -> int:
    return sum(c.get(outcome, 0) for c in phase["operations"]["byKindAndOutcome"].values())


if __name__ == "__main__":
    paths = [Path(a) for a in sys.argv[1:]] or [OUT / "report.json"]
    reports = [json.loads(path.read_text()) for path in paths]
    print("\n".join(phase_table(reports)) + "\n")
    for report in reports:
        print(render(report))

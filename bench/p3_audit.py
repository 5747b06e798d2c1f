"""P3, audit: ``ledger.audit.audit`` (what ``inferpay verify`` runs) on chains of two lengths,
each in a fresh process, against twice the single-core signature-recovery rate measured in the
same run (the machine's two cores, each doing nothing but recovering signers), and the peak
memory of each audit.

The chains hold 100 payers and 1000 recipients whatever their length, so the live state (the
balances the auditor must hold) is the same size in both, and any memory growth comes from the
length of history alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chains import build_chain

PAYERS, RECIPIENTS = 100, 1000


@dataclass
class Settings:
    sizes: tuple[int, int] = (10_000, 100_000)
    # Issue #15's "the audit stays flat from 10k to 1M": audited after the two above, its memory
    # set beside the smaller one's. Its rate is reported, not a key (the key stays the 100k's).
    flatness_size: int | None = 1_000_000


QUICK = Settings(sizes=(2_000, 10_000), flatness_size=None)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the auditor's forked workers), from /proc."""
    out, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        out += [int(c) for c in children]
        frontier += [int(c) for c in children]
    return out


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (a forked worker's inherited memory) are split among
    the processes sharing them instead of counted in each, so a tree's sum is its real footprint."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def audit_in_child(path: str) -> dict[str, Any]:
    """The audit in a fresh process; its memory is the peak, sampled every 10 ms, of the summed
    PSS of that process and every worker it forks (the auditor's own VmHWM is reported too)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.audit_child", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_pss_kb(pid) for pid in _tree(process.pid)))
        time.sleep(0.01)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"audit of {path} failed:\n{stderr[-3000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["peak_tree_pss_kb"] = peak
    return result


def run(settings: Settings, single_core_verify_per_s: float, log: Any = print) -> dict[str, Any]:
    limit = 2 * single_core_verify_per_s
    audits = {}
    sizes = [*settings.sizes, *([settings.flatness_size] if settings.flatness_size else [])]
    for size in sizes:
        path, meta = build_chain("audit", size, payers=PAYERS, recipients=RECIPIENTS, log=log)
        result = audit_in_child(str(path))
        # The whole audit's footprint: the auditor and its forked workers, shared pages counted once.
        result["memory_kb"] = result["peak_tree_pss_kb"]
        result["per_s"] = round(result["transactions"] / result["seconds"], 1)
        result["vs_limit"] = round(result["per_s"] / limit, 4)
        result["chain_build_seconds"] = meta["build_seconds"]
        audits[str(size)] = result
        log(
            f"  P3 audit of {size} transactions: {result['seconds']:.1f} s, {result['per_s']:.0f} tx/s,"
            f" peak memory (PSS, auditor and workers) {result['memory_kb'] / 1024:.1f} MiB, ok={result['ok']}"
        )
    small, large = (audits[str(s)] for s in settings.sizes)
    small_growth = max(1, small["memory_kb"] - small["rss_before_audit_kb"])
    flat: dict[str, Any] = {}
    if settings.flatness_size:
        longest = audits[str(settings.flatness_size)]
        flat = {
            "flatness_size": settings.flatness_size,
            "verify_memory_ratio_flatness": round(longest["memory_kb"] / small["memory_kb"], 4),
            "verify_vs_limit_flatness": longest["vs_limit"],
        }
    return {
        "settings": {"sizes": list(settings.sizes), "payers": PAYERS, "recipients": RECIPIENTS},
        **flat,
        "limit_per_s": round(limit, 1),
        "limit": "2 x single-core coincurve recovery rate (P2's, same run)",
        "audits": audits,
        "verify_vs_limit": large["vs_limit"],
        "verify_memory_ratio": round(large["memory_kb"] / small["memory_kb"], 4),
        "verify_memory_growth_ratio": round((large["memory_kb"] - large["rss_before_audit_kb"]) / small_growth, 4),
    }

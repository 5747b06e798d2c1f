"""Run ``ledger.audit.audit`` once on a ledger file, in a fresh process, and print what it took
as JSON: seconds, transactions, problems, and memory (RSS before the audit, and the process's
peak RSS, VmHWM, after it: the process is new, so its peak is the audit's own; a child
process's peak is reported apart).
``python -m bench.audit_child FILE``."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main(path: str) -> None:
    from ledger.audit import audit
    from ledger.storage.sqlite import SQLiteStore

    store = SQLiteStore(path)
    store.chain_info()
    baseline = status_kb("VmRSS")
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # e.g. tools run by imports
    start = time.perf_counter()
    report = audit(store)
    seconds = time.perf_counter() - start
    store.close()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "transactions": report.transactions,
                "blocks": report.blocks,
                "ok": report.ok,
                "problems": [str(p) for p in report.problems[:5]],
                "rss_before_audit_kb": baseline,
                # VmHWM, not ru_maxrss: on Linux ru_maxrss also remembers the parent's RSS from before
                # the exec, which would measure the benchmark, not the audit.
                "peak_rss_kb": status_kb("VmHWM"),
                # If the auditor ever works in child processes, the largest one's peak shows here.
                "largest_child_peak_rss_kb": children_after if children_after > children_before else 0,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

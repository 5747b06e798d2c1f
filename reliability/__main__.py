"""``python -m reliability --quick | --full [--only PHASES] [--seed N] [--out FILE] [--database URL]``

Runs the phases in order on one deployment (bank, crash, clock, facilitator, attacks, tlog,
fuzz, tamper), then ``bank-pg`` on a deployment of its own (two gateways on one PostgreSQL
ledger, in a throwaway schema of the server at ``--database``; skipped, saying why, when that
server does not answer), then ``providers`` and ``rate-limits`` (each on a gateway of its own),
``pg-faults`` (two gateways on a PostgreSQL cluster the suite starts, kills and cuts off)
and ``disk-full`` (a gateway's ledger and a witness's store on a small tmpfs that fills up),
writes ``reliability/out/report.json`` and prints a summary. Exit 0 when every invariant held (or
every failure is a known defect, listed with its regression test), 1 on any new finding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from reliability.profiles import PROFILES, Profile
from reliability.report import Report

PHASES = (
    "bank",
    "crash",
    "clock",
    "facilitator",
    "attacks",
    "tlog",
    "fuzz",
    "tamper",
    "bank-pg",
    "providers",
    "rate-limits",
    "pg-faults",
    "disk-full",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="CI: a few minutes")
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="the published figures")
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases ({', '.join(PHASES)})")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for every random choice (default: 1 with --quick, time with --full)",
    )
    parser.add_argument("--out", type=Path, default=None, help="report path (default reliability/out/report.json)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (homes, logs)")
    parser.add_argument(
        "--database",
        metavar="URL",
        default=os.environ.get("INFERPAY_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server for bank-pg (a schema of its own is made and dropped; "
        "default $INFERPAY_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument("--gateways", type=int, default=2, help="gateway servers on the PostgreSQL ledger (bank-pg)")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    # CI's quick run always draws the same inputs, so a red CI is a change in the code, not luck;
    # full runs draw new ones each time.
    default_seed = 1 if args.mode == "quick" else int(time.time()) % 100_000
    seed = default_seed if args.seed is None else args.seed
    profile = PROFILES[args.mode]
    report = Report(args.mode, seed)
    root = Path(tempfile.mkdtemp(prefix="inferpay-reliability-"))
    print(f"reliability {args.mode}: phases {', '.join(phases)}; seed {seed}; run directory {root}", flush=True)
    try:
        run(profile, phases, seed, root, report, database=args.database, gateways=args.gateways)
    except Exception:
        traceback.print_exc()
        report.data["crashed"] = traceback.format_exc()
    finally:
        path = report.write(args.out)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = report.data["summary"]
    # CI shows only the end of the output: the new findings go last, one line each, before the path.
    print(json.dumps(summary, indent=2))
    for finding in report.data["findings"]:
        if finding["knownDefect"] is None:
            print(f"NEW FINDING [{finding['phase']}] {finding['check']}: {finding['message'][:300]}")
    print(f"report: {path}")
    return 0 if summary["ok"] and "crashed" not in report.data else 1


def run(
    profile: Profile, phases: list[str], seed: int, root: Path, report: Report, *, database: str, gateways: int
) -> None:
    from reliability.phases import Run

    with Run(profile, seed, root, report, database=database, gateways=gateways) as session:
        for phase in phases:
            started = time.monotonic()
            print(f"== {phase}", flush=True)
            getattr(session, phase.replace("-", "_"))()
            seconds = round(time.monotonic() - started, 1)
            report.data.setdefault("phaseSeconds", {})[phase] = seconds
            print(f"   {phase} done in {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Where the time goes: py-spy profiles of the paid gateway under load and of ledger ingest.

``python -m bench.profile gateway`` starts the P1 environment, drives the flat and metered
paid routes with 16 clients (payments signed beforehand) and samples both gunicorn workers
with py-spy four times: threads py-spy counts as active (``profile-gateway-<route>-cpu.txt``;
its idle test does not see a thread waiting in SQLite's busy handler as idle), every thread
including waits (``--idle``, ``-wall.txt``), only the thread holding the GIL (``--gil``,
``-gil.txt``: Python's own CPU), and a flame graph of the first kind (``profile.svg``).
``python -m bench.profile ingest`` does the same for ``Ledger.transfer`` in one thread with
the auto-sealer beside it, and ``python -m bench.profile audit`` for the auditor on a chain of
10k transactions. Summaries (``*.summary.txt`` and ``profile-summary.json``) rank
functions by inclusive and by self share of the samples taken inside the request path.
Everything goes to ``bench/out/``; py-spy comes with the ``bench`` extra. Not part of the
benchmark's figures: sampling costs CPU on a two-core machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import OUT, ROOT

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else "py-spy"


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 2)[-1] if "/lib/python" in path else path


def parse_raw(path: Path) -> list[tuple[list[tuple[str, str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames_text, _, count = line.rpartition(" ")
        frames = []
        for frame in frames_text.split(";"):
            match = FRAME.match(frame)
            if match:
                frames.append((match["func"], _short(match["file"]), match["line"] or "?"))
            else:
                frames.append((frame, "", "?"))
        stacks.append((frames, int(count)))
    return stacks


# Where a gateway worker's samples are, by thread and stage: first matching frame text wins.
GATEWAY_PARTS = [
    ("paid_call (the request path)", "paid_call"),
    ("group-commit writer thread", "GroupCommitter._run"),
    ("auto-sealer thread", "AutoSealer"),
    ("gunicorn access log", "glogging"),
    ("Flask/werkzeug around paid_call", "wsgi_app"),
    ("gunicorn gthread (parse, respond, poll)", "gthread"),
]


def parts(path: Path, rules: list[tuple[str, str]]) -> list[dict[str, Any]]:
    counter: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames:
            continue
        total += int(count)
        counter[next((label for label, text in rules if text in frames), "other")] += int(count)
    return [{"share": round(n / total, 4), "samples": n, "where": k} for k, n in counter.most_common()]


def summarize(path: Path, root_function: str, top: int = 25) -> dict[str, Any]:
    """Shares of samples: inclusive per function, self per source line, within stacks that
    pass through ``root_function`` (the request path), plus how much of all samples that is."""
    stacks = parse_raw(path)
    total = sum(n for _, n in stacks)
    inclusive: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    in_scope = 0
    for frames, count in stacks:
        names = [f"{func} ({file})" for func, file, _ in frames]
        hits = [i for i, (func, _, _) in enumerate(frames) if func in (root_function, f"Ledger.{root_function}")]
        if not hits:
            continue
        in_scope += count
        start = hits[0]
        for name in set(names[start:]):
            inclusive[name] += count
        func, file, line = frames[-1]
        self_lines[f"{func} ({file}:{line})"] += count

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"share": round(n / in_scope, 4), "samples": n, "where": k} for k, n in counter.most_common(top)]

    return {
        "file": str(path.resolve().relative_to(ROOT)),
        "samples": total,
        "in_scope": in_scope,
        "scope": root_function,
        "scope_share_of_all_samples": round(in_scope / total, 4) if total else 0.0,
        "inclusive": ranked(inclusive),
        "self": ranked(self_lines),
    }


def summary_text(summary: dict[str, Any], title: str) -> str:
    lines = [title]
    if summary.get("parts"):
        lines += ["", "all samples, by thread and stage:"]
        lines += [f"  {row['share']:6.1%}  {row['where']}" for row in summary["parts"]]
        lines.append("")
    lines += [
        f"{summary['in_scope']} of {summary['samples']} samples inside {summary['scope']}"
        f" ({summary['scope_share_of_all_samples']:.0%}); shares below are of those.",
        "",
        "inclusive:",
    ]
    lines += [f"  {row['share']:6.1%}  {row['where']}" for row in summary["inclusive"]]
    lines += ["", "self (leaf line):"]
    lines += [f"  {row['share']:6.1%}  {row['where']}" for row in summary["self"]]
    return "\n".join(lines) + "\n"


def record(
    pid: int,
    output: Path,
    seconds: float,
    *,
    fmt: str,
    idle: bool = False,
    gil: bool = False,
    subprocesses: bool = False,
    rate: int = 200,
) -> subprocess.Popen[bytes]:
    argv = [
        py_spy(),
        "record",
        "--format",
        fmt,
        "-o",
        str(output),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--nonblocking",
        "--pid",
        str(pid),
    ]
    if idle:
        argv.append("--idle")
    if gil:
        argv.append("--gil")
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_gateway(seconds: float) -> dict[str, Any]:
    from bench import loadgen, p1_gateway

    out = OUT / "profile-gateway"
    results: dict[str, Any] = {}
    with p1_gateway.environment(out, 16) as env:
        gateway = env.gateway
        for name, (path, _, body) in p1_gateway.ROUTES.items():
            terms = p1_gateway.offered_terms(gateway, path)
            probe = env.paid_requests(path, body, terms, 400)
            rate = loadgen.run_load(
                gateway.port, probe, connections=16, duration=1.5, warmup=0.3, cycle=False
            ).throughput
            for kind, fmt, suffix in (
                ("cpu", "raw", "txt"),
                ("wall", "raw", "txt"),
                ("gil", "raw", "txt"),
                ("flame", "flamegraph", "svg"),
            ):
                if kind == "flame" and name != "flat":
                    continue
                requests = env.paid_requests(path, body, terms, int(max(rate, 50) * (seconds + 3) * 1.5) + 200)
                target = OUT / (f"profile.{suffix}" if kind == "flame" else f"profile-gateway-{name}-{kind}.{suffix}")
                # The gunicorn master and, with --subprocesses, both workers.
                spy = record(
                    gateway.process.pid,
                    target,
                    seconds,
                    fmt=fmt,
                    idle=kind == "wall",
                    gil=kind == "gil",
                    subprocesses=True,
                )
                time.sleep(1.0)
                load = loadgen.run_load(
                    gateway.port, requests, connections=16, duration=seconds + 1, warmup=0.0, cycle=False
                )
                _, err = spy.communicate(timeout=120)
                if spy.returncode != 0 or not target.exists():
                    raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
                print(
                    f"{name} {kind}: {load.throughput:.0f} req/s while sampled, errors {load.errors}", file=sys.stderr
                )
                if fmt == "raw":
                    summary = summarize(target, "paid_call")
                    summary["parts"] = parts(target, GATEWAY_PARTS)
                    summary["throughput_while_sampled"] = round(load.throughput, 1)
                    results[f"gateway-{name}-{kind}"] = summary
                    target.with_suffix(".summary.txt").write_text(
                        summary_text(summary, f"gateway {name} route, {kind} samples, 16 clients")
                    )
    return results


def _ingest_child(seconds: float, ready: str) -> None:
    """Build a ledger, sign transfers, say READY on a file, then ingest for ``seconds``."""
    import shutil

    from bench.common import new_ledger, random_address, sign_all
    from ledger.sealer import AutoSealer

    out = OUT / "profile-ingest"
    shutil.rmtree(out, ignore_errors=True)
    fixture = new_ledger(out / "ledger.db", 64)
    transfers = sign_all(fixture.chain, fixture.payers, [random_address() for _ in range(1000)], 30_000)
    sealer = AutoSealer(fixture.ledger).start()
    Path(ready).write_text("ready")
    stop = time.perf_counter() + seconds
    done = 0
    for auth, signature in transfers:
        if time.perf_counter() > stop:
            break
        fixture.ledger.transfer(auth, signature)
        done += 1
    sealer.stop()
    print(json.dumps({"transfers": done, "per_s": round(done / seconds, 1)}))


def profile_ingest(seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in ("cpu", "wall", "gil"):
        ready = OUT / "profile-ingest.ready"
        ready.unlink(missing_ok=True)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.profile",
                "ingest-child",
                "--seconds",
                str(seconds + 3),
                "--ready",
                str(ready),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        while not ready.exists():
            if child.poll() is not None:
                raise RuntimeError("the ingest child died before it was ready")
            time.sleep(0.1)
        target = OUT / f"profile-ingest-{kind}.txt"
        spy = record(child.pid, target, seconds, fmt="raw", idle=kind == "wall", gil=kind == "gil")
        _, err = spy.communicate(timeout=120)
        out, _ = child.communicate(timeout=120)
        if spy.returncode != 0 or not target.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
        summary = summarize(target, "transfer")
        summary["ingest"] = json.loads(out.decode().strip().splitlines()[-1])
        results[f"ingest-{kind}"] = summary
        target.with_suffix(".summary.txt").write_text(summary_text(summary, f"ingest, {kind} samples, 1 thread"))
        print(f"ingest {kind}: {summary['ingest']['per_s']} transfers/s while sampled", file=sys.stderr)
    return results


def profile_audit(seconds: float) -> dict[str, Any]:
    """The auditor on the P3 chain of 10k transactions (built if missing), CPU samples."""
    from bench.chains import build_chain

    path, _ = build_chain("audit", 10_000, payers=100, recipients=1000)
    target = OUT / "profile-audit-cpu.txt"
    done = subprocess.run(
        [
            py_spy(),
            "record",
            "--format",
            "raw",
            "-o",
            str(target),
            "--rate",
            "200",
            "--",
            sys.executable,
            "-m",
            "bench.audit_child",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
    )
    if done.returncode != 0 or not target.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr.decode(errors='replace')[-2000:]}")
    summary = summarize(target, "audit")
    target.with_suffix(".summary.txt").write_text(summary_text(summary, "audit of 10k transactions, CPU samples"))
    return {"audit-cpu": summary}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("what", choices=("gateway", "ingest", "audit", "all", "ingest-child"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--ready", default="")
    ns = parser.parse_args()
    if ns.what == "ingest-child":
        _ingest_child(ns.seconds, ns.ready)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    summary_path = OUT / "profile-summary.json"
    results: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if ns.what in ("gateway", "all"):
        results.update(profile_gateway(ns.seconds))
    if ns.what in ("ingest", "all"):
        results.update(profile_ingest(ns.seconds))
    if ns.what in ("audit", "all"):
        results.update(profile_audit(ns.seconds))
    summary_path.write_text(json.dumps(results, indent=2) + "\n")
    for name in results:
        print(f"wrote {name}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Phase ``disk-full``: the gateway's SQLite ledger and the witness's store on a disk that fills up.

Each store lives on a small tmpfs of its own (``Tmpfs``: ``mount -t tmpfs -o size=...``; the
phase is skipped, saying why, where mounting is not allowed). "The disk fills" is a ballast file
written until the kernel answers ENOSPC; "space returns" is the ballast deleted.

- **gateway**: the bank workload (``reliability.bank``, every check of a load phase: nothing
  acknowledged lost, no charge without a call, supply conserved, ``verify`` passes) on a SQLite
  gateway whose home is on the tmpfs, while ``DiskNemesis`` fills the disk for up to 3 s at a
  time. Also checked: every 5xx the clients see while the disk is full is a JSON error with the
  stable code ``storage_unavailable`` (never a bare 500), the ledger file passes
  ``PRAGMA integrity_check`` afterwards, and calls are acknowledged again once space returns.
- **witness**: ``inferpay witness`` with its state on the tmpfs, fed one log's checkpoints in
  order; the disk fills, the next checkpoints are refused (503, ``storage_unavailable``), space
  returns, and the witness carries on from the last size it cosigned. Checked: no 500, the store
  passes ``integrity_check``, the size on disk is the largest it cosigned, every cosignature
  verifies and no two disagree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from ledger import merkle
from ledger.errors import InferpayError, WitnessUnavailable
from ledger.tlog.cosignature import CosignatureVerifier
from reliability.bank import LoadSettings, run_load_phase
from reliability.checks import Finding
from reliability.clock import ClockControl
from reliability.deploy import Deployment
from reliability.faults import Nemesis, Plan
from tests.ledger.tlog_support import MemoryLog
from tests.witness.support import start_witness, write_config
from witness.client import add_checkpoint
from witness.config import load_witness_config

# The quick run's; a full run's ledger outgrows it (at 48m the last fill of a full run needed no
# ballast, so "space returns" freed nothing and sealing stalled 15 s): its profile says 160m.
GATEWAY_DISK = "48m"
WITNESS_DISK = "4m"
_CHUNK = b"\0" * (1 << 16)
# Less free space than this once the ballast is gone: the ledger has outgrown its disk.
_OUTGROWN_BYTES = 4 << 20


class Tmpfs:
    """A tmpfs of ``size`` mounted on a new directory; unmounted (and the directory removed) on exit."""

    def __init__(self, size: str) -> None:
        self.size = size
        self.path = Path(tempfile.mkdtemp(prefix="inferpay-reliability-disk-"))
        self.ballast = self.path / ".ballast"

    def __enter__(self) -> Tmpfs:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            os.rmdir(self.path)
            raise OSError(f"cannot mount a tmpfs: {(done.stderr or done.stdout).strip() or done.returncode}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    def fill(self) -> int:
        """Write the ballast until the disk is full; the bytes it took."""
        written = 0
        # Unbuffered: a buffered file would flush its rest again on close, and fail there.
        with open(self.ballast, "ab", buffering=0) as out:
            try:
                while True:
                    written += out.write(_CHUNK) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        return written

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


def unavailable() -> str | None:
    """None if a tmpfs can be mounted here, else why not."""
    try:
        with Tmpfs("1m"):
            return None
    except OSError as exc:
        return str(exc)


# ---- the gateway ----


class DiskNemesis(Nemesis):
    """``disk_full`` faults: the gateway's disk filled for up to 3 s, then the ballast deleted."""

    def __init__(self, dep: Deployment, plan: Plan, duration: float, seed: int, disk: Tmpfs, fills: int) -> None:
        super().__init__(dep, Plan(), duration, seed)
        self.disk = disk
        self.faults = [("disk_full", None)] * fills

    def _inject(self, kind: str, arg: Any, at: float) -> None:
        free_before = self.disk.free_bytes()
        started = time.monotonic()
        ballast = self.disk.fill()
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.disk.release()
        ended = time.monotonic()
        free_after = self.disk.free_bytes()
        self.events.append(
            {
                "fault": kind,
                "atSeconds": round(at, 2),
                "fullSeconds": round(ended - started, 2),
                "ballastBytes": ballast,
                "freeBytesBefore": free_before,
                "freeBytesAfterRelease": free_after,
                "startedAt": started,
                "endedAt": ended,
            }
        )

    def figures(self) -> dict[str, Any]:
        events = [{k: v for k, v in e.items() if k not in ("startedAt", "endedAt")} for e in self.events]
        return {"injected": len(events), "byKind": {"disk_full": len(events)}, "errors": self.errors, "events": events}


def run_gateway_disk_full(
    root: Path, clock: ClockControl, settings: LoadSettings, fills: int, seed: int, size: str = GATEWAY_DISK
) -> tuple[dict[str, Any], list[Finding]]:
    with Tmpfs(size) as disk:
        dep = Deployment(root / "disk-full", clock)
        dep.home = dep.env.home = disk.path / "home"  # the ledger (and the home) on the small disk
        nemesis: list[DiskNemesis] = []

        def make_nemesis(d: Deployment, plan: Plan, duration: float, s: int) -> DiskNemesis:
            nemesis.append(DiskNemesis(d, plan, duration, s, disk, fills))
            return nemesis[0]

        try:
            dep.create({})
            figures, findings, workload = run_load_phase(
                dep,
                "disk",
                settings,
                Plan(),
                seed,
                nemesis_class=make_nemesis,  # type: ignore[arg-type]
            )
            integrity = _integrity(dep.home / "ledger.db")
        finally:
            dep.stop()
            disk.release()
        if integrity != "ok":
            findings.append(Finding("integrity_check", f"ledger.db after the disk filled: {integrity}"))
        # The suite's own sizing, not the gateway's: a fault whose release gave no space back
        # ("space returns" freed nothing: the ledger itself had outgrown the disk). A fill that
        # found the disk already full but whose release left room is still a disk-full fault;
        # it is listed apart (seen twice, cause not found: docs/reliability.md's notes).
        events = nemesis[0].events if nemesis else []
        outgrown = [e["atSeconds"] for e in events if e["freeBytesAfterRelease"] < _OUTGROWN_BYTES]
        if outgrown:
            findings.append(Finding("disk_sized_for_the_run", f"the ledger filled {size} itself at {outgrown} s"))
        figures["faults"]["foundAlreadyFull"] = [e["atSeconds"] for e in events if e["ballastBytes"] == 0]
        windows = [(e["startedAt"], e["endedAt"]) for e in nemesis[0].events] if nemesis else []
        answers, answer_findings = _answers_while_full(workload.ops, windows)
        findings += answer_findings
    figures["disk"] = {"size": size, "integrityCheck": integrity, **answers}
    figures["findings"] = len(findings)
    return figures, findings


def _answers_while_full(ops: list[Any], windows: list[tuple[float, float]]) -> tuple[dict[str, Any], list[Finding]]:
    def during(op: Any) -> bool:
        return any(op.started <= end + 0.5 and op.ended >= start for start, end in windows)

    findings = []
    for op in ops:
        if op.outcome == "refused" and (op.status or 0) >= 500 and op.code != "storage_unavailable":
            findings.append(Finding("clear_error_when_disk_full", f"{op.status} {op.code}", {"op": op.to_dict()}))
        # Nothing is killed in this phase: a broken connection is a process that died on the
        # full disk (defect 14: a gateway worker's SIGBUS on its metrics files).
        if op.outcome in ("ambiguous", "unsent"):
            findings.append(Finding("every_call_answered_when_disk_full", op.outcome, {"op": op.to_dict()}))
    full = [op for op in ops if during(op)]
    last_end = max((end for _, end in windows), default=0.0)
    after = [op for op in ops if op.started > last_end + 1.0 and op.outcome == "ok"]
    if windows and not after:
        findings.append(Finding("recovers_when_space_returns", "no call acknowledged after the disk had room again"))
    return {
        "callsWhileFull": len(full),
        "outcomesWhileFull": dict(Counter(op.outcome for op in full)),
        "refusalCodesWhileFull": dict(Counter(f"{op.status} {op.code}" for op in full if op.outcome == "refused")),
        "acknowledgedAfterSpaceReturned": len(after),
    }, findings


def _integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))


# ---- the witness ----


def run_witness_disk_full(root: Path, checkpoints: int) -> tuple[dict[str, Any], list[Finding]]:
    """One log's checkpoints pushed in order; the disk filled after a third of them, emptied
    after two thirds."""
    log = MemoryLog()
    log.append(*(b"entry %d" % i for i in range(checkpoints + 1)))
    findings: list[Finding] = []
    outcomes: Counter[str] = Counter()
    cosigned: list[tuple[int, Any]] = []
    with Tmpfs(WITNESS_DISK) as disk:
        config_path = write_config(disk.path / "witness", [log.signer])
        config = load_witness_config(config_path)
        server = start_witness(config_path)
        verifier = CosignatureVerifier.from_vkey(requests.get(server.url + "/health", timeout=10).json()["vkey"])
        known, full_from, full_to = 0, checkpoints // 3, 2 * checkpoints // 3
        ballast, sample = 0, ""
        try:
            for size in range(1, checkpoints + 1):
                if size == full_from:
                    ballast = disk.fill()
                if size == full_to:
                    disk.release()
                proof = merkle.consistency_proof(log.leaves[:size], known) if 0 < known < size else []
                try:
                    sigs = add_checkpoint(server.url, known, proof, log.signed(size), 5, verifier=verifier)
                except WitnessUnavailable as exc:
                    outcomes[f"{exc.details.get('status')} {exc.code}"] += 1
                    sample = sample or exc.message
                    if exc.details.get("status") == 500:
                        findings.append(Finding("witness_clear_error", f"size {size}: {exc.message}"))
                    continue
                except InferpayError as exc:
                    outcomes[exc.code] += 1
                    findings.append(Finding("witness_clear_error", f"size {size}: {exc.code}: {exc.message}"))
                    continue
                outcomes["200"] += 1
                cosigned += [(size, sig) for sig in sigs]
                known = size
        finally:
            server.stop()
            disk.release()
        db_path = config.db_path
        integrity = _integrity(db_path)
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            row = conn.execute("SELECT size, root FROM logs WHERE origin = ?", [log.signer.name]).fetchone()
        held, held_root = int(row[0]), bytes(row[1])
    if integrity != "ok":
        findings.append(Finding("integrity_check", f"witness.db after the disk filled: {integrity}"))
    largest = max((size for size, _ in cosigned), default=0)
    if held != largest or held_root != merkle.merkle_root(log.leaves[:held]):
        findings.append(
            Finding("witness_state_kept", f"the store holds size {held}, the largest cosigned is {largest}")
        )
    refused_while_full = sum(n for outcome, n in outcomes.items() if outcome != "200")
    if refused_while_full == 0:
        findings.append(Finding("witness_clear_error", "no checkpoint was refused while the disk was full"))
    if largest != checkpoints:
        findings.append(Finding("recovers_when_space_returns", f"the witness stopped at size {largest}"))
    return {
        "disk": WITNESS_DISK,
        "checkpointsPushed": checkpoints,
        "ballastBytes": ballast,
        "outcomes": dict(outcomes),
        "refusalSample": sample[:300],
        "cosignatures": len(cosigned),
        "largestCosigned": largest,
        "heldOnDisk": held,
        "integrityCheck": integrity,
    }, findings

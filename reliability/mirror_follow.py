"""A mirror following the gateway through the bank phase (issue #12: "a mirror follows a gateway
under the bank workload, ends with the same checkpoint, and its audit agrees").

``inferpay mirror URL --home DIR --interval 0.5`` (the real command, a process) starts before the
load and runs through it. Once the load has ended and the gateway's ledger is quiet (every hold
resolved, everything sealed, the checkpoint at the head), the mirror must reach the gateway's
checkpoint within ``CATCH_UP_SECONDS`` and then hold the same ledger: the same head, the same
latest checkpoint note, an audit of its own copy that passes over every entry, the same supply
and balances, no open hold. Each difference is a finding.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import requests

from ledger.audit import audit
from ledger.storage.sqlite import SQLiteStore
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import parse_note
from reliability.checks import Finding
from reliability.deploy import Deployment
from tests.support.mirror import child_env, mirror_argv, mirror_checkpoint_size
from tests.support.servers import ROOT

CATCH_UP_SECONDS = 120.0


class MirrorFollower:
    def __init__(self, dep: Deployment, directory: Path) -> None:
        self.dep = dep
        self.home = directory / "mirror"
        self.log_path = directory / "mirror.log"
        self._log: IO[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._started = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in finish()
        self._process = subprocess.Popen(
            mirror_argv(self.dep.env.url, self.home, "--interval", "0.5"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
            cwd=ROOT,
        )
        self._started = time.monotonic()

    def finish(self) -> tuple[dict[str, Any], list[Finding]]:
        """After the load: wait for the gateway to be quiet and the mirror to catch up, stop it,
        compare the two ledgers."""
        assert self._process is not None and self._log is not None
        findings: list[Finding] = []
        env = self.dep.env
        ended = time.monotonic()
        try:
            try:
                env.wait_quiet(timeout=60)
            except AssertionError as exc:  # the phase's own checks say why; the mirror is compared anyway
                findings.append(Finding("mirror_follows_the_bank_phase", f"the gateway never went quiet: {exc}"))
            note = requests.get(env.ledger_url + "/checkpoint", timeout=10).content
            size = parse_checkpoint(parse_note(note).text).size
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while mirror_checkpoint_size(self.home) < size and time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                time.sleep(0.2)
            caught_up = mirror_checkpoint_size(self.home) >= size
            caught_up_seconds = round(time.monotonic() - ended, 1)
            stopped_early = self._process.poll() is not None
        finally:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._log.close()
        output = self.log_path.read_text(errors="replace")
        if stopped_early:
            findings.append(Finding("mirror_follows_the_bank_phase", f"the mirror stopped: {output[-300:]}"))
        if not caught_up:
            held = mirror_checkpoint_size(self.home)
            message = f"the mirror held size {held} of {size} after {CATCH_UP_SECONDS:.0f} s"
            findings.append(Finding("mirror_follows_the_bank_phase", message))
        figures: dict[str, Any] = {
            "entries": size,
            "followedSeconds": round(ended - self._started, 1),
            "caughtUpSecondsAfterLoad": caught_up_seconds,
            "caughtUp": caught_up,
            "stoppedEarly": stopped_early,
            "errorLines": sum(1 for line in output.splitlines() if "error" in line.lower()),
            "units": {"entries": "log entries", "followedSeconds": "s", "caughtUpSecondsAfterLoad": "s"},
        }
        if caught_up:
            same, problems = self._compare(note, size)
            figures.update(same)
            findings += [Finding("mirror_matches_the_gateway", p) for p in problems]
        return figures, findings

    def _compare(self, note: bytes, size: int) -> tuple[dict[str, Any], list[str]]:
        env = self.dep.env
        store = SQLiteStore(self.home / "ledger.db")
        try:
            report = audit(store, workers=1)
            same = {
                "sameHead": store.head().to_dict() == env.ledger.head().to_dict(),
                "sameCheckpoint": store.checkpoints.latest() == (size, note),
                "auditOk": report.ok and report.transactions == size,
                "auditTransactions": report.transactions,
                "sameSupply": store.supply() == env.store.supply(),
                "sameBalances": sorted(store.accounts(), key=str) == sorted(env.store.accounts(), key=str),
                "noOpenHold": store.open_holds() == env.store.open_holds() == [],
            }
        finally:
            store.close()
        problems = [f"{check} is false" for check, value in same.items() if value is False]
        if not report.ok:
            problems.append(f"the mirror's audit: {[str(p) for p in report.problems][:3]}")
        return same, problems

"""The run: one deployment, the phases in order, each adding its figures and findings to the report."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from reliability.bank import run_load_phase, seal_after_clock_correction
from reliability.clock import ClockControl
from reliability.deploy import Deployment, backup_database, env_summary
from reliability.faults import Plan
from reliability.profiles import Profile
from reliability.report import Report


class Run:
    def __init__(
        self, profile: Profile, seed: int, root: Path, report: Report, *, database: str = "", gateways: int = 2
    ) -> None:
        self.profile = profile
        self.database = database  # the PostgreSQL server for bank-pg
        self.gateways = gateways
        self.seed = seed
        self.root = root
        self.report = report
        self.clock_control = ClockControl(root)
        self.dep = Deployment(root, self.clock_control)
        self.acknowledged: list[Any] = []  # ok ops of every load phase, for the tamper phase
        self.rollback_copy: Path | None = None
        self.rollback_head: dict[str, Any] | None = None

    def __enter__(self) -> Run:
        started = time.monotonic()
        self.dep.create({})
        self.report.data["deployment"] = {**env_summary(self.dep), "startSeconds": round(time.monotonic() - started, 1)}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.clock_control.reset()
        self.report.data["gatewayLogTracebacks"] = self.dep.gateway_log().count("Traceback")
        self.dep.stop()

    # ---- load phases ----

    def bank(self) -> None:
        def copy_for_rollback() -> None:
            # An old copy of the database, for the tamper phase's "restore an old copy".
            self.rollback_copy = self.root / "rollback-copy.db"
            backup_database(self.dep.home / "ledger.db", self.rollback_copy)

        from reliability.mirror_follow import MirrorFollower

        follower = MirrorFollower(self.dep, self.root / "bank-mirror")
        follower.start()
        self._load("bank", self.profile.bank, Plan(), at_half_time=copy_for_rollback)
        figures, findings = follower.finish()
        self.report.data["phases"]["bank"]["mirror"] = figures
        self.report.findings += [("bank", f) for f in findings]
        print(
            f"   mirror: followed {figures['entries']} entries, caught up {figures['caughtUpSecondsAfterLoad']} s"
            f" after the load, same head {figures.get('sameHead')}, same checkpoint {figures.get('sameCheckpoint')},"
            f" its audit ok {figures.get('auditOk')}",
            flush=True,
        )
        _print_findings(findings)

    def crash(self) -> None:
        plan = Plan(gateway_kills=self.profile.crash_gateway_kills, upstream_kills=self.profile.crash_upstream_kills)
        self._load("crash", self.profile.crash, plan)

    def clock(self) -> None:
        plan = Plan(gateway_kills=self.profile.clock_gateway_kills, clock_offsets=list(self.profile.clock_offsets))
        self._load("clock", self.profile.clock, plan)
        probe, findings = seal_after_clock_correction(self.dep, ahead=max(self.profile.clock_offsets), wait=8.0)
        self.report.data["phases"]["clock"]["sealAfterClockCorrection"] = probe
        self.report.findings += [("clock", f) for f in findings]

    def _load(self, name: str, settings: Any, plan: Plan, **kw: Any) -> None:
        figures, findings, workload = run_load_phase(self.dep, name, settings, plan, self.seed, **kw)
        self.acknowledged += [op for op in workload.ops if op.outcome == "ok"]
        self.report.phase(name, figures, findings)
        ops = figures["operations"]
        print(
            f"   {ops['total']} operations ({ops['perSecond']}/s), {ops['acknowledged']} acknowledged, "
            f"{figures['faults']['injected']} faults, {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def bank_pg(self) -> None:
        """The bank workload through two gateways sharing one PostgreSQL ledger (``reliability.pg``)."""
        from reliability.pg import run_bank_pg, unavailable

        if reason := unavailable(self.database):
            print(f"   skipped: {reason}", flush=True)
            self.report.data.setdefault("skipped", {})["bank-pg"] = reason
            return
        figures, findings = run_bank_pg(
            self.root, self.clock_control, self.profile.bank_pg, self.seed, self.database, self.gateways
        )
        self.report.phase("bank-pg", figures, findings)
        ops, pg = figures["operations"], figures["postgresql"]
        print(
            f"   {ops['total']} operations ({ops['perSecond']}/s) through {pg['gateways']} gateways, "
            f"{ops['acknowledged']} acknowledged, heads equal: {pg['heads']['equal']}, "
            f"verify ok: {figures['audit']['ok']}, {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def pg_faults(self) -> None:
        """Two gateways on a PostgreSQL cluster of the suite's own, killed and cut off (``reliability.pgfaults``)."""
        from reliability.pgcluster import unavailable
        from reliability.pgfaults import run_pg_faults

        if reason := unavailable():
            print(f"   skipped: {reason}", flush=True)
            self.report.data.setdefault("skipped", {})["pg-faults"] = reason
            return
        figures, findings = run_pg_faults(
            self.root, self.clock_control, self.profile.pg_faults, self.profile.pg_faults_plan, self.seed
        )
        self.report.phase("pg-faults", figures, findings)
        ops, pg = figures["operations"], figures["postgresql"]
        print(
            f"   {ops['total']} operations ({ops['perSecond']}/s), {ops['acknowledged']} acknowledged, "
            f"{figures['reconcile']['lostAcknowledged']} lost, {figures['faults']['injected']} faults "
            f"{figures['faults']['byKind']}, slowest call {pg['answers']['slowestCallSeconds']} s, "
            f"heads equal: {pg['heads']['equal']}, verify ok: {figures['audit']['ok']}, {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def disk_full(self) -> None:
        """The gateway's ledger and the witness's store on a disk that fills up (``reliability.diskfull``)."""
        from reliability.diskfull import run_gateway_disk_full, run_witness_disk_full, unavailable

        if reason := unavailable():
            print(f"   skipped: {reason}", flush=True)
            self.report.data.setdefault("skipped", {})["disk-full"] = reason
            return
        p = self.profile
        figures, findings = run_gateway_disk_full(
            self.root, self.clock_control, p.disk_full, p.disk_fills, self.seed, p.disk_size
        )
        witness, witness_findings = run_witness_disk_full(self.root, p.disk_witness_checkpoints)
        figures["witness"] = witness
        figures["findings"] += len(witness_findings)
        self.report.phase("disk-full", figures, findings + witness_findings)
        ops, disk = figures["operations"], figures["disk"]
        print(
            f"   gateway: {ops['total']} operations, {ops['acknowledged']} acknowledged, "
            f"{figures['reconcile']['lostAcknowledged']} lost, {figures['faults']['injected']} disk-full faults, "
            f"while full {disk['refusalCodesWhileFull']}, integrity {disk['integrityCheck']}, "
            f"verify ok: {figures['audit']['ok']}; witness: {witness['outcomes']}, integrity "
            f"{witness['integrityCheck']}; {len(findings) + len(witness_findings)} findings",
            flush=True,
        )
        for finding in (findings + witness_findings)[:10]:
            print(f"   ! {finding.check}: {finding.message}", flush=True)

    def tlog(self) -> None:
        """A mirror shown a lying source, a witness killed mid-update (``reliability.tlog_attacks``)."""
        from reliability.tlog_attacks import run_tlog

        p = self.profile
        figures, findings = run_tlog(self.dep, p.tlog_rounds, p.tlog_witness_kills, p.tlog_split_views)
        self.report.phase("tlog", figures, findings)
        mirror, witness, split = figures["mirror"], figures["witness"], figures["splitView"]
        print(
            f"   mirror: {mirror.get('liesTold')} lies told, {mirror.get('detected')} detected, "
            f"{mirror.get('accepted')} accepted, {mirror.get('notExercised')} not exercised; witness: "
            f"{witness.get('kills')} SIGKILLs, {witness.get('cosignatures')} cosignatures, "
            f"{witness.get('sizesWithTwoRoots')} split; split views: {split['attempted']} attempted, "
            f"{split['refusedByWitnesses']} refused by witnesses {split['directPushes']}, "
            f"{split['refusedByClients']} by clients; {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    # ---- the others ----

    def facilitator(self) -> None:
        """x402 payments settled by /facilitator (``reliability.facilitator``)."""
        from reliability.facilitator import run_facilitator

        figures, findings = run_facilitator(self.dep, self.profile.facilitator, self.seed)
        self.report.phase("facilitator", figures, findings)
        ops, money = figures["operations"], figures["money"]
        print(
            f"   {ops['total']} operations ({ops['perSecond']}/s), {ops['acknowledged']} acknowledged, "
            f"{money['lostAcknowledged']} lost, {figures['replays']['sent']} replays "
            f"({figures['replays']['accepted']} accepted), {figures['serverErrors']} server errors, "
            f"{len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def providers(self) -> None:
        """Pool calls while providers fail: one SIGKILLed mid-load, one inflating then garbling
        its usage (``reliability.providers``); sized like the facilitator phase."""
        from reliability.providers import ProviderSettings, run_providers

        settings = ProviderSettings(self.profile.facilitator.duration, self.profile.facilitator.clients)
        figures, findings = run_providers(self.root, settings, self.seed)
        self.report.phase("providers", figures, findings)
        print(
            f"   {figures['calls']} calls, {figures['served']} served, {figures['failedOver']} failed over, "
            f"{figures['charged']} charged, {figures['lost']} lost, {figures['doubleCharged']} double-charged, "
            f"{figures['usageCapped']} capped, verify ok: {figures['verifyOk']}, {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def rate_limits(self) -> None:
        """``[[rate_limits]]`` on a 2-worker gateway under a bank workload (``reliability.rate_limits``)."""
        from reliability.rate_limits import run_rate_limits

        figures, findings = run_rate_limits(self.root, self.profile.rate_limits, self.seed)
        self.report.phase("rate-limits", figures, findings)
        ops, limits = figures["operations"], figures["limits"]
        most = ", ".join(f"{k} {v['mostAdmittedInAWindow']}/{v['limit']}" for k, v in limits.items())
        print(
            f"   {ops['total']} calls ({ops['perSecond']}/s), {ops['admitted']} admitted, {ops['refused']} refused "
            f"(429); most admitted in a {figures['windowSeconds']} s window: {most}; payers charged for "
            f"refused calls: {figures['payersChargedForRefusedCalls']}; {len(findings)} findings",
            flush=True,
        )
        _print_findings(findings)

    def attacks(self) -> None:
        from reliability.attacks import run_attacks

        figures, findings = run_attacks(self.dep, self.profile, self.seed)
        self.report.phase("attacks", figures, findings)

    def fuzz(self) -> None:
        from reliability.fuzz import run_fuzz

        figures, findings = run_fuzz(self.dep, self.profile, self.seed)
        self.report.phase("fuzz", figures, findings)

    def tamper(self) -> None:
        from reliability.tamper import run_tamper

        figures, findings = run_tamper(
            self.dep, self, self.profile.tamper_base_txs, self.profile.tamper_audit_clean_cases
        )
        self.report.phase("tamper", figures, findings)


def _print_findings(findings: list[Any], most: int = 10) -> None:
    """A phase's first findings, one line each, under its summary line."""
    for finding in findings[:most]:
        print(f"   ! {finding.check}: {finding.message}", flush=True)

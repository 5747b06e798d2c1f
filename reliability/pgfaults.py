"""Phase ``pg-faults``: the bank workload on PostgreSQL while the database is killed and cut off.

The deployment of ``bank-pg`` (two gateway servers, one home, one PostgreSQL ledger), on a
cluster of the suite's own (``reliability.pgcluster``) so it may be killed, with every gateway
reaching it through a proxy the suite breaks (``reliability.tcpproxy``). The CLI (``init``,
``verify``), the monitor and the reconciliation read the database directly. The nemesis
(``PgNemesis``), spread over the run:

- ``kill_postgres``: SIGKILL to the postmaster and every backend, down for up to 2 s, restarted
  (crash recovery from the WAL);
- ``proxy_drop``: every gateway connection closed, new ones refused, for up to 2 s;
- ``proxy_reset``: every gateway connection aborted with a RST;
- ``proxy_stall``: nothing forwarded for up to 2 s, then everything flows again;
- ``kill_gateway``: SIGKILL to one of the two gateways, restarted.

Checked, beyond what ``bank`` and ``bank-pg`` check (no acknowledged payment lost, no charge
without a call, supply conserved, no balance negative, acknowledged charges within funds,
``verify`` passes, both gateways serve verify's head):

- **storage_unavailable while the database is gone**: no 500; every 5xx the clients see has a
  stable code, ``storage_unavailable`` (the upstreams never fail in this phase);
- **no hang**: every call is answered within ``HANG_SECONDS`` (the gateways' ``pool_timeout``
  plus ``connect_timeout``, the longest stall and the upstream timeout, with a margin);
- **each hold resolved exactly once**: no hold has two resolutions in the ledger, none is left
  open once the holds' expiry has passed (``settle_down``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ledger.types import HoldResolution, Transaction
from reliability.bank import LoadSettings, run_load_phase
from reliability.checks import Finding
from reliability.clock import ClockControl
from reliability.faults import Nemesis, Plan
from reliability.pg import PgDeployment, PgMonitor, _charges_within_funds, _heads
from reliability.pgcluster import PgCluster
from reliability.tcpproxy import FaultyProxy

POOL_TIMEOUT = 3  # seconds a gateway waits for a pooled connection (the URL's pool_timeout)
CONNECT_TIMEOUT = 3  # seconds libpq waits to connect (the URL's connect_timeout)
MAX_OUTAGE = 2.0  # the longest a fault keeps the database away, seconds
PROBE_SECONDS = POOL_TIMEOUT  # a probe's answer while the server is dead comes after the pool's wait
HANG_SECONDS = POOL_TIMEOUT + CONNECT_TIMEOUT + MAX_OUTAGE + 2 + 5  # + the upstream timeout + margin


@dataclass
class PgPlan(Plan):
    postgres_kills: int = 0
    drops: int = 0
    resets: int = 0
    stalls: int = 0


class FaultyPgDeployment(PgDeployment):
    """``PgDeployment`` whose gateways reach the database through ``proxy``; everything else
    (the CLI, the monitor, the checks) reaches it directly."""

    def __init__(self, root: Path, clock: ClockControl, cluster: PgCluster, proxy: FaultyProxy) -> None:
        super().__init__(root, clock, f"{cluster.url}?schema=ledger", gateways=2)
        self.cluster = cluster
        self.proxy = proxy
        self.gateway_database = (
            f"postgresql://postgres@127.0.0.1:{proxy.port}/{cluster.database}?schema=ledger"
            f"&pool_timeout={POOL_TIMEOUT}&connect_timeout={CONNECT_TIMEOUT}"
        )
        self.database_back_at = 0.0  # monotonic time the last database fault ended
        self.database_away = False

    def config_text(self, port: int | None = None) -> str:
        direct, self.database = self.database, self.gateway_database
        try:
            return super().config_text(port)
        finally:
            self.database = direct

    # The monitor's "sealed promptly" clock only runs while the gateway *and* its database are up.
    def up(self, name: str = "gateway") -> bool:
        return not self.database_away and super().up(name)

    def up_for(self, name: str = "gateway") -> float:
        return min(super().up_for(name), time.monotonic() - self.database_back_at) if self.up(name) else 0.0


class PgFaultMonitor(PgMonitor):
    def _snapshot(self) -> list[list[tuple[Any, ...]]] | None:
        found = super()._snapshot()
        if found is None and self._pg is not None:  # the server was killed: reconnect next poll
            self._pg.close()
            self._pg = None
        return found


class PgNemesis(Nemesis):
    def __init__(self, dep: FaultyPgDeployment, plan: PgPlan, duration: float, seed: int) -> None:
        super().__init__(dep, Plan(), duration, seed)
        self.pg_dep = dep
        faults: list[tuple[str, Any]] = [("kill_postgres", None)] * plan.postgres_kills
        faults += [("proxy_drop", None)] * plan.drops + [("proxy_reset", None)] * plan.resets
        faults += [("proxy_stall", None)] * plan.stalls + [("kill_gateway", None)] * plan.gateway_kills
        self.rng.shuffle(faults)
        self.faults = faults
        self.probes: Counter[str] = Counter()  # answers to requests made while the server was dead

    def _inject(self, kind: str, arg: Any, at: float) -> None:
        dep = self.pg_dep
        event: dict[str, Any] = {"fault": kind, "atSeconds": round(at, 2)}
        away = round(self.rng.uniform(0.3, MAX_OUTAGE), 2)
        started = time.monotonic()
        if kind == "kill_gateway":
            name = self.rng.choice(dep.gateway_names)
            event["server"] = name
            dep.restart(name, self.rng.uniform(0.0, 1.0))
        else:
            dep.database_away = True
            try:
                if kind == "kill_postgres":
                    dep.cluster.kill()
                    probe_started = time.monotonic()
                    self._probe(dep)
                    time.sleep(max(0.0, away - (time.monotonic() - probe_started)))
                    dep.cluster.start()
                elif kind == "proxy_drop":
                    dep.proxy.drop(away)
                    time.sleep(away)
                elif kind == "proxy_reset":
                    dep.proxy.reset()
                elif kind == "proxy_stall":
                    dep.proxy.stall(away)
            finally:
                dep.database_away = False
                dep.database_back_at = time.monotonic()
        event["downSeconds"] = round(time.monotonic() - started, 2)
        event["startedAt"], event["endedAt"] = started, time.monotonic()  # monotonic, for the windows
        self.events.append(event)

    def _probe(self, dep: FaultyPgDeployment) -> None:
        """Each gateway asked for an account while the server is dead: 503 storage_unavailable,
        and the answer names no database (host, port, user, schema: the operator's to know)."""
        address = dep.env.wallets["operator"].address
        answers: dict[str, Any] = {}

        def ask(url: str) -> None:
            try:
                answers[url] = requests.get(f"{url}/ledger/accounts/{address}", timeout=PROBE_SECONDS + 2)
            except requests.RequestException as exc:
                answers[url] = exc

        askers = [threading.Thread(target=ask, args=(url,)) for url in dep.gateway_urls()]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        for answer in answers.values():
            if isinstance(answer, Exception):
                self.probes[f"no answer: {type(answer).__name__}"] += 1
                continue
            code = (
                answer.json().get("error", {}).get("code")
                if answer.headers.get("Content-Type", "").startswith("application/json")
                else None
            )
            self.probes[f"{answer.status_code} {code}"] += 1
            if "postgresql://" in answer.text or str(dep.proxy.port) in answer.text:
                self.probes["namedTheDatabase"] += 1

    def figures(self) -> dict[str, Any]:
        by_kind = Counter(e["fault"] for e in self.events)
        events = [{k: v for k, v in e.items() if k not in ("startedAt", "endedAt")} for e in self.events]
        probes = dict(self.probes)
        return {
            "injected": len(self.events),
            "byKind": dict(by_kind),
            "errors": self.errors,
            "events": events,
            "probesWhileDatabaseDead": probes,
        }


PG_RESTART_GRACE_SECONDS = 20.0


def run_pg_faults(
    root: Path, clock: ClockControl, settings: LoadSettings, plan: PgPlan, seed: int
) -> tuple[dict[str, Any], list[Finding]]:
    """Make the cluster and the proxy, deploy, load under faults, check; all stopped on the way out."""
    started = time.monotonic()
    # The suite's own store reconnecting while the server is down: expected, and not worth a line each.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    cluster = PgCluster()
    cluster.create()
    proxy = FaultyProxy(cluster.port)
    dep = FaultyPgDeployment(root / "pg-faults", clock, cluster, proxy)
    nemesis: list[PgNemesis] = []

    def make_nemesis(d: Any, _: Plan, duration: float, s: int) -> PgNemesis:
        nemesis.append(PgNemesis(d, plan, duration, s))
        return nemesis[0]

    try:
        dep.create({})
        deployed = time.monotonic() - started
        figures, findings, workload = run_load_phase(
            dep,
            "pgfault",
            settings,
            plan,
            seed,
            monitor_class=PgFaultMonitor,
            nemesis_class=make_nemesis,  # type: ignore[arg-type]
            # After PostgreSQL restarts (crash recovery, then the pool's reconnection every 0.5 s),
            # the sealer may expire a hold seconds after its expiry; a known limit
            # (docs/reliability.md), bounded here, not a hold that stays open.
            settle_grace=PG_RESTART_GRACE_SECONDS,
        )
        cluster.start()  # whatever the nemesis left, the checks read a running database
        funds, fund_findings = _charges_within_funds(dep.env.store, workload.ops, workload.wallets.names, dep)
        findings += fund_findings
        heads, head_findings = _heads(dep, figures["audit"])
        findings += head_findings
        resolutions, resolution_findings = _resolved_once(dep)
        findings += resolution_findings
        during, answer_findings = _answers(workload.ops, nemesis[0].events if nemesis else [])
        findings += answer_findings
        probes = figures["faults"]["probesWhileDatabaseDead"]
        if probes.get("namedTheDatabase"):
            findings.append(Finding("storage_errors_name_no_database", f"503 answers named the database: {probes}"))
        # A probe may wait behind the load for a free thread (every one waiting for the pool):
        # a read timeout is reported, and bounded by the calls' own hang check, not a wrong answer.
        wrong = [k for k in probes if not k.startswith(("503 storage_unavailable", "no answer: ReadTimeout"))]
        if any(key != "namedTheDatabase" for key in wrong):
            findings.append(Finding("storage_unavailable_when_database_gone", f"answers while it was dead: {probes}"))
        tracebacks = dep.gateway_logs().count("Traceback")
    finally:
        dep.stop()
        proxy.close()
        cluster.stop()
    figures["postgresql"] = {
        "cluster": f"own, PostgreSQL on 127.0.0.1:{cluster.port} (killed {cluster.kills} times)",
        "gateways": len(dep.gateway_names),
        "gatewayDatabase": "through the suite's TCP proxy",
        "proxy": {"connections": proxy.connections, "cutByFaults": proxy.cut},
        "deploySeconds": round(deployed, 1),
        "heads": heads,
        "acknowledgedChargesVsReceived": funds,
        "holds": resolutions,
        "answers": during,
        "hangBoundSeconds": HANG_SECONDS,
        "gatewayLogTracebacks": tracebacks,  # reported: a gateway logs a storage error it answered with 503
    }
    figures["findings"] = len(findings)
    return figures, findings


def _resolved_once(dep: FaultyPgDeployment) -> tuple[dict[str, int], list[Finding]]:
    """Every hold in the ledger has at most one resolution (settle, void or expiry)."""
    count: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for raw in dep.env.store.iter_raw_transactions():
        tx = Transaction.from_dict(json.loads(raw.record))
        by_kind[tx.kind] += 1
        if isinstance(tx.message, HoldResolution):
            count[tx.message.hold_id] += 1
    twice = {hold: n for hold, n in count.items() if n > 1}
    findings = [Finding("hold_resolved_once", f"hold {h} resolved {n} times") for h, n in list(twice.items())[:10]]
    # A hold may still be open here, committed after the settle-down looked: an append whose
    # acknowledgement was lost is retried (and lands) once the database is back, and its caller
    # was answered 503. It must then end by its expiry, like any hold whose call never finished.
    deadline = time.monotonic() + 60  # holds last 10 s here (reliability.deploy)
    while (holds := dep.env.store.open_holds()) and time.monotonic() < deadline:
        if all(dep.clock.now() > h.expires_at_s + PG_RESTART_GRACE_SECONDS for h in holds):
            break
        time.sleep(0.2)
    grace = PG_RESTART_GRACE_SECONDS
    overdue = [h for h in dep.env.store.open_holds() if dep.clock.now() > h.expires_at_s + grace]
    if overdue:
        findings.append(Finding("hold_resolved_once", f"{len(overdue)} hold(s) still open {grace:.0f} s past expiry"))
    return {
        "holds": by_kind["hold"] + by_kind["charge"],  # a payment's hold, an API key's charge
        "resolved": len(count),
        "resolvedTwice": len(twice),
        "openAtEnd": len(dep.env.store.open_holds()),
        "expired": by_kind.get("expire", 0),
        "voided": by_kind.get("void", 0),
        "settled": by_kind.get("settle", 0),
    }, findings


def _answers(ops: list[Any], events: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Finding]]:
    """What the clients were answered while the database was away, and how long calls took."""
    windows = [(e["startedAt"], e["endedAt"] + 1.0) for e in events if e["fault"] != "kill_gateway"]

    def during(op: Any) -> bool:
        return any(op.started <= end and op.ended >= start for start, end in windows)

    findings: list[Finding] = []
    in_window = [op for op in ops if during(op)]
    codes = Counter(f"{op.status} {op.code}" for op in in_window if op.outcome == "refused")
    for op in ops:
        if op.outcome == "refused" and (op.status or 0) >= 500 and op.code != "storage_unavailable":
            findings.append(
                Finding("storage_unavailable_when_database_gone", f"{op.status} {op.code}", {"op": op.to_dict()})
            )
    latencies = sorted(op.ended - op.started for op in ops if op.ended)
    slow = [op for op in ops if op.ended and op.ended - op.started > HANG_SECONDS]
    for op in slow[:10]:
        findings.append(
            Finding(
                "no_hang_past_timeouts",
                f"{op.kind} took {op.ended - op.started:.1f} s (bound {HANG_SECONDS} s), ended {op.outcome}",
                {"op": op.to_dict()},
            )
        )
    return {
        "callsDuringFaults": len(in_window),
        "outcomesDuringFaults": dict(Counter(op.outcome for op in in_window)),
        "refusalCodesDuringFaults": dict(codes.most_common()),
        "serverErrors": sum(1 for op in ops if op.outcome == "error"),
        "slowestCallSeconds": round(latencies[-1], 2) if latencies else None,
        "p99CallSeconds": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        "callsPastHangBound": len(slow),
    }, findings

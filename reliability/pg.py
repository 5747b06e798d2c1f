"""Phase ``bank-pg``: the bank workload against two gateways sharing one PostgreSQL ledger.

The scale-out deployment of issue #6, as an operator builds it: one home (wallets, sealer key)
initialised with ``inferpay --database URL init``, and two gateway servers (``inferpay gateway
--config``: gunicorn, 2 workers of 8 threads each, separate ports), whose TOML configs differ
only in the port and both name the same ``database = "postgresql://..."``; standing in for two
hosts. Client threads alternate between them (client i talks to gateway i mod 2), and so do the
monitor's HTTP balance polls. The ledger lives in a throwaway schema (``inferpay_reliability_*``)
of the server at ``--database``, dropped at the end whatever happened.

Checked, beyond what every load phase checks (``reliability.bank``: no acknowledged payment
lost, no charge without a call, supply conserved and no balance negative at every poll, verify
passes; the polls here read PostgreSQL in one REPEATABLE READ transaction each):

- **acknowledged charges within funds**: for each wallet, what the clients were told they paid
  (receipts' charges and transfers sent) never exceeds what the ledger ever gave that wallet
  (its mints and the transfers it received);
- **equal heads**: once sealing has settled, both gateways' ``GET /ledger/head`` answer the same
  signed head, and it is the head ``inferpay --database URL verify --json`` replayed to;
- no traceback in either gateway's log.

Skipped, saying why, when the PostgreSQL server does not answer.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from click.testing import Result

from ledger.storage import open_store
from ledger.storage.base import LedgerStore
from ledger.storage.postgres_schema import parse_postgres_url
from ledger.types import Authorization, Mint, Transaction
from reliability.bank import LoadSettings, run_load_phase
from reliability.checks import SNAPSHOT_QUERIES, Finding, Monitor
from reliability.clock import ClockControl
from reliability.deploy import HOST, Deployment
from reliability.faults import Plan
from tests.support.gateway import GatewayEnv
from tests.support.servers import free_port

SCHEMA_PREFIX = "inferpay_reliability_"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"


def _admin(base: str) -> Any:
    import psycopg

    return psycopg.connect(parse_postgres_url(base).conninfo, autocommit=True, connect_timeout=5)


def unavailable(base: str) -> str | None:
    """None if the PostgreSQL server at ``base`` answers, else why not."""
    try:
        target = parse_postgres_url(base)
        if target.schema is not None:
            return f"{target.display}: leave ?schema= out, the phase makes a schema of its own"
        with contextlib.closing(_admin(base)) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any reason at all means: skip, saying why
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable at {parse_postgres_url(base).display}: {text}"
    return None


@dataclass
class PgGatewayEnv(GatewayEnv):
    """``GatewayEnv`` whose CLI calls name the PostgreSQL ledger (``--database``)."""

    database: str = ""

    def cli(self, *args: str, ok: bool = True) -> Result:
        return super().cli("--database", self.database, *args, ok=ok)


class PgDeployment(Deployment):
    """The deployment of ``reliability.deploy`` on a PostgreSQL ledger, with ``gateways``
    gateway servers (``gateway``, ``gateway2``, ...) on it."""

    def __init__(self, root: Path, clock: ClockControl, database: str, *, gateways: int = 2) -> None:
        super().__init__(root, clock)
        self.database = database
        for index in range(2, gateways + 1):
            name = f"gateway{index}"
            self.gateway_names.append(name)
            self.ports[name], self.servers[name], self.restarts[name] = free_port(HOST), None, 0
        self.env = PgGatewayEnv(
            directory=root,
            home=self.home,
            config_path=root / "gateway.toml",
            gateway=None,  # type: ignore[arg-type]  # set by start
            echo=None,  # type: ignore[arg-type]
            chat=None,  # type: ignore[arg-type]
            store=None,  # type: ignore[arg-type]  # set once the ledger exists
            ledger=None,  # type: ignore[arg-type]
            database=database,
        )

    def open_store(self) -> LedgerStore:
        return open_store(self.database)

    def gateway_urls(self) -> list[str]:
        return [f"http://{HOST}:{self.ports[name]}" for name in self.gateway_names]

    def gateway_logs(self) -> str:
        """Everything every gateway server wrote (saved logs of stopped ones, and the live ones)."""
        text = ""
        for name in self.gateway_names:
            saved = self.logs / f"{name}.log"
            text += saved.read_text(errors="replace") if saved.exists() else ""
            handle = self.servers.get(name)
            text += handle.log_text() if handle is not None else ""
        return text


class PgMonitor(Monitor):
    """The monitor, reading the PostgreSQL ledger as a second client would: one REPEATABLE
    READ transaction per poll, so the sums are taken at a single instant."""

    snapshot_source = "PostgreSQL snapshot"
    _pg: Any = None  # the monitor's own connection, opened on its first poll

    def _snapshot(self) -> list[list[tuple[Any, ...]]] | None:
        import psycopg

        dep: PgDeployment = self.dep  # type: ignore[assignment]
        try:
            if self._pg is None or self._pg.closed:
                target = parse_postgres_url(dep.database)
                self._pg = psycopg.connect(target.conninfo, autocommit=True, connect_timeout=5)
                self._pg.execute(f'SET search_path TO "{target.schema}"')
            with self._pg.transaction():
                self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                found = [self._pg.execute(query).fetchall() for query in SNAPSHOT_QUERIES]
        except psycopg.Error:
            return None
        # PostgreSQL sums BIGINTs as NUMERIC: compare them as the integers they are.
        return [
            [tuple(int(v) if v is not None and not isinstance(v, str) else v for v in row) for row in rows]
            for rows in found
        ]

    def _close_snapshots(self) -> None:
        if self._pg is not None:
            self._pg.close()


def run_bank_pg(
    root: Path, clock: ClockControl, settings: LoadSettings, seed: int, base: str, gateways: int = 2
) -> tuple[dict[str, Any], list[Finding]]:
    """Deploy, load, check; the schema is dropped and every server stopped on the way out."""
    schema = SCHEMA_PREFIX + secrets.token_hex(5)
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    started = time.monotonic()
    dep = PgDeployment(root / "bank-pg", clock, url, gateways=gateways)
    try:
        dep.create({})
        deployed = time.monotonic() - started
        figures, findings, workload = run_load_phase(dep, "bankpg", settings, Plan(), seed, monitor_class=PgMonitor)
        funds, fund_findings = _charges_within_funds(dep.env.store, workload.ops, workload.wallets.names, dep)
        findings += fund_findings
        heads, head_findings = _heads(dep, figures["audit"])
        findings += head_findings
        tracebacks = dep.gateway_logs().count("Traceback")
        if tracebacks:
            findings.append(Finding("no_traceback", f"{tracebacks} traceback(s) in the gateways' logs"))
    finally:
        dep.stop()
        dropped = _drop_schema(base, schema)
    by_gateway = Counter(op.gateway for op in workload.ops)
    acknowledged = Counter(op.gateway for op in workload.ops if op.outcome == "ok")
    figures["postgresql"] = {
        "database": parse_postgres_url(base).display,
        "schema": schema,
        "schemaDropped": dropped,
        "gateways": len(dep.gateway_names),
        "workersPerGateway": 2,  # tests.support.gateway.CONFIG_TEMPLATE's workers
        "deploySeconds": round(deployed, 1),
        "operationsByGateway": {gw: by_gateway[gw] for gw in dep.gateway_urls()},
        "acknowledgedByGateway": {gw: acknowledged[gw] for gw in dep.gateway_urls()},
        "heads": heads,
        "acknowledgedChargesVsReceived": funds,
        "gatewayLogTracebacks": tracebacks,
    }
    figures["findings"] = len(findings)
    return figures, findings


def _drop_schema(base: str, schema: str) -> bool:
    try:
        with contextlib.closing(_admin(base)) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception as exc:  # reported, never raised over the phase's own outcome
        print(f"   could not drop schema {schema}: {exc}", flush=True)
        return False
    return True


def _charges_within_funds(
    store: LedgerStore, ops: list[Any], names: list[str], dep: PgDeployment
) -> tuple[dict[str, list[int]], list[Finding]]:
    """Per wallet: acknowledged charges (receipts, transfers sent) <= everything it ever received.
    The phase's ledger is its own, so "ever" is the whole ledger."""
    addresses = {dep.env.wallets[n].address: n for n in names}
    received: Counter[str] = Counter()
    for raw in store.iter_raw_transactions():
        tx = Transaction.from_dict(json.loads(raw.record))
        message = tx.message
        funds_in = isinstance(message, Mint) or (tx.kind == "transfer" and isinstance(message, Authorization))
        if funds_in and message.to in addresses:  # type: ignore[union-attr]  # a Mint or an Authorization
            received[addresses[message.to]] += message.value  # type: ignore[union-attr]
    charged: Counter[str] = Counter()
    for op in ops:
        if op.outcome == "ok" and op.charged:
            charged[op.wallet] += op.charged
    findings = []
    figures = {name: [charged[name], received[name]] for name in names}  # base units: [charged, received]
    for name in names:
        if charged[name] > received[name]:
            findings.append(
                Finding(
                    "acknowledged_charges_within_funds",
                    f"{name}: clients were charged {charged[name]} base units in acknowledged calls,"
                    f" the ledger only ever gave it {received[name]}",
                )
            )
    return figures, findings


def _heads(dep: PgDeployment, audited: dict[str, Any], wait: float = 10.0) -> tuple[dict[str, Any], list[Finding]]:
    """Every gateway's signed head, once sealing has settled: all equal, and equal to verify's."""
    verified = _verify_head(dep)
    deadline = time.monotonic() + wait
    while True:
        heads = {}
        for url in dep.gateway_urls():
            with contextlib.suppress(requests.RequestException, ValueError):
                heads[url] = requests.get(url + "/ledger/head", timeout=5).json()
        hashes = {url: head.get("hash") for url, head in heads.items()}
        agreed = len(heads) == len(dep.gateway_names) and len(set(hashes.values())) == 1
        if (agreed and verified in hashes.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
        verified = _verify_head(dep)
    findings = []
    if not agreed:
        findings.append(Finding("gateways_agree_on_head", f"the gateways answer different heads: {hashes}"))
    elif verified not in hashes.values():
        findings.append(Finding("gateways_agree_on_head", f"gateways' head {hashes} is not verify's head {verified}"))
    first: dict[str, Any] = next(iter(heads.values()), {})
    return {
        "equal": agreed and verified in hashes.values(),
        "hash": first.get("hash"),
        "height": first.get("header", {}).get("height"),
        "treeSize": first.get("header", {}).get("treeSize"),
        "verifyHead": verified,
        "verifyBlocks": audited.get("blocks"),
        "verifyTransactions": audited.get("transactions"),
    }, findings


def _verify_head(dep: PgDeployment) -> str | None:
    result = dep.env.cli("verify", "--json", ok=False)
    try:
        head = json.loads(result.stdout).get("head") or {}
    except ValueError:
        return None
    found = head.get("hash")
    return found if isinstance(found, str) else None

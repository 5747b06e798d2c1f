"""What must hold, checked from outside the gateway: while the load runs, and after it.

- ``Monitor`` watches the ledger file (one consistent SQLite read transaction per poll, as a
  second process would) and the gateway's ``/ledger/accounts`` while the load runs: no balance
  ever negative, balances plus open holds always equal to what was minted, each account's
  ``held`` equal to its open holds.
- ``settle_down`` waits until every hold has been resolved (a hold stranded by a crash must be
  released by the sealer once it expires, never later) and every transaction is sealed.
- ``reconcile`` holds the clients' records against the ledger: each acknowledged payment has
  exactly its settle (lost acknowledged payments are counted), no refused one was charged, no
  charge exists that no client call explains, transfers likewise.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import requests

from ledger.types import Authorization, Charge, HoldResolution, Mint, SplitSettlement, Transaction
from reliability.deploy import Deployment
from reliability.workload import Op

STALL_SECONDS = 5.0
# One consistent snapshot of the money tables, as any second reader (SQLite or PostgreSQL) sees them.
SNAPSHOT_QUERIES = (
    "SELECT min(available), min(held), coalesce(sum(available), 0), coalesce(sum(held), 0) FROM accounts",
    "SELECT minted FROM supply",
    "SELECT coalesce(sum(amount), 0) FROM holds WHERE status = 'open'",
    "SELECT min(seq) FROM transactions WHERE block_height IS NULL",
    "SELECT a.address, a.held, coalesce(h.total, 0) FROM accounts a LEFT JOIN "
    "(SELECT payer, sum(amount) AS total FROM holds WHERE status = 'open' GROUP BY payer) h "
    "ON h.payer = a.address WHERE a.held != coalesce(h.total, 0) LIMIT 3",
)
SIGNED_KINDS = {"sdk_flat", "sdk_embed", "sdk_chat", "sdk_stream", "raw_flat", "raw_v1"}
KEY_KINDS = {"key_flat", "key_embed"}


@dataclass
class Finding:
    check: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, **self.details}


class Monitor(threading.Thread):
    """Polls balances while the load runs; any negative balance or broken sum is recorded."""

    def __init__(self, dep: Deployment, addresses: list[str], interval: float = 0.1) -> None:
        super().__init__(name="monitor", daemon=True)
        self.dep = dep
        self.addresses = addresses
        self.interval = interval
        self.stop_event = threading.Event()
        self.polls = self.http_polls = 0
        self.min_available: int | None = None
        self.min_held: int | None = None
        self.findings: list[Finding] = []
        self.oldest_unsealed: tuple[int, float] | None = None  # (seq, monotonic time first seen)
        self.max_seal_wait = 0.0  # seconds a transaction waited to be sealed while the gateway was up
        self.stalled: set[int] = set()
        self._conn: sqlite3.Connection | None = None

    snapshot_source = "ledger file"  # what the monitor reads besides the gateway, in findings

    def run(self) -> None:
        session = requests.Session()
        turn = 0
        try:
            while not self.stop_event.wait(self.interval):
                found = self._snapshot()
                if found is not None:
                    self._judge(found, self.snapshot_source)
                if self.dep.up():
                    turn += 1
                    with contextlib.suppress(requests.RequestException, ValueError):
                        self._poll_http(session, self.addresses[turn % len(self.addresses)])
        finally:
            self._close_snapshots()
            session.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)

    def _snapshot(self) -> list[list[tuple[Any, ...]]] | None:
        """The answers to ``SNAPSHOT_QUERIES`` from one read transaction of the ledger file (as a
        second process would read it); None if the file was busy this time."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.dep.home / "ledger.db", timeout=30, isolation_level=None)
        conn = self._conn
        try:
            conn.execute("BEGIN")  # one snapshot: the sums below are taken at a single instant
            try:
                return [conn.execute(query).fetchall() for query in SNAPSHOT_QUERIES]
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError:
            return None

    def _close_snapshots(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _judge(self, found: list[list[tuple[Any, ...]]], where: str) -> None:
        """The checks on one snapshot: the answers to ``SNAPSHOT_QUERIES``, in order."""
        (low, low_held, available, held), (minted,), (open_held,), (waiting,) = (rows[0] for rows in found[:4])
        wrong_held = found[4]
        self.polls += 1
        self._seen(low, low_held, where)
        if available + held != minted:
            self._find("supply_conserved", f"balances {available} + held {held} != minted {minted}")
        if held != open_held:
            self._find("holds_match", f"accounts hold {held} in total, open holds amount to {open_held}")
        for address, claimed, actual in wrong_held:
            self._find("holds_match", f"{address} holds {claimed}, its open holds amount to {actual}")
        self._watch_sealing(waiting)

    def _watch_sealing(self, waiting: int | None) -> None:
        """The gateway seals every few ms: a transaction left unsealed for seconds while the
        gateway is up means its receipt cannot be proven (measured in real, monotonic time,
        since the ledger's own clock is what may have moved)."""
        now = time.monotonic()
        if waiting is None:
            self.oldest_unsealed = None
            return
        if self.oldest_unsealed is None or self.oldest_unsealed[0] != waiting:
            self.oldest_unsealed = (waiting, now)
            return
        if not self.dep.up():
            return
        # Only the time since the current gateway process started counts: a dead one seals nothing.
        waited = now - max(self.oldest_unsealed[1], now - self.dep.up_for())
        if waited > 0:
            self.max_seal_wait = max(self.max_seal_wait, waited)
            if waited > STALL_SECONDS and waiting not in self.stalled:
                self.stalled.add(waiting)
                self._find(
                    "sealed_promptly",
                    f"transaction #{waiting} waited {waited:.1f} s to be sealed while the gateway was up "
                    f"(clock offset {self.dep.clock.offset:+.0f} s)",
                    {"defect": "seal-stalls-when-clock-steps-back"} if self.dep.clock.steps else {},
                )

    def _poll_http(self, session: requests.Session, address: str) -> None:
        base = self.dep.gateway_url(self.http_polls // len(self.addresses))  # each gateway in turn, every address
        response = session.get(f"{base}/ledger/accounts/{address}", timeout=5)
        if response.status_code == 200:
            body = response.json()
            self.http_polls += 1
            self._seen(int(body["available"]), int(body["held"]), "GET /ledger/accounts")

    def _seen(self, available: int | None, held: int | None, where: str) -> None:
        if available is None or held is None:
            return
        self.min_available = available if self.min_available is None else min(self.min_available, available)
        self.min_held = held if self.min_held is None else min(self.min_held, held)
        if available < 0 or held < 0:
            self._find("no_negative_balance", f"{where} shows available {available}, held {held}")

    def _find(self, check: str, message: str, details: dict[str, Any] | None = None) -> None:
        if len(self.findings) < 50:
            self.findings.append(Finding(check, message, details or {}))

    def figures(self) -> dict[str, Any]:
        return {
            "ledgerPolls": self.polls,
            "httpPolls": self.http_polls,
            "minAvailableSeen": self.min_available,
            "minHeldSeen": self.min_held,
            "overspendBaseUnits": max(0, -(self.min_available or 0)),
            "longestSealWaitSeconds": round(self.max_seal_wait, 2),
            "violations": len(self.findings),
        }


def settle_down(dep: Deployment, findings: list[Finding], *, grace: float = 5.0) -> dict[str, Any]:
    """With the gateway up, wait until no hold is open and nothing waits to be sealed.

    A hold may stay open until its expiry (the gateway may have died holding it); past its
    expiry plus ``grace`` seconds (the sealer ticks every few ms) it is a finding. Everything
    must be sealed within ``grace`` seconds once the holds are resolved."""
    dep.start("gateway")
    store = dep.env.store
    started = time.monotonic()
    overdue: dict[str, float] = {}
    expired_waiting = 0
    while True:
        holds = store.open_holds()
        if not holds:
            break
        now = dep.clock.now()
        expired_waiting = max(expired_waiting, len(holds))
        late = {h.hold_id: now - h.expires_at_s for h in holds if now > h.expires_at_s + grace}
        if late:
            overdue.update(late)
            break
        time.sleep(0.2)
    for hold_id, seconds in overdue.items():
        findings.append(Finding("hold_released_by_expiry", f"hold {hold_id} open {seconds:.1f} s past its expiry"))
    holds_done = time.monotonic()
    while store.unsealed()[0] and time.monotonic() - holds_done < grace:
        time.sleep(0.1)
    count, oldest = store.unsealed()
    if count:
        age = dep.clock.now() - (oldest or 0) / 1000
        findings.append(
            Finding(
                "everything_sealed",
                f"{count} transaction(s) still unsealed {grace:.0f} s after the load stopped "
                f"(the oldest accepted {age:+.1f} s ago by the ledger's clock)",
                {"unsealed": count, "oldestAgeSeconds": round(age, 1)},
            )
        )
    return {
        "waitedForHoldsSeconds": round(holds_done - started, 2),
        "holdsOpenWhenLoadStopped": expired_waiting,
        "holdsPastExpiry": len(overdue),
        "unsealedAfterGrace": count,
    }


def audit_ledger(dep: Deployment) -> dict[str, Any]:
    """``inferpay verify --json`` as a user runs it (the auditor over the whole ledger)."""
    result = dep.env.cli("verify", "--json", ok=False)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {
            "ok": False,
            "blocks": None,
            "transactions": None,
            "problems": [{"message": (result.stdout + result.stderr)[-500:]}],
        }
    return {
        "ok": bool(report["ok"]),
        "blocks": report["blocks"],
        "transactions": report["transactions"],
        "problems": [p.get("message") for p in report["problems"][:20]],
        "verifyExitCode": result.exit_code,
    }


@dataclass
class _Ledger:
    """The part of the ledger written since a given seq, indexed the ways reconcile needs."""

    holds: dict[tuple[str, str], str] = field(default_factory=dict)  # (payer, nonce) -> hold id
    transfers: dict[tuple[str, str], str] = field(default_factory=dict)  # (payer, nonce) -> tx id
    resolutions: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # hold -> (kind, amount, tx)
    charges: dict[str, str] = field(default_factory=dict)  # charge hold id -> allowance id
    mints: set[str] = field(default_factory=set)
    settles: list[tuple[str, str]] = field(default_factory=list)  # (settle tx, hold id)
    kinds: Counter[str] = field(default_factory=Counter)


def _read(dep: Deployment, after_seq: int) -> _Ledger:
    found = _Ledger()
    for raw in dep.env.store.iter_raw_transactions(after_seq):
        tx = Transaction.from_dict(json.loads(raw.record))
        message = tx.message
        found.kinds[tx.kind] += 1
        if isinstance(message, Authorization):
            target = found.holds if tx.kind == "hold" else found.transfers
            target[(message.from_, message.nonce)] = raw.tx_id
        elif isinstance(message, HoldResolution):
            found.resolutions[message.hold_id] = (tx.kind, message.amount, raw.tx_id)
            if tx.kind == "settle":
                found.settles.append((raw.tx_id, message.hold_id))
        elif isinstance(message, SplitSettlement):
            # A pool call's settle: captured like a settle (its amount is what the payer paid),
            # so every check below that asks "settled for how much?" reads it the same way.
            found.resolutions[message.hold_id] = ("settle", message.amount, raw.tx_id)
            found.settles.append((raw.tx_id, message.hold_id))
        elif isinstance(message, Charge):
            found.charges[raw.tx_id] = message.allowance_id
        elif isinstance(message, Mint):
            found.mints.add(raw.tx_id)
    return found


def last_seq(dep: Deployment) -> int:
    return max((raw.seq for raw in dep.env.store.iter_raw_transactions(_tail_start(dep))), default=0)


def _tail_start(dep: Deployment) -> int:
    head = dep.env.store.head().header.tree_size
    return max(0, head - 1)


def reconcile(dep: Deployment, ops: list[Op], mints: list[Op], after_seq: int) -> tuple[dict[str, Any], list[Finding]]:
    """Hold every client-side record against what the ledger holds since ``after_seq``."""
    led = _read(dep, after_seq)
    findings: list[Finding] = []
    explained: set[str] = set()  # settle txs some client call accounts for
    ambiguous_keys: Counter[str] = Counter()
    counts: Counter[str] = Counter()

    def find(check: str, op: Op, message: str) -> None:
        findings.append(Finding(check, message, {"op": op.to_dict()}))

    for op in ops:
        if op.kind in SIGNED_KINDS:
            key = (op.payer or "", op.nonce or "")
            hold = led.holds.get(key)
            resolution = led.resolutions.get(hold) if hold else None
            if op.outcome == "ok":
                if resolution is None or resolution[0] != "settle" or resolution[2] != op.tx_id:
                    find(
                        "acknowledged_payment_in_ledger",
                        op,
                        f"acknowledged payment's settle {op.tx_id} not found "
                        f"for its hold (ledger: hold {hold}, resolution {resolution})",
                    )
                    counts["lostAcknowledged"] += 1
                elif hold != op.hold_id or resolution[1] != op.charged:
                    find(
                        "receipt_matches_ledger",
                        op,
                        f"receipt says hold {op.hold_id} charged {op.charged}, "
                        f"ledger has hold {hold} settled for {resolution[1]}",
                    )
                explained.add(op.tx_id or "")
            elif resolution is not None and resolution[0] == "settle":
                explained.add(resolution[2])
                if op.outcome == "refused":
                    find(
                        "refused_not_charged",
                        op,
                        f"refused with {op.status} {op.code}, yet settled "
                        f"({resolution[1]} base units, tx {resolution[2]})",
                    )
                else:
                    counts[f"{op.outcome}Settled"] += 1
            elif op.outcome in ("ambiguous", "error"):
                counts[f"{op.outcome}NotCharged"] += 1
        elif op.kind in KEY_KINDS:
            if op.outcome == "ok":
                resolution = led.resolutions.get(op.hold_id or "")
                if resolution is None or resolution[0] != "settle" or resolution[2] != op.tx_id:
                    find("acknowledged_payment_in_ledger", op, f"acknowledged key charge {op.tx_id} not in the ledger")
                    counts["lostAcknowledged"] += 1
                elif resolution[1] != op.charged:
                    find("receipt_matches_ledger", op, f"receipt charged {op.charged}, ledger {resolution[1]}")
                explained.add(op.tx_id or "")
            elif op.outcome in ("ambiguous", "error"):
                ambiguous_keys[op.allowance or ""] += 1
        elif op.kind == "transfer":
            applied = led.transfers.get((op.payer or "", op.nonce or ""))
            if op.outcome == "ok" and applied != op.tx_id:
                find("acknowledged_transfer_in_ledger", op, f"acknowledged transfer {op.tx_id} not in the ledger")
                counts["lostAcknowledged"] += 1
            elif op.outcome == "refused" and applied is not None:
                find("refused_not_charged", op, f"refused transfer ({op.status} {op.code}) applied as {applied}")
            elif op.outcome in ("ambiguous", "error"):
                counts["ambiguousTransferApplied" if applied else "ambiguousTransferNotApplied"] += 1
    for op in mints:
        if op.outcome == "ok" and op.tx_id not in led.mints:
            find("acknowledged_mint_in_ledger", op, f"mint {op.tx_id} not in the ledger")

    unexplained_keys: Counter[str] = Counter()
    for settle_tx, hold_id in led.settles:
        if settle_tx in explained:
            continue
        if hold_id in led.charges:
            unexplained_keys[led.charges[hold_id]] += 1
        else:
            findings.append(Finding("no_unexplained_charge", f"settle {settle_tx} of hold {hold_id} answers no call"))
    for allowance, extra in unexplained_keys.items():
        if extra > ambiguous_keys[allowance]:
            findings.append(
                Finding(
                    "no_unexplained_charge",
                    f"allowance {allowance}: {extra} settled charges answer no acknowledged call, "
                    f"only {ambiguous_keys[allowance]} calls were cut off",
                )
            )
    known = {op.tx_id for op in ops if op.kind == "transfer" and op.outcome != "refused"}
    stray = [tx for tx in led.transfers.values() if tx not in known]
    for op in ops:  # an ambiguous transfer has no tx id client-side: match it by nonce
        if op.kind == "transfer" and op.outcome in ("ambiguous", "error"):
            applied = led.transfers.get((op.payer or "", op.nonce or ""))
            if applied in stray:
                stray.remove(applied)
    for tx in stray:
        findings.append(Finding("no_unexplained_charge", f"transfer {tx} answers no client call"))

    figures = {
        "ledgerTransactionsByKind": dict(sorted(led.kinds.items())),
        "lostAcknowledged": counts["lostAcknowledged"],
        "cutOffCallsSettled": counts["ambiguousSettled"],
        "cutOffCallsNotCharged": counts["ambiguousNotCharged"],
        "cutOffTransfersApplied": counts["ambiguousTransferApplied"],
        "cutOffTransfersNotApplied": counts["ambiguousTransferNotApplied"],
        "settlesMatched": len(explained & {s for s, _ in led.settles}),
        "settlesInLedger": len(led.settles),
    }
    return figures, findings


def outcome_table(ops: list[Op]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for op in ops:
        table[op.kind][op.outcome] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(table.items())}


def refusal_codes(ops: list[Op]) -> dict[str, int]:
    return dict(Counter(f"{op.status} {op.code}" for op in ops if op.outcome == "refused").most_common())

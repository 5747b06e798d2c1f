"""One load phase: the bank workload against the live deployment, with or without a nemesis,
then every invariant checked (``reliability.checks``).

Used three times: ``bank`` (no faults), ``crash`` (gateway and upstreams killed with SIGKILL
and restarted) and ``clock`` (the machine's clock stepped back and forward, with crashes).
Each phase has wallets of its own (``<phase>0`` ...), created with ``inferpay wallet create`` and
funded with ``inferpay mint`` like a user would, and an API key each (``inferpay key create``),
so the phases' figures do not mix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reliability.checks import (
    Finding,
    Monitor,
    audit_ledger,
    last_seq,
    outcome_table,
    reconcile,
    refusal_codes,
    settle_down,
)
from reliability.deploy import Deployment
from reliability.faults import Nemesis, Plan
from reliability.workload import Wallets, Workload


@dataclass(frozen=True)
class LoadSettings:
    duration: float
    clients: int
    wallets: int = 4
    initial_funds: str = "0.05"  # tokens per wallet: about 50 flat calls
    key_cap: str = "0.03"  # per API key, so keys run out before wallets do
    mint_every: float = 0.5
    mint_amount: int = 20_000  # base units: 20 flat calls


def run_load_phase(
    dep: Deployment,
    name: str,
    settings: LoadSettings,
    plan: Plan,
    seed: int,
    at_half_time: Callable[[], None] | None = None,
    monitor_class: type[Monitor] = Monitor,
    nemesis_class: type[Nemesis] = Nemesis,
    settle_grace: float = 5.0,
) -> tuple[dict[str, Any], list[Finding], Workload]:
    env = dep.env
    names = [f"{name}{i}" for i in range(settings.wallets)]
    for wallet in names:
        env.new_wallet(wallet, settings.initial_funds)
    keys = {}
    for wallet in names:
        created = env.create_key(wallet, settings.key_cap, "1h")
        keys[wallet] = (created["apiKey"], created["allowanceId"])
    after_seq = last_seq(dep)
    workload = Workload(
        dep,
        Wallets(names, keys),
        clients=settings.clients,
        seed=seed,
        mint_every=settings.mint_every,
        mint_amount=settings.mint_amount,
    )
    monitor = monitor_class(dep, [env.wallets[n].address for n in names])
    nemesis = nemesis_class(dep, plan, settings.duration, seed)
    stop = threading.Event()
    timer = threading.Timer(settings.duration / 2, at_half_time) if at_half_time else None
    monitor.start()
    nemesis.start()
    if timer:
        timer.start()
    started = time.monotonic()
    workload.run(settings.duration, stop)
    elapsed = time.monotonic() - started
    nemesis.stop()
    if timer:
        timer.join()
    dep.clock.reset()  # back to the real time: what was held in the future must still be released

    findings: list[Finding] = []
    settled = settle_down(dep, findings, grace=settle_grace)
    monitor.stop()
    findings += monitor.findings
    figures, reconciled = reconcile(dep, workload.ops, workload.mints, after_seq)
    findings += reconciled
    for op in workload.ops:
        if op.outcome == "error":
            findings.append(Finding("no_server_error_and_receipts_verify", op.detail or "error", {"op": op.to_dict()}))
        elif op.outcome == "ok" and op.detail:
            findings.append(Finding("charged_the_routes_price", op.detail, {"op": op.to_dict()}))
    negative = [a for a in env.store.accounts() if a.available < 0 or a.held < 0]
    for account in negative:
        findings.append(Finding("no_negative_balance", f"{account.address}: {account.to_dict()} at the end"))
    audited = audit_ledger(dep)
    if not audited["ok"] or audited["verifyExitCode"] != 0:
        findings.append(
            Finding("audit_ok", f"audit: {audited['problems'][:5]}, verify exit {audited['verifyExitCode']}")
        )

    ops = workload.ops
    acknowledged = [op for op in ops if op.outcome == "ok"]
    result = {
        "durationSeconds": round(elapsed, 1),
        "clients": settings.clients,
        "wallets": settings.wallets,
        "operations": {
            "total": len(ops),
            "perSecond": round(len(ops) / elapsed, 1) if elapsed else 0,
            "acknowledged": len(acknowledged),
            "acknowledgedChargedBaseUnits": sum(op.charged or 0 for op in acknowledged if op.kind != "transfer"),
            "byKindAndOutcome": outcome_table(ops),
            "refusalCodes": refusal_codes(ops),
            "mints": len(workload.mints),
        },
        "faults": nemesis.figures(),
        "monitor": monitor.figures(),
        "settleDown": settled,
        "reconcile": figures,
        "audit": audited,
        "findings": len(findings),
    }
    if dep.clock.steps:
        result["clockSteps"] = len(dep.clock.steps)
    return result, findings, workload


def seal_after_clock_correction(dep: Deployment, ahead: float, wait: float) -> tuple[dict[str, Any], list[Finding]]:
    """A machine whose clock ran ``ahead`` seconds fast is corrected (stepped back) while a
    transaction waits to be sealed: the gateway is down, the operator mints (the CLI's way of
    writing), the clock is corrected, the gateway starts. It must seal that transaction within
    seconds, as it would any other, not once the clock has caught up with it."""
    import secrets

    from ledger.ledger import Ledger
    from ledger.storage.sqlite import SQLiteStore
    from ledger.types import Mint

    env = dep.env
    dep.kill("gateway")
    dep.clock.set(ahead)
    store = SQLiteStore(dep.home / "ledger.db")
    try:
        operator = env.wallets["operator"]
        ledger = Ledger(store, clock=dep.clock.now_ms)
        mint = Mint(operator.address, 1, "0x" + secrets.token_hex(32))
        ledger.mint(mint, operator.sign(ledger.chain, mint))
    finally:
        store.close()
    dep.clock.set(0.0)
    dep.start("gateway")
    started = time.monotonic()
    while env.store.unsealed()[0] and time.monotonic() - started < wait:
        time.sleep(0.1)
    waited = time.monotonic() - started
    left = env.store.unsealed()[0]
    findings = []
    if left:
        findings.append(
            Finding(
                "sealed_promptly",
                f"a transaction accepted {ahead:.0f} s ahead of the corrected clock is still unsealed "
                f"{waited:.1f} s after the gateway started",
                {"defect": "seal-stalls-when-clock-steps-back"},
            )
        )
        env.cli("seal")  # seal it now, as an operator would, so the next checks start clean
    return {"clockAheadSeconds": ahead, "sealedWithinSeconds": None if left else round(waited, 2)}, findings

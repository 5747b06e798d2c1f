"""The ``providers`` phase: paid calls through the compute pool while its providers fail.

Its own deployment (``tests.support.gateway.start_gateway_env`` with a ``pool = true`` chat
route, in ``<run>/providers``), and three FAKE providers (``tests.support.upstreams.pool_provider``,
the fake chat upstream in their own processes: nothing generative runs offline), registered and
approved on the ledger: ``cheap`` (preferred by sort=price), ``mid``, and ``rogue`` (dearest,
asked for by name with ``order``). Client threads pay calls with ``PaymentAuth`` for
``duration`` seconds while, at a third of it, ``cheap`` is SIGKILLed mid-load; at half, ``rogue``
starts reporting usage a million times the truth; at two thirds, usage that is not usage.

Figures: calls, served, failed, failed over (the gateway's ``inferpay_pool_failovers``), charged
(split settles of the phase), lost (served calls without their split), double-charged (holds
resolved twice, or two splits for one hold), charged-unserved (splits no served call's receipt
names), capped (splits flagged ``usageCapped``), and ``inferpay verify``. Findings: any lost,
double or unserved charge, a served call whose split is not capped when its provider inflated,
a failed call while a live provider remained, the audit failing.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from gateway.client import PaymentAuth
from gateway.wire.x402 import decode_header
from ledger.types import RESOLUTION_KINDS, SplitSettlement
from reliability.checks import Finding
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.pool_gateway import POOL_CHAT, POOL_CONFIG, PoolProviders, chat
from tests.support.servers import ServerHandle, run_wsgi_in_process

FACTORY = "tests.support.upstreams.pool_provider:create_provider_app"
PRICES = {"cheap": 100, "mid": 200, "rogue": 400}  # base units per call; per 1k tokens below
MAX_TOKENS = 16  # the output bound each call states


@dataclass(frozen=True)
class ProviderSettings:
    duration: float = 12.0
    clients: int = 6


@dataclass
class Call:
    status: int
    phase: str  # which fault was in force when it was sent
    asked: str  # "price" or "rogue"
    provider: str = ""
    charged: int = 0
    split_tx: str = ""
    capped: bool = False
    phase_at_end: str = ""  # a fault applied while the call was in flight makes it ambiguous


def run_providers(root: Path, settings: ProviderSettings, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    directory = root / "providers"
    directory.mkdir(parents=True, exist_ok=True)
    servers = {name: run_wsgi_in_process(FACTORY, "ok", threads=16) for name in PRICES}
    try:
        with start_gateway_env(directory, extra_config=POOL_CONFIG) as env:
            return _run(env, servers, settings, seed)
    finally:
        for server in servers.values():
            server.stop()


def _run(
    env: GatewayEnv, servers: dict[str, ServerHandle], settings: ProviderSettings, seed: int
) -> tuple[dict[str, Any], list[Finding]]:
    providers = PoolProviders(env)
    providers.set_fee(500, 2)
    for name, price in PRICES.items():
        providers.register(name, servers[name].url + "/v1", per_call=price, per_1k_in=10, per_1k_out=40)
    address = {name: env.wallets[name].address for name in PRICES}
    env.wait_for(
        lambda: providers.routable_everywhere(lambda r: r == set(address.values())), what="every provider routable"
    )
    env.wait_quiet()
    first_seq = env.store.head().header.tree_size + env.store.unsealed()[0]

    calls: list[Call] = []
    lock = threading.Lock()
    fault = {"phase": "steady"}
    stop = time.monotonic() + settings.duration

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        auth = PaymentAuth(env.alice)
        while time.monotonic() < stop:
            asked = "rogue" if rng.random() < 0.3 else "price"
            prefs = {"order": [address["rogue"]]} if asked == "rogue" else {"sort": "price"}
            call = Call(0, fault["phase"], asked)
            try:
                r = requests.post(
                    env.route_url(POOL_CHAT),
                    json=chat(rng.randint(1, 12), max_tokens=MAX_TOKENS, provider=prefs),
                    auth=auth,
                    timeout=30,
                )
                call.status = r.status_code
                if r.status_code == 200:
                    answer = decode_header(r.headers["PAYMENT-RESPONSE"])
                    call.provider, call.charged = answer["split"]["provider"], int(answer["charged"])
                    call.split_tx, call.capped = answer["transaction"], answer["split"]["usageCapped"]
            except Exception as exc:  # the SDK raises the gateway's refusals; count them as failed
                call.status = getattr(getattr(exc, "response", None), "status_code", -1)
            call.phase_at_end = fault["phase"]
            with lock:
                calls.append(call)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(settings.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    schedule = [(1 / 3, "cheap-killed"), (1 / 2, "rogue-inflates"), (2 / 3, "rogue-garbage")]
    for at, phase in schedule:
        time.sleep(max(0.0, started + settings.duration * at - time.monotonic()))
        if phase == "cheap-killed":
            servers["cheap"].process.kill()  # SIGKILL, mid-load
        elif phase == "rogue-inflates":
            requests.post(servers["rogue"].url + "/test/mode", json={"mode": "inflate"}, timeout=5)
        else:
            requests.post(servers["rogue"].url + "/test/mode", json={"mode": "garbage"}, timeout=5)
        fault["phase"] = phase
    for t in threads:
        t.join(timeout=settings.duration + 60)
    env.wait_quiet(timeout=30)
    return _figures(env, calls, address, first_seq, time.monotonic() - started)


def _figures(
    env: GatewayEnv, calls: list[Call], address: dict[str, str], first_seq: int, seconds: float
) -> tuple[dict[str, Any], list[Finding]]:
    findings: list[Finding] = []
    splits: dict[str, SplitSettlement] = {}
    resolutions: Counter[str] = Counter()
    for raw in env.store.iter_raw_transactions(after_seq=first_seq):
        stored = env.store.get(raw.tx_id)
        if stored is None:
            continue
        message = stored.tx.message
        if isinstance(message, SplitSettlement):
            splits[raw.tx_id] = message
        if stored.tx.kind in RESOLUTION_KINDS or isinstance(message, SplitSettlement):
            resolutions[getattr(message, "hold_id", "")] += 1
    served = [c for c in calls if c.status == 200]
    failed = [c for c in calls if c.status != 200]
    receipts = {c.split_tx for c in served}
    lost = [c for c in served if c.split_tx not in splits]
    unserved = [tx for tx in splits if tx not in receipts]
    double = [h for h, n in resolutions.items() if n > 1]
    split_holds = Counter(s.hold_id for s in splits.values())
    double += [h for h, n in split_holds.items() if n > 1 and h not in double]
    inflated = [c for c in served if c.provider == address["rogue"] and c.phase == c.phase_at_end == "rogue-inflates"]
    uncapped = [c for c in inflated if not c.capped]
    metrics = requests.get(env.url + "/metrics", timeout=10).text
    failovers = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("inferpay_pool_failovers_total")
    )
    verify = env.cli("verify", "--json", ok=False)
    verified = verify.exit_code == 0
    if lost:
        findings.append(Finding("pool-lost", f"{len(lost)} served calls have no split settle"))
    if unserved:
        findings.append(Finding("pool-charged-unserved", f"{len(unserved)} split settles no served call names"))
    if double:
        findings.append(Finding("pool-double-charged", f"{len(double)} holds resolved more than once"))
    if uncapped:
        findings.append(Finding("pool-uncapped", f"{len(uncapped)} calls to an inflating provider were not capped"))
    if failed:
        statuses = dict(Counter(c.status for c in failed))
        findings.append(
            Finding(
                "pool-failed-calls", f"{len(failed)} calls failed with a live provider left", {"statuses": statuses}
            )
        )
    if not verified:
        findings.append(Finding("pool-verify", f"inferpay verify failed: {verify.stdout[-500:]}"))
    by_provider = Counter(c.provider for c in served)
    figures = {
        "seconds": round(seconds, 1),
        "calls": len(calls),
        "served": len(served),
        "failed": len(failed),
        "failedOver": int(failovers),
        "charged": len(splits),
        "lost": len(lost),
        "doubleCharged": len(double),
        "chargedUnserved": len(unserved),
        "usageCapped": sum(1 for s in splits.values() if s.usage_capped),
        "garbageUsageCalls": sum(1 for c in served if c.provider == address["rogue"] and c.phase == "rogue-garbage"),
        "servedBy": {name: by_provider.get(a, 0) for name, a in address.items()},
        "servedAfterKill": {
            name: sum(1 for c in served if c.provider == a and c.phase != "steady") for name, a in address.items()
        },
        "chargedBaseUnits": sum(s.amount for s in splits.values()),
        "verifyOk": verified,
        "verify": json.loads(verify.stdout) if verified else None,
    }
    return figures, findings

"""Phase ``rate-limits``: ``[[rate_limits]]`` held exactly across workers, under a bank workload.

Its own deployment (``tests.support.gateway.start_gateway_env``: the 2-worker gateway) with
three limits, each on a short fixed window so a run crosses many of them: per payer on the flat
route, per API key (spend, on every route), per route on the second flat route. Client threads
pay as fast as they can, each call picked at random: a signed x402 payment or an API key, on
either route, from a few well-funded wallets, so every call the limits admit succeeds.

What is checked:

- **No more admitted than the limit in any window**, seen from the clients: a call was admitted
  at some instant between sending it and its answer, so when both fall in one window (the
  gateway's windows are ``now // window_seconds`` of the wall clock this machine shares) the
  call counts in that window for sure; those are summed per limit, subject and window and must
  not pass ``max_requests`` (or ``max_spend`` base units). Calls whose window is uncertain are
  left out, so the check can miss an excess at a window's edge but never reports one falsely.
- **A refused call charges nothing**: each 429 carries ``rate_limited`` and a ``Retry-After``
  within the window; each payer spent exactly its admitted calls' price, and the ledger holds
  one hold (or charge) per admitted call, none for a refused one; the audit clean. And a
  refused payment used no nonce: after the load, in a fresh window, one refused signed payment
  per payer is sent again, unchanged, and must be served (and charged, once).
- No answer but 200 or 429 (funds and caps are ample).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from reliability.checks import Finding
from tests.support.gateway import FLAT, FLAT2, FLAT_PRICE, GatewayEnv, start_gateway_env

WINDOW_S = 2
PAYER_MAX_REQUESTS = 4  # per payer on FLAT
ROUTE_MAX_REQUESTS = 6  # for FLAT2, every payer together
KEY_MAX_SPEND = 3 * FLAT_PRICE  # per API key, every route
LIMITS = f"""
[[rate_limits]]
per = "payer"
route = "{FLAT}"
window_seconds = {WINDOW_S}
max_requests = {PAYER_MAX_REQUESTS}

[[rate_limits]]
per = "api_key"
window_seconds = {WINDOW_S}
max_spend = "{KEY_MAX_SPEND / 1_000_000:.6f}"

[[rate_limits]]
per = "route"
route = "{FLAT2}"
window_seconds = {WINDOW_S}
max_requests = {ROUTE_MAX_REQUESTS}
"""
OPERATIONS = ("signed_flat", "signed_flat2", "key_flat", "key_flat2")


@dataclass(frozen=True)
class RateLimitSettings:
    duration: float
    clients: int
    wallets: int = 4


@dataclass(frozen=True)
class Call:
    """One call as the client saw it: wall-clock seconds when sent and when answered."""

    operation: str
    payer: str
    key: str | None
    sent_s: float
    answered_s: float
    status: int
    code: str
    retry_after: str | None


def limits_counted(call: Call) -> list[tuple[str, str, int]]:
    """(limit, subject, what it counts) for each limit this call counts against once admitted."""
    counted = []
    path = FLAT2 if call.operation.endswith("flat2") else FLAT
    if path == FLAT:
        counted.append(("payer", call.payer, 1))
    else:
        counted.append(("route", FLAT2, 1))
    if call.key is not None:
        counted.append(("api_key", call.key, FLAT_PRICE))
    return counted


LIMIT_MAX = {"payer": PAYER_MAX_REQUESTS, "route": ROUTE_MAX_REQUESTS, "api_key": KEY_MAX_SPEND}


def admitted_per_window(calls: Iterable[Call], window_s: int) -> tuple[Counter[tuple[str, str, int]], int]:
    """What the admitted calls sum to in each (limit, subject, window index), counting only the
    calls certainly in that window; and how many were left out as uncertain."""
    sums: Counter[tuple[str, str, int]] = Counter()
    uncertain = 0
    for call in calls:
        if call.status != 200:
            continue
        first, last = int(call.sent_s) // window_s, int(call.answered_s) // window_s
        if first != last:
            uncertain += 1
            continue
        for limit, subject, amount in limits_counted(call):
            sums[(limit, subject, first)] += amount
    return sums, uncertain


def run_rate_limits(root: Path, settings: RateLimitSettings, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    directory = root / "rate-limits"
    directory.mkdir(parents=True, exist_ok=True)
    with start_gateway_env(directory, extra_config=LIMITS) as env:
        return _run(env, settings, seed)


def _run(env: GatewayEnv, settings: RateLimitSettings, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    names = [f"rl{i}" for i in range(settings.wallets)]
    keys: dict[str, tuple[str, str]] = {}  # wallet name -> (bearer token, allowance id)
    for name in names:
        env.new_wallet(name, "10")
        made = env.create_key(name, "10", "1h")
        keys[name] = (made["apiKey"], made["allowanceId"])
    start = {name: env.available(env.wallets[name]) for name in names}
    calls: list[Call] = []
    refused_payments: dict[str, str] = {}  # wallet name -> a signed FLAT payment refused with 429
    lock = threading.Lock()
    deadline = time.monotonic() + settings.duration

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        session = requests.Session()
        while time.monotonic() < deadline:
            name = rng.choice(names)
            wallet = env.wallets[name]
            operation = rng.choice(OPERATIONS)
            path = FLAT2 if operation.endswith("flat2") else FLAT
            headers, key = {}, None
            if operation.startswith("key"):
                headers["Authorization"] = f"Bearer {keys[name][0]}"
                key = keys[name][1]
            else:
                headers[PAYMENT_SIGNATURE_HEADER] = env.payment(wallet, path)[0]
            sent = time.time()
            try:
                answer = session.post(env.route_url(path), json={}, headers=headers, timeout=30)
            except requests.RequestException:
                answered, status, code = time.time(), 0, "connection"
                retry = None
            else:
                answered, status = time.time(), answer.status_code
                code = _code(answer)
                retry = answer.headers.get("Retry-After")
            with lock:
                calls.append(Call(operation, wallet.address, key, sent, answered, status, code, retry))
                if status == 429 and operation == "signed_flat":
                    refused_payments[name] = headers[PAYMENT_SIGNATURE_HEADER]

    started = time.monotonic()
    with ThreadPoolExecutor(settings.clients) as pool:
        list(pool.map(client, range(settings.clients)))
    elapsed = time.monotonic() - started
    # A fresh window, then each refused payment again, as it was signed: served, since the
    # refusal used no nonce (one per payer, within every limit).
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)
    resent = Counter[str]()
    for name, header in sorted(refused_payments.items()):
        sent = time.time()
        answer = requests.post(env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
        address = env.wallets[name].address
        calls.append(Call("signed_flat", address, None, sent, time.time(), answer.status_code, _code(answer), None))
        resent["served" if answer.status_code == 200 else f"{answer.status_code} {_code(answer)}"] += 1
    env.wait_quiet(30)
    figures, findings = _check(env, names, start, calls, elapsed, settings)
    figures["refusedPaymentsSentAgain"] = dict(resent)
    if set(resent) - {"served"}:
        findings.append(Finding("a_refused_payment_uses_no_nonce", f"refused payments sent again: {dict(resent)}"))
    return figures, findings


def _code(answer: requests.Response) -> str:
    if answer.status_code == 200:
        return ""
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "not-json"


def _check(
    env: GatewayEnv,
    names: list[str],
    start: dict[str, int],
    calls: list[Call],
    elapsed: float,
    settings: RateLimitSettings,
) -> tuple[dict[str, Any], list[Finding]]:
    findings: list[Finding] = []
    statuses = Counter(f"{c.status} {c.code}".strip() for c in calls)
    for call in calls:
        if call.status not in (200, 429):
            findings.append(Finding("only_served_or_rate_limited", f"{call.operation}: {call.status} {call.code}"))
        elif call.status == 429 and (
            call.code != "rate_limited"
            or not (call.retry_after or "").isdigit()
            or not 1 <= int(call.retry_after or 0) <= WINDOW_S
        ):
            findings.append(Finding("rate_limited_answer", f"429 {call.code}, Retry-After {call.retry_after!r}"))
    sums, uncertain = admitted_per_window(calls, WINDOW_S)
    over = {k: v for k, v in sums.items() if v > LIMIT_MAX[k[0]]}
    for (limit, subject, window), value in sorted(over.items())[:20]:
        findings.append(
            Finding(
                "limit_holds_across_workers",
                f"{limit} {subject}: {value} admitted in window {window} (limit {LIMIT_MAX[limit]})",
            )
        )
    by_limit: dict[str, dict[str, int]] = {}
    for limit, most in LIMIT_MAX.items():
        windows = [v for k, v in sums.items() if k[0] == limit]
        by_limit[limit] = {
            "limit": most,
            "windows": len(windows),
            "mostAdmittedInAWindow": max(windows, default=0),
            "windowsAtTheLimit": sum(1 for v in windows if v == most),
            "windowsOverTheLimit": sum(1 for k in over if k[0] == limit),
        }
    # Money: a refused call holds and charges nothing.
    address = {env.wallets[n].address: n for n in names}
    admitted = Counter(address[c.payer] for c in calls if c.status == 200)
    refused = Counter(address[c.payer] for c in calls if c.status == 429)
    charged_refused = 0
    for name in names:
        account = env.account(env.wallets[name])
        spent = start[name] - account.available - account.held
        holds = sum(1 for s in env.history(env.wallets[name], 100_000) if s.tx.kind in ("hold", "charge"))
        if spent != admitted[name] * FLAT_PRICE or holds != admitted[name] or account.held:
            charged_refused += 1
            findings.append(
                Finding(
                    "refused_calls_charge_nothing",
                    f"{name}: spent {spent}, {holds} holds, {account.held} held, for {admitted[name]} admitted "
                    f"calls of {FLAT_PRICE} ({refused[name]} refused)",
                )
            )
    audit_ok = True
    try:
        env.audit_ok()
    except AssertionError as exc:
        audit_ok = False
        findings.append(Finding("audit_ok", str(exc)[:300]))
    figures = {
        "durationSeconds": round(elapsed, 1),
        "clients": settings.clients,
        "wallets": settings.wallets,
        "windowSeconds": WINDOW_S,
        "operations": {
            "total": len(calls),
            "perSecond": round(len(calls) / elapsed, 1),
            "admitted": sum(admitted.values()),
            "refused": sum(refused.values()),
            "byStatus": dict(sorted(statuses.items())),
        },
        "limits": by_limit,
        "windowUncertain": uncertain,
        "payersChargedForRefusedCalls": charged_refused,
        "auditOk": audit_ok,
        "findings": len(findings),
    }
    return figures, findings

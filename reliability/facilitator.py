"""The ``facilitator`` phase: x402 payments settled by the gateway's ``/facilitator``, under load.

A bank-style workload of payers, each with a wallet of its own (``fac0`` ...), mixes:

- ``pay``: the official x402 requests client buys ``GET /paid`` from an unmodified official x402
  resource server (``tests.support.x402_resource_server``, its own process) whose facilitator is
  ours: 200 with a PAYMENT-RESPONSE is an acknowledged payment, a 402 a refusal;
- ``race``: one signed payload sent as verify+settle by several threads at once: at most one settles;
- ``replay``: a payload already settled, sent again to verify and settle: always refused;
- ``settle-only``: settle without verify (acknowledged when it succeeds);
- ``verify-only``: verify never followed by settle, with a short maxTimeoutSeconds: the hold
  must expire by itself;
- ``malformed``: bodies that are not x402, or x402 with broken insides: a 400 or a 200 refusal;
- the x402 ``upto`` scheme (Permit2, signed by the official SDK's ``UptoEvmScheme``):
  ``upto-pay``, the official upto requests client buying the resource server's metered
  ``GET /metered?cost=C`` (the server settles C of the permitted ``UPTO_MAX``);
  ``upto-capture``, verify (holds ``UPTO_MAX``) then settle C < ``UPTO_MAX`` (the rest released);
  ``upto-over``, settle above the permitted amount: refused, nothing held or charged;
  ``upto-replay``, a settled Permit2 sent again to verify and settle: refused;
  ``upto-verify-only``, verify (holds ``UPTO_MAX``) never settled: the hold expires by itself.

Then the checks: every acknowledged payment is a settle of its amount (the price, or the upto
cost) in the ledger, and each payer's spending is exactly its acknowledged payments (0 lost, 0
charged unacknowledged, 0 overspend); nothing left held once the unsettled holds expired (an
upto capture below its maximum released the rest); every hold of the phase's payers resolved
exactly once; the audit clean; no HTTP 5xx from the facilitator or the resource server; every
replay and every settle above the permitted amount refused.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from gateway.wire import facilitator as wire
from gateway.wire.x402 import decode_header
from ledger.types import RESOLUTION_KINDS
from reliability.checks import Finding, Monitor, audit_ledger, settle_down
from reliability.deploy import Deployment
from tests.support.servers import run_wsgi_in_process

PRICE = 1000  # base units
UPTO_MAX = 5000  # what an upto payment permits, at most
ACTIONS = {
    "pay": 5,
    "race": 2,
    "replay": 1,
    "settle-only": 2,
    "verify-only": 1,
    "malformed": 1,
    "upto-pay": 2,
    "upto-capture": 2,
    "upto-over": 1,
    "upto-replay": 1,
    "upto-verify-only": 1,
}
RACERS = 4  # threads sending one payload at once
MALFORMED = [
    b"not json",
    b"[]",
    b'{"x402Version": 2}',
    b'{"x402Version": 1, "paymentPayload": {}, "paymentRequirements": {}}',
    b'{"x402Version": 2, "paymentPayload": {}, "paymentRequirements": {}}',
    b'{"x402Version": 2, "paymentPayload": {"x402Version": 2}, "paymentRequirements": {"scheme": "exact"}}',
    b"[" * 50_000,
    b"{" + b'"a": 1, ' * 2000 + b'"b": 2}',
]


@dataclass(frozen=True)
class FacilitatorSettings:
    duration: float
    clients: int
    wallets: int = 3
    initial_funds: str = "0.03"  # tokens per wallet: 30 payments of PRICE, so some run out


@dataclass
class Tally:
    """What the clients saw, shared by their threads (under ``lock``)."""

    lock: threading.Lock
    counts: Counter[str]
    acknowledged: list[tuple[str, str, int]]  # (payer, settle transaction id, amount)
    settled_payloads: list[dict[str, Any]]
    settled_upto: list[dict[str, Any]]  # settled Permit2 payloads, for upto-replay
    server_errors: list[str]
    replays_accepted: list[str]
    over_accepted: list[str] = field(default_factory=list)  # upto settles above the maximum that went through

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1


def run_facilitator(dep: Deployment, settings: FacilitatorSettings, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    env = dep.env
    names = [f"fac{i}" for i in range(settings.wallets)]
    for name in names:
        env.new_wallet(name, settings.initial_funds)
    payee = env.new_wallet("fac-shop")
    funded = {env.wallets[n].address: env.available(env.wallets[n]) for n in names}
    facilitator = env.url + "/facilitator"
    tally = Tally(threading.Lock(), Counter(), [], [], [], [], [])
    monitor = Monitor(dep, list(funded))
    with run_wsgi_in_process(
        "tests.support.x402_resource_server:create_resource_app",
        facilitator,
        env.network,
        env.chain.token_address,
        payee.address,
        PRICE,
        60,
        env.chain.name,
        env.chain.version,
        UPTO_MAX,
        ready_path="/health",
    ) as shop:
        requirements = {
            "scheme": "exact",
            "network": env.network,
            "asset": env.chain.token_address,
            "amount": str(PRICE),
            "payTo": payee.address,
            "maxTimeoutSeconds": 60,
            "extra": {"name": env.chain.name, "version": env.chain.version},
        }
        # What the official upto resource server sends for UPTO_MAX (its facilitatorAddress
        # copied from our /supported); at settle time it sends the cost as the amount.
        upto = {
            **requirements,
            "scheme": "upto",
            "amount": str(UPTO_MAX),
            "extra": {"facilitatorAddress": env.chain.sealer, "assetTransferMethod": "permit2"},
        }
        monitor.start()
        deadline = time.monotonic() + settings.duration
        started = time.monotonic()
        with ThreadPoolExecutor(settings.clients) as pool:
            for client in range(settings.clients):
                rng = random.Random(seed * 1000 + client)
                wallet = env.wallets[names[client % len(names)]]
                pool.submit(_client, dep, rng, wallet, shop.url, facilitator, (requirements, upto), deadline, tally)
        elapsed = time.monotonic() - started
        _every_malformed_body(facilitator, env.wallets[names[0]], shop.url, upto, tally)
        shop_log = shop.log_text()

    findings: list[Finding] = []
    settled = settle_down(dep, findings)
    monitor.stop()
    findings += monitor.findings
    figures = _check(dep, funded, tally, findings)
    if " 500 " in shop_log:
        findings.append(
            Finding("no_server_error", "the x402 resource server answered a 500 (its facilitator failed it)")
        )
    audited = audit_ledger(dep)
    if not audited["ok"] or audited["verifyExitCode"] != 0:
        findings.append(
            Finding("audit_ok", f"audit: {audited['problems'][:5]}, verify exit {audited['verifyExitCode']}")
        )
    result = {
        "durationSeconds": round(elapsed, 1),
        "clients": settings.clients,
        "wallets": settings.wallets,
        "operations": {
            "total": sum(v for k, v in tally.counts.items() if k.count(":") == 1),
            "perSecond": round(sum(v for k, v in tally.counts.items() if k.count(":") == 1) / elapsed, 1),
            "acknowledged": len(tally.acknowledged),
            "byActionAndOutcome": dict(sorted(tally.counts.items())),
        },
        **figures,
        "monitor": monitor.figures(),
        "settleDown": settled,
        "audit": audited,
        "findings": len(findings),
    }
    return result, findings


def _client(
    dep: Deployment,
    rng: random.Random,
    wallet: Any,
    shop_url: str,
    facilitator: str,
    offers: tuple[dict[str, Any], dict[str, Any]],
    deadline: float,
    tally: Tally,
) -> None:
    from x402 import x402ClientSync
    from x402.http.clients.requests import x402_requests
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.upto import UptoEvmScheme
    from x402.schemas import PaymentRequirements

    env = dep.env
    client = x402ClientSync()
    client.register("eip155:*", ExactEvmScheme(wallet.local_account()))
    client.set_spend_controls({"allowed_assets": [{"network": env.network, "asset": env.chain.token_address}]})
    buyer = x402_requests(client)
    upto_client = x402ClientSync()
    upto_client.register("eip155:*", UptoEvmScheme(wallet.local_account()))
    upto_client.set_spend_controls({"allowed_assets": [{"network": env.network, "asset": env.chain.token_address}]})
    upto_buyer = x402_requests(upto_client)
    upto_signer = UptoEvmScheme(wallet.local_account())
    requirements, upto = offers
    plain = requests.Session()
    actions, weights = list(ACTIONS), list(ACTIONS.values())

    def ask(op: str, payload: dict[str, Any], reqs: dict[str, Any] | None = None) -> dict[str, Any] | None:
        body: dict[str, Any] = {
            "x402Version": 2,
            "paymentPayload": payload,
            "paymentRequirements": reqs or requirements,
        }
        response = requests.post(f"{facilitator}/{op}", json=body, timeout=30)
        if response.status_code != 200:
            with tally.lock:
                tally.server_errors.append(f"{op}: {response.status_code} {response.text[:200]}")
            return None
        answer: dict[str, Any] = response.json()
        return answer

    def acknowledge(payer: str, answer: dict[str, Any], payload: dict[str, Any], amount: int = PRICE) -> None:
        with tally.lock:
            tally.acknowledged.append((payer, answer["transaction"], amount))
            upto_scheme = payload.get("accepted", {}).get("scheme") == "upto"
            (tally.settled_upto if upto_scheme else tally.settled_payloads).append(payload)

    def permit2(reqs: dict[str, Any] = upto) -> dict[str, Any]:
        """A v2 paymentPayload as the official upto client makes it, for UPTO_MAX."""
        inner = upto_signer.create_payment_payload(PaymentRequirements.model_validate(reqs))
        return {"x402Version": 2, "accepted": reqs, "payload": inner, "resource": {"url": shop_url + "/metered"}}

    def reason(answer: dict[str, Any] | None) -> str:
        if answer is None:
            return "error"
        return str(answer.get("errorReason") or answer.get("invalidReason") or "none")

    def signed(reqs: dict[str, Any] | None = None) -> dict[str, Any]:
        _, payload = env.payment(wallet, accepted=reqs or requirements)
        payload["resource"] = {"url": shop_url + "/paid"}
        return payload

    while time.monotonic() < deadline:
        action = rng.choices(actions, weights)[0]
        try:
            if action == "pay":
                paid = buyer.get(shop_url + "/paid", timeout=30)
                if paid.status_code == 200:
                    settlement = decode_header(paid.headers["PAYMENT-RESPONSE"])
                    with tally.lock:
                        tally.acknowledged.append((wallet.address, settlement["transaction"], PRICE))
                    tally.add("pay:ok")
                elif paid.status_code == 402:
                    tally.add("pay:refused")
                else:
                    tally.add("pay:error")
                    with tally.lock:
                        tally.server_errors.append(f"resource server: {paid.status_code} {paid.text[:200]}")
            elif action == "race":
                payload = signed()
                barrier = threading.Barrier(RACERS)

                def race(_: int, payload: dict[str, Any] = payload, barrier: threading.Barrier = barrier) -> bool:
                    barrier.wait(timeout=30)
                    verified = ask("verify", payload)
                    settled = ask("settle", payload)
                    return bool(verified and settled and settled["success"])

                with ThreadPoolExecutor(RACERS) as racers:
                    wins = sum(racers.map(race, range(RACERS)))
                if wins > 1:
                    tally.add("race:settled-twice")
                tally.add("race:ok" if wins == 1 else "race:refused")
                if wins:
                    # The winner's answer: the hold's settle, found again by a replay below.
                    answer = ask("settle", payload)
                    tx = (answer or {}).get("transaction", "")
                    with tally.lock:
                        tally.acknowledged.append((wallet.address, tx, PRICE))
                        tally.settled_payloads.append(payload)
            elif action == "replay":
                with tally.lock:
                    old = rng.choice(tally.settled_payloads) if tally.settled_payloads else None
                if old is None:
                    continue
                verified, settled = ask("verify", old), ask("settle", old)
                if (verified and verified["isValid"]) or (settled and settled["success"]):
                    with tally.lock:
                        tally.replays_accepted.append(json.dumps(old)[:300])
                tally.add("replay:refused" if verified and settled else "replay:error")
            elif action == "settle-only":
                payload = signed()
                answer = ask("settle", payload)
                if answer and answer["success"]:
                    acknowledge(wallet.address, answer, payload)
                tally.add(f"settle-only:{'ok' if answer and answer['success'] else 'refused'}")
            elif action == "verify-only":
                short = {**requirements, "maxTimeoutSeconds": 2}
                answer = ask("verify", signed(short), short)
                tally.add(f"verify-only:{'held' if answer and answer['isValid'] else 'refused'}")
            elif action == "upto-pay":
                cost = rng.randint(0, UPTO_MAX)
                paid = upto_buyer.get(shop_url + f"/metered?cost={cost}", timeout=30)
                if paid.status_code == 200:
                    settlement = decode_header(paid.headers["PAYMENT-RESPONSE"])
                    if settlement.get("amount") != str(cost):
                        with tally.lock:
                            tally.server_errors.append(f"upto-pay: settled {settlement.get('amount')} for cost {cost}")
                    with tally.lock:
                        tally.acknowledged.append((wallet.address, settlement["transaction"], cost))
                        tally.counts["upto base units"] += cost
                    tally.add("upto-pay:ok")
                elif paid.status_code == 402:
                    tally.add("upto-pay:refused")
                else:
                    tally.add("upto-pay:error")
                    with tally.lock:
                        tally.server_errors.append(f"resource server (upto): {paid.status_code} {paid.text[:200]}")
            elif action == "upto-capture":
                payload, cost = permit2(), rng.randint(0, UPTO_MAX - 1)
                verified = ask("verify", payload, upto)
                if not (verified and verified["isValid"]):
                    tally.add(f"upto-capture:refused-{reason(verified)}")
                    continue
                answer = ask("settle", payload, {**upto, "amount": str(cost)})
                if answer and answer["success"]:
                    if answer.get("amount") != str(cost):
                        with tally.lock:
                            tally.server_errors.append(f"upto-capture: settled {answer.get('amount')} for {cost}")
                    acknowledge(wallet.address, answer, payload, cost)
                    with tally.lock:
                        tally.counts["upto base units"] += cost
                tally.add(f"upto-capture:{'ok' if answer and answer['success'] else 'refused'}")
            elif action == "upto-over":
                payload = permit2()
                answer = ask("settle", payload, {**upto, "amount": str(UPTO_MAX + rng.randint(1, 10**6))})
                if answer and answer["success"]:
                    with tally.lock:
                        tally.over_accepted.append(json.dumps(answer)[:300])
                        tally.acknowledged.append((wallet.address, answer["transaction"], int(answer["amount"])))
                elif reason(answer) != wire.ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT:
                    with tally.lock:
                        tally.server_errors.append(f"upto-over: refused for {reason(answer)}")
                tally.add(f"upto-over:{'accepted' if answer and answer['success'] else 'refused'}")
            elif action == "upto-replay":
                with tally.lock:
                    old = rng.choice(tally.settled_upto) if tally.settled_upto else None
                if old is None:
                    continue
                cost = rng.randint(0, UPTO_MAX)
                verified, settled = ask("verify", old, upto), ask("settle", old, {**upto, "amount": str(cost)})
                if (verified and verified["isValid"]) or (settled and settled["success"]):
                    with tally.lock:
                        tally.replays_accepted.append(json.dumps(old)[:300])
                tally.add("upto-replay:refused" if verified and settled else "upto-replay:error")
            elif action == "upto-verify-only":
                short = {**upto, "maxTimeoutSeconds": 2}
                payload = permit2(short)
                answer = ask("verify", payload, short)
                tally.add(f"upto-verify-only:{'held' if answer and answer['isValid'] else 'refused'}")
            else:
                body = rng.choice(MALFORMED + _malformed_permit2(permit2(), upto))
                response = plain.post(
                    f"{facilitator}/{rng.choice(['verify', 'settle'])}",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                if response.status_code >= 500:
                    with tally.lock:
                        tally.server_errors.append(f"malformed: {response.status_code} {response.text[:200]}")
                tally.add(f"malformed:{response.status_code}")
        except (requests.RequestException, ValueError, KeyError) as exc:
            tally.add(f"{action}:error")
            with tally.lock:
                tally.server_errors.append(f"{action}: {type(exc).__name__}: {exc}"[:300])


def _check(dep: Deployment, funded: dict[str, int], tally: Tally, findings: list[Finding]) -> dict[str, Any]:
    """Money: acknowledged payments against the ledger; holds: each resolved once."""
    env = dep.env
    acknowledged: Counter[str] = Counter()  # base units, by payer
    lost = 0
    for payer, tx_id, amount in tally.acknowledged:
        stored = env.store.get(tx_id) if tx_id else None
        message = getattr(stored.tx, "message", None) if stored else None
        if stored is None or stored.tx.kind != "settle" or getattr(message, "amount", None) != amount:
            lost += 1
            findings.append(Finding("no_lost_acknowledged_payment", f"acknowledged {tx_id!r} is no settle of {amount}"))
        acknowledged[payer] += amount
    overspend = unacknowledged = still_held = 0
    holds = resolved_twice = open_holds = expired = 0
    for payer, start in funded.items():
        account = env.account(payer)
        spent = start - account.available - account.held
        if spent > start:
            overspend = max(overspend, spent - start)
        if spent != acknowledged[payer]:
            unacknowledged += abs(spent - acknowledged[payer])
            findings.append(
                Finding(
                    "charged_exactly_the_acknowledged",
                    f"{payer} spent {spent}, acknowledged payments of {acknowledged[payer]} base units",
                )
            )
        # Every hold is settled or expired by now: an upto capture below its maximum must have
        # released the rest, so nothing may stay held.
        if account.held:
            still_held += account.held
            findings.append(Finding("the_rest_released", f"{payer} still has {account.held} base units held"))
        history = env.history(payer, 100_000)
        resolutions: Counter[str] = Counter()
        for stored in history:
            if stored.tx.kind in RESOLUTION_KINDS:
                resolutions[str(getattr(stored.tx.message, "hold_id", ""))] += 1
        for stored in history:
            if stored.tx.kind not in ("hold", "permit2_hold"):
                continue
            holds += 1
            row = env.store.hold(stored.tx_id)
            if row is None or row.status == "open":
                open_holds += 1
                findings.append(Finding("every_hold_resolved_once", f"hold {stored.tx_id} still open"))
            elif row.status == "expire":
                expired += 1
            if row is not None and resolutions[stored.tx_id] > 1:
                resolved_twice += 1
                findings.append(Finding("every_hold_resolved_once", f"hold {stored.tx_id} resolved twice"))
    never_settled = tally.counts["verify-only:held"] + tally.counts["upto-verify-only:held"]
    if expired != never_settled:  # those, and only those, are never settled
        findings.append(Finding("unsettled_holds_expire", f"{expired} holds expired, {never_settled} never settled"))
    if overspend:
        findings.append(Finding("no_overspend", f"a payer spent {overspend} base units more than it had"))
    for error in tally.server_errors[:20]:
        findings.append(Finding("no_server_error", error))
    for replay in tally.replays_accepted[:20]:
        findings.append(Finding("replays_refused", f"a settled payload was accepted again: {replay}"))
    for accepted in tally.over_accepted[:20]:
        findings.append(Finding("upto_settle_above_the_maximum_refused", f"settled above the permit: {accepted}"))
    if tally.counts["race:settled-twice"]:
        findings.append(Finding("one_settle_per_payload", f"{tally.counts['race:settled-twice']} races settled twice"))
    return {
        "money": {
            "acknowledgedPayments": len(tally.acknowledged),
            "lostAcknowledged": lost,
            "chargedUnacknowledgedBaseUnits": unacknowledged,
            "overspendBaseUnits": overspend,
            "leftHeldBaseUnits": still_held,
        },
        "upto": {
            "paid": tally.counts["upto-pay:ok"],
            "captured": tally.counts["upto-capture:ok"],
            "capturedBaseUnits": tally.counts["upto base units"],
            "settlesAboveMaximum": tally.counts["upto-over:refused"] + tally.counts["upto-over:accepted"],
            "settlesAboveMaximumAccepted": len(tally.over_accepted),
            "replays": tally.counts["upto-replay:refused"] + tally.counts["upto-replay:error"],
        },
        "holds": {"placed": holds, "open": open_holds, "expired": expired, "resolvedMoreThanOnce": resolved_twice},
        "replays": {
            "sent": sum(
                tally.counts[f"{kind}:{outcome}"]
                for kind in ("replay", "upto-replay")
                for outcome in ("refused", "error")
            ),
            "accepted": len(tally.replays_accepted),
        },
        "serverErrors": len(tally.server_errors),
    }


def _every_malformed_body(facilitator: str, wallet: Any, shop_url: str, upto: dict[str, Any], tally: Tally) -> None:
    """Each malformed body once to verify and once to settle, whatever the dice drew."""
    from x402.mechanisms.evm.upto import UptoEvmScheme
    from x402.schemas import PaymentRequirements

    inner = UptoEvmScheme(wallet.local_account()).create_payment_payload(PaymentRequirements.model_validate(upto))
    good = {"x402Version": 2, "accepted": upto, "payload": inner, "resource": {"url": shop_url + "/metered"}}
    for body in MALFORMED + _malformed_permit2(good, upto):
        for op in ("verify", "settle"):
            response = requests.post(
                f"{facilitator}/{op}", data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            if response.status_code >= 500 or (response.status_code == 200 and response.json().get("success")):
                with tally.lock:
                    tally.server_errors.append(f"malformed sweep: {response.status_code} {response.text[:200]}")
            tally.add(f"malformed-sweep:{response.status_code}")


def _malformed_permit2(good: dict[str, Any], upto: dict[str, Any]) -> list[bytes]:
    """Upto bodies with broken insides: a real Permit2 payload, one field spoiled after signing."""

    def spoiled(path: tuple[str, ...], value: Any) -> bytes:
        payload = json.loads(json.dumps(good))
        target = payload
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return json.dumps({"x402Version": 2, "paymentPayload": payload, "paymentRequirements": upto}).encode()

    auth = ("payload", "permit2Authorization")
    return [
        spoiled((*auth, "permitted", "amount"), "-1"),
        spoiled((*auth, "permitted", "amount"), str(2**256)),
        spoiled((*auth, "nonce"), "0x"),
        spoiled((*auth, "deadline"), 1.5),
        spoiled((*auth, "witness"), None),
        spoiled((*auth, "spender"), ["not", "an", "address"]),
        spoiled(("payload", "signature"), "0x" + "zz" * 65),
        spoiled(("payload", "signature"), 12),
        spoiled(auth, _DELETE),
        spoiled(("payload",), "permit2"),
        spoiled(("accepted", "amount"), "5000.5"),
    ]


_DELETE = object()

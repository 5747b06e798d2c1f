"""The attack campaign against the live gateway: every attack tried many times, each refusal
counted, and the ledger shown unchanged by all the refused ones.

Refused at the gateway (``env.quiet_dump()`` before and after: byte-for-byte the same ledger):
replays (in turn, on another route, with another body, as a malleated high-S twin), other chain
id / domain name / version / verifying contract, a wrong network, expired and future windows,
a payment that claims one wallet and is signed by another, too little, the wrong payee, no funds,
API keys past their cap, expired, revoked, unknown or made out to another payee, and replayed or
forged transfers. Charged exactly once: the same payment sent by many threads at the same moment.
Refused by the client SDK (``reliability.mitm``): forged and replayed receipts, a raised price,
tampered inclusion and consistency proofs, a rolled-back or forged head.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from gateway.client import PaymentAuth, check_consistency, fetch_head, receipt_of, verify_receipt_inclusion
from gateway.wire.x402 import PaymentPayload, PaymentRequirement, encode_header
from ledger.errors import InferpayError
from reliability.checks import Finding
from reliability.deploy import Deployment
from reliability.mitm import HISTORY_LIES, PROOF_LIES, RECEIPT_LIES, LyingGateway
from reliability.profiles import Profile
from tests.support.gateway import FLAT, FLAT2, FLAT_PRICE, GatewayEnv, high_s_twin
from wallets.wallet import Wallet

BODY = b'{"attack": "payload"}'
OTHER_BODY = b'{"attack": "cheaper payload"}'


@dataclass
class Attack:
    name: str
    expected: set[str]
    tried: int = 0
    refused: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tried": self.tried,
            "refused": self.refused,
            "expected": sorted(self.expected),
            "got": dict(self.codes),
        }


class Campaign:
    def __init__(self, dep: Deployment, profile: Profile) -> None:
        self.dep = dep
        self.env: GatewayEnv = dep.env
        self.rounds = profile.attack_rounds
        self.concurrent = profile.concurrent_replays
        self.attacks: dict[str, Attack] = {}
        self.findings: list[Finding] = []
        self.session = requests.Session()

    def attack(self, name: str, expected: set[str], send: Callable[[], requests.Response]) -> None:
        """One attempt: refused means a 4xx whose error code is one of ``expected``."""
        record = self.attacks.setdefault(name, Attack(name, set()))
        record.expected |= expected
        record.tried += 1
        response = send()
        code = _code(response)
        record.codes[f"{response.status_code} {code}"] += 1
        if 400 <= response.status_code < 500 and code in expected:
            record.refused += 1
        else:
            self.findings.append(
                Finding(
                    "attack_refused", f"{name}: answered {response.status_code} {code}", {"body": response.text[:300]}
                )
            )

    def post(self, path: str, header: str, body: bytes = BODY, name: str = "PAYMENT-SIGNATURE") -> requests.Response:
        return self.session.post(
            self.env.route_url(path), data=body, timeout=30, headers={name: header, "Content-Type": "application/json"}
        )

    def pay(self, wallet: Wallet, **kw: Any) -> str:
        return self.env.payment(wallet, FLAT, **kw)[0]


def run_attacks(dep: Deployment, profile: Profile, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    env = dep.env
    c = Campaign(dep, profile)
    alice = env.new_wallet("atk_alice", "5")
    carol = env.new_wallet("atk_carol", "5")
    poor = env.new_wallet("atk_poor", "0.0005")  # less than any price
    chain = env.chain
    started = time.monotonic()

    # Payments and keys the refused attacks will reuse, made (and charged) before the window.
    used_bound, used_plain = [], []
    for _ in range(c.rounds):
        header = c.pay(alice, bind=("POST", FLAT, BODY))
        used_bound.append(header)
        plain = c.pay(alice)
        used_plain.append(plain)
        for sent in (c.post(FLAT, header), c.post(FLAT, plain)):
            if sent.status_code != 200:
                c.findings.append(Finding("attack_setup", f"a legitimate payment failed: {sent.text[:200]}"))
    used_transfers = []
    for _ in range(c.rounds):
        auth, signature = alice.authorize_transfer(chain, carol.address, 1000)
        body = {"authorization": auth.to_dict(), "signature": signature}
        c.session.post(env.ledger_url + "/transfers", json=body, timeout=30)
        used_transfers.append(body)
    tiny = env.create_key("atk_alice", "0.001", "1h")  # one flat call
    c.session.post(env.route_url(FLAT), data=BODY, headers=_bearer(tiny["apiKey"]), timeout=30)
    expiring = env.create_key("atk_alice", "1", "2s")
    revoked = env.create_key("atk_alice", "1", "1h")
    env.cli("key", "revoke", revoked["apiKey"][:12])
    env.cli("wallet", "create", "atk_other_payee")
    other_payee = env.cli(
        "key",
        "create",
        "--wallet",
        "atk_alice",
        "--cap",
        "1",
        "--expires",
        "1h",
        "--pay-to",
        "atk_other_payee",
        "--json",
    )
    elsewhere = json.loads(other_payee.stdout)
    time.sleep(max(0.0, expiring["validBefore"] - time.time()) + 1.1)

    before = env.quiet_dump()
    window = time.monotonic()
    requirement = env.requirement(FLAT)
    for i in range(c.rounds):
        bound, plain = used_bound[i], used_plain[i]
        c.attack("replay_in_turn", {"payment_already_used"}, lambda h=bound: c.post(FLAT, h))
        c.attack("replay_in_turn", {"payment_already_used"}, lambda h=plain: c.post(FLAT, h))
        c.attack(
            "replay_on_another_route", {"payment_already_used", "binding_mismatch"}, lambda h=bound: c.post(FLAT2, h)
        )
        c.attack("replay_on_another_route", {"payment_already_used"}, lambda h=plain: c.post(FLAT2, h))
        c.attack("replay_with_another_body", {"binding_mismatch"}, lambda h=bound: c.post(FLAT, h, OTHER_BODY))
        c.attack("replay_with_another_body", {"payment_already_used"}, lambda h=plain: c.post(FLAT, h, OTHER_BODY))
        c.attack("replay_as_v1_x_payment", {"payment_already_used"}, lambda h=plain: c.post(FLAT, h, name="X-PAYMENT"))
        c.attack(
            "malleated_signature_replayed",
            {"high_s_signature", "payment_already_used"},
            lambda h=plain: c.post(FLAT, _twin(h)),
        )
        c.attack(
            "malleated_signature_fresh", {"high_s_signature"}, lambda: c.post(FLAT, c.pay(alice, signature=high_s_twin))
        )
        c.attack(
            "another_chain_id",
            {"invalid_signature"},
            lambda: c.post(FLAT, c.pay(alice, chain=replace(chain, chain_id=chain.chain_id + 1))),
        )
        c.attack(
            "another_domain_name",
            {"invalid_signature"},
            lambda: c.post(FLAT, c.pay(alice, chain=replace(chain, name="USD Coin"))),
        )
        c.attack(
            "another_domain_version",
            {"invalid_signature"},
            lambda: c.post(FLAT, c.pay(alice, chain=replace(chain, version="2"))),
        )
        c.attack(
            "another_verifying_contract",
            {"invalid_signature"},
            lambda: c.post(FLAT, c.pay(alice, chain=replace(chain, token_address=carol.address))),
        )
        c.attack(
            "another_network",
            {"wrong_network"},
            lambda: c.post(FLAT, c.pay(alice, accepted={**requirement, "network": "eip155:8453"})),
        )
        now = int(time.time())
        c.attack(
            "expired_window",
            {"authorization_expired"},
            lambda n=now: c.post(FLAT, c.pay(alice, valid_after=n - 120, valid_before=n - 1)),
        )
        c.attack(
            "future_window",
            {"not_yet_valid"},
            lambda n=now: c.post(FLAT, c.pay(alice, valid_after=n + 300, valid_before=n + 360)),
        )
        c.attack(
            "signed_by_another_wallet",
            {"invalid_signature"},
            lambda: c.post(FLAT, _impersonate(env, victim=carol, signer=alice, requirement=requirement)),
        )
        c.attack("too_little", {"amount_too_low"}, lambda: c.post(FLAT, c.pay(alice, value=FLAT_PRICE - 1)))
        c.attack("wrong_payee", {"wrong_payee"}, lambda: c.post(FLAT, c.pay(alice, to=carol.address)))
        c.attack("no_funds", {"insufficient_funds"}, lambda: c.post(FLAT, c.pay(poor)))
        c.attack("api_key_past_its_cap", {"allowance_exhausted"}, lambda: _key_call(c, tiny["apiKey"]))
        c.attack("api_key_expired", {"allowance_expired"}, lambda: _key_call(c, expiring["apiKey"]))
        c.attack("api_key_revoked", {"invalid_api_key"}, lambda: _key_call(c, revoked["apiKey"]))
        c.attack("api_key_unknown", {"invalid_api_key"}, lambda: _key_call(c, "ipk_" + secrets.token_urlsafe(32)))
        c.attack("api_key_for_another_payee", {"invalid_api_key"}, lambda: _key_call(c, elsewhere["apiKey"]))
        body = used_transfers[i]
        c.attack(
            "transfer_malleated",
            {"high_s_signature"},
            lambda b=body: _transfer(c, {**b, "signature": high_s_twin(b["signature"])}),
        )
        c.attack(
            "transfer_claiming_another_wallet",
            {"invalid_signature"},
            lambda: _transfer(c, _claimed_transfer(env, victim=carol, signer=alice)),
        )
    replays = _transfer_replays(c, used_transfers)
    window_seconds = time.monotonic() - window
    after = env.quiet_dump()
    if before != after:
        changed = len(set(before) ^ set(after))
        c.findings.append(Finding("refused_attacks_change_nothing", f"the ledger changed: {changed} dump lines differ"))

    concurrent = _concurrent_replays(c, alice)
    lies = _lies(c, alice)
    refusals = {name: a.to_dict() for name, a in sorted(c.attacks.items())}
    tried = sum(a.tried for a in c.attacks.values()) + concurrent["tried"] + lies["tried"] + replays["tried"]
    refused = sum(a.refused for a in c.attacks.values()) + concurrent["refused"] + lies["refused"] + replays["refused"]
    c.session.close()
    figures = {
        "tried": tried,
        "refused": refused,
        "ledgerUnchangedByRefusedAttacks": before == after,
        "refusedAtTheGateway": refusals,
        "transferReplays": replays,
        "concurrentReplays": concurrent,
        "refusedByTheClientSdk": lies["byLie"],
        "windowSeconds": round(window_seconds, 1),
        "durationSeconds": round(time.monotonic() - started, 1),
    }
    return figures, c.findings


def _code(response: requests.Response) -> str | None:
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    return error.get("code") if isinstance(error, dict) else None


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _key_call(c: Campaign, key: str) -> requests.Response:
    return c.session.post(c.env.route_url(FLAT), data=BODY, headers=_bearer(key), timeout=30)


def _transfer(c: Campaign, body: dict[str, Any]) -> requests.Response:
    return c.session.post(c.env.ledger_url + "/transfers", json=body, timeout=30)


def _twin(header: str) -> str:
    """The same payment with its signature replaced by the high-S twin (r, n - s)."""
    payment = PaymentPayload.from_header(header)
    return encode_header(replace(payment, signature=high_s_twin(payment.signature)).to_dict())


def _impersonate(env: GatewayEnv, *, victim: Wallet, signer: Wallet, requirement: dict[str, Any]) -> str:
    """An authorization that says ``from: victim``, signed (exactly over that) by ``signer``."""
    auth, _ = victim.authorize_transfer(env.chain, requirement["payTo"], int(requirement["amount"]))
    payload = PaymentPayload(
        2,
        auth,
        signer.sign(env.chain, auth),
        requirement["scheme"],
        requirement["network"],
        PaymentRequirement.from_dict(requirement),
    )
    return encode_header(payload.to_dict())


def _claimed_transfer(env: GatewayEnv, *, victim: Wallet, signer: Wallet) -> dict[str, Any]:
    auth, _ = victim.authorize_transfer(env.chain, signer.address, 1000)
    return {"authorization": auth.to_dict(), "signature": signer.sign(env.chain, auth)}


def _transfer_replays(c: Campaign, used: list[dict[str, Any]]) -> dict[str, Any]:
    """A transfer submitted again is answered with its first result (idempotent), never applied twice."""
    tried = refused = 0
    for body in used:
        tried += 1
        response = _transfer(c, body)
        if response.status_code == 200 and response.json().get("duplicate") is True:
            refused += 1
        else:
            c.findings.append(
                Finding(
                    "attack_refused", f"transfer replay answered {response.status_code}", {"body": response.text[:300]}
                )
            )
    return {"tried": tried, "refused": refused, "answer": "200 duplicate=true (the first result, applied once)"}


def _concurrent_replays(c: Campaign, wallet: Wallet) -> dict[str, Any]:
    """One payment sent by many threads at the same moment: charged exactly once."""
    tried = refused = 0
    for _ in range(c.rounds):
        header = c.pay(wallet, bind=("POST", FLAT, BODY))
        c.env.wait_quiet()
        before = c.env.available(wallet)
        barrier = threading.Barrier(c.concurrent)
        answers: list[requests.Response] = []

        def send(h: str = header, barrier: threading.Barrier = barrier, answers: list[Any] = answers) -> None:
            barrier.wait(30)
            answers.append(
                requests.post(
                    c.env.route_url(FLAT),
                    data=BODY,
                    timeout=30,
                    headers={"PAYMENT-SIGNATURE": h, "Content-Type": "application/json"},
                )
            )

        threads = [threading.Thread(target=send) for _ in range(c.concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        c.env.wait_quiet()
        ok = [a for a in answers if a.status_code == 200]
        again = [a for a in answers if a.status_code == 402 and _code(a) == "payment_already_used"]
        tried += c.concurrent - 1
        refused += len(again) if len(ok) == 1 else 0
        charged = before - c.env.available(wallet)
        if len(ok) != 1 or len(again) != c.concurrent - 1 or charged != FLAT_PRICE:
            c.findings.append(Finding("charged_once", f"{len(ok)} accepted, {len(again)} refused, {charged} charged"))
    return {"tried": tried, "refused": refused, "threadsPerPayment": c.concurrent}


def _lies(c: Campaign, wallet: Wallet) -> dict[str, Any]:
    """The SDK against a gateway that lies: every lie refused, the truth accepted."""
    env, chain = c.env, c.env.chain
    liar = LyingGateway(env.url)
    auth = PaymentAuth(wallet, trusted_sealer=chain.sealer)
    by_lie: dict[str, dict[str, int]] = {}
    tried = refused = 0

    def expect_refusal(lie: str, attempt: Callable[[], Any]) -> None:
        nonlocal tried, refused
        liar.mode = lie
        record = by_lie.setdefault(lie, {"tried": 0, "refused": 0})
        record["tried"] += 1
        tried += 1
        try:
            attempt()
        except InferpayError as exc:
            if exc.code in ("receipt_invalid", "not_found"):
                record["refused"] += 1
                refused += 1
                return
            c.findings.append(Finding("sdk_refuses_lies", f"{lie}: raised {exc.code}: {exc.message}"))
            return
        c.findings.append(
            Finding(
                "sdk_refuses_lies",
                f"{lie}: the SDK accepted it",
                {"defect": "receipt-not-bound-to-payment"} if lie == "receipt_replayed" else {},
            )
        )

    try:
        for _ in range(c.rounds):
            liar.mode = "pass"
            truth = requests.post(liar.url + FLAT, json={"truth": 1}, auth=auth, timeout=30)
            receipt = receipt_of(truth)
            pinned = fetch_head(liar.url + "/ledger", chain)
            verify_receipt_inclusion(liar.url + "/ledger", receipt, chain)  # the truth is accepted
            for lie in RECEIPT_LIES:
                expect_refusal(lie, lambda: requests.post(liar.url + FLAT, json={"lie": 1}, auth=auth, timeout=30))
            before = env.available(wallet)
            expect_refusal("offer_raised", lambda: requests.post(liar.url + FLAT, json={"x": 1}, auth=auth, timeout=30))
            if env.available(wallet) != before:
                c.findings.append(Finding("sdk_refuses_lies", "the SDK paid a price the sealer never offered"))
            for lie in PROOF_LIES:
                expect_refusal(lie, lambda r=receipt: verify_receipt_inclusion(liar.url + "/ledger", r, chain))
            requests.post(liar.url + FLAT, json={"later": 1}, auth=auth, timeout=30)  # the head moves on
            env.wait_quiet()
            liar.mode = "pass"
            check_consistency(liar.url + "/ledger", pinned, chain)  # the truth is accepted
            for lie in HISTORY_LIES:
                expect_refusal(lie, lambda p=pinned: check_consistency(liar.url + "/ledger", p, chain))
    finally:
        liar.close()
    return {"tried": tried, "refused": refused, "byLie": by_lie}

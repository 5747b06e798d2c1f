"""x402 ``upto`` (Permit2) end to end, on the real gateway (gunicorn, 2 workers):

1. an unmodified official x402 Flask resource server (its own process) registering
   ``UptoEvmServerScheme`` for our network, facilitated by ours, paid by the unmodified
   official x402 requests client with the upto scheme: 402 -> pay -> 200, the payer debited
   exactly the settled (metered) amount, the payee credited it, a replay refused;
2. the facilitator directly: /verify holds the permitted maximum, /settle captures the cost
   (the rest released), upfront settle, a zero-cost settle, settles above the maximum, twin
   settles of other amounts, a hold the paid proxy placed, payment-identifier;
3. forged or altered Permit2s (wrong token, witness.to, facilitator, spender, chain, network,
   an expired deadline, validAfter ahead, high-S, a reused nonce, ...) refused as HTTP 200s
   with the SDK's reasons, the ledger byte-for-byte unchanged;
4. the official upto client paying a metered route of the gateway itself, unmodified: charged
   the metered cost, not the maximum; the official exact client likewise; forged Permit2s
   refused by the paid proxy with their codes, nothing written.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.wire import facilitator as wire
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header, encode_header
from ledger.types import UPTO_PERMIT2_PROXY_ADDRESS, Permit2Authorization
from tests.support.gateway import (
    EMBED,
    EMBED_MAX,
    EMBED_MODEL,
    FLAT,
    GatewayEnv,
    embed_cost,
    error_code,
    high_s_twin,
    start_gateway_env,
)
from tests.support.servers import run_wsgi_in_process
from wallets.wallet import Wallet

PRICE = 1000  # the resource server's exact route
MAX = 5000  # what an upto payment permits, at most
COST = 1234  # what the call turned out to cost


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-upto"))) as started:
        yield started


def facilitator_url(env: GatewayEnv) -> str:
    return env.url + "/facilitator"


def requirements(env: GatewayEnv, **override: Any) -> dict[str, Any]:
    """What the SDK's upto resource server sends as paymentRequirements for MAX, paid to bob."""
    base = {
        "scheme": "upto",
        "network": env.network,
        "asset": env.chain.token_address,
        "amount": str(MAX),
        "payTo": env.bob.address,
        "maxTimeoutSeconds": 60,
        "extra": {"facilitatorAddress": env.chain.sealer, "assetTransferMethod": "permit2"},
    }
    return {**base, **override}


def sdk_payload(payer: Wallet, reqs: dict[str, Any]) -> dict[str, Any]:
    """A v2 paymentPayload as the official client makes it: the unmodified upto client's payload."""
    from x402.mechanisms.evm.upto import UptoEvmScheme
    from x402.schemas import PaymentRequirements

    inner = UptoEvmScheme(payer.local_account()).create_payment_payload(PaymentRequirements.model_validate(reqs))
    return {"x402Version": 2, "accepted": reqs, "payload": inner, "resource": {"url": "http://resource.test/metered"}}


def forged_payload(env: GatewayEnv, payer: Wallet, reqs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Permit2 as the client would sign it for ``reqs``, with ``fields`` changed *before*
    signing (``chain`` signs under another chain's domain); signed by ``payer``."""
    chain = fields.pop("chain", env.chain)
    permit = Permit2Authorization(
        from_=payer.address,
        token=env.chain.token_address,
        amount=int(reqs["amount"]),
        spender=UPTO_PERMIT2_PROXY_ADDRESS,
        nonce=secrets.randbits(256),
        deadline=int(time.time()) + 60,
        to=reqs["payTo"],
        facilitator=env.chain.sealer,
        valid_after=0,
    )
    permit = dataclasses.replace(permit, **fields)
    inner = {"permit2Authorization": permit.to_dict(), "signature": payer.sign(chain, permit)}
    return {"x402Version": 2, "accepted": reqs, "payload": inner, "resource": {"url": "http://resource.test/metered"}}


def ask(env: GatewayEnv, op: str, payload: dict[str, Any], reqs: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": reqs or requirements(env)}
    response = requests.post(f"{facilitator_url(env)}/{op}", json=body, timeout=30)
    assert response.status_code == 200, response.text  # a refusal, too, is a 200
    answer: dict[str, Any] = response.json()
    return answer


def at_cost(env: GatewayEnv, cost: int) -> dict[str, Any]:
    """The settle-time requirements: the SDK's server sends its settlement override as the amount."""
    return requirements(env, amount=str(cost))


def funds(env: GatewayEnv, *who: Wallet) -> list[tuple[int, int]]:
    return [(env.account(w).available, env.account(w).held) for w in who]


def upto_client(payer: Wallet, env: GatewayEnv, scheme: str = "upto") -> requests.Session:
    from x402 import x402ClientSync
    from x402.http.clients.requests import x402_requests
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.upto import UptoEvmScheme

    client = x402ClientSync()
    signer = payer.local_account()
    # Both wrap an eth-account LocalAccount themselves; only their annotations say ClientEvmSigner.
    client.register("eip155:*", UptoEvmScheme(signer) if scheme == "upto" else ExactEvmScheme(signer))  # type: ignore[arg-type]
    client.set_spend_controls({"allowed_assets": [{"network": env.network, "asset": env.chain.token_address}]})
    return x402_requests(client)


# ---- 1. the official resource server and the official upto client, unmodified ----


def test_official_resource_server_and_upto_client_pay_the_metered_cost(env: GatewayEnv) -> None:
    from x402.schemas import SettleResponse

    payee = env.new_wallet("upto-shop")
    with run_wsgi_in_process(
        "tests.support.x402_resource_server:create_resource_app",
        facilitator_url(env),
        env.network,
        env.chain.token_address,
        payee.address,
        PRICE,
        60,
        env.chain.name,
        env.chain.version,
        MAX,
        ready_path="/health",
    ) as shop:
        unpaid = requests.get(shop.url + f"/metered?cost={COST}", timeout=30)
        assert unpaid.status_code == 402, unpaid.text
        offered = decode_header(unpaid.headers["PAYMENT-REQUIRED"])["accepts"][0]
        assert (offered["scheme"], offered["network"], offered["asset"], offered["amount"]) == (
            "upto",
            env.network,
            env.chain.token_address,
            str(MAX),
        )
        assert offered["extra"]["facilitatorAddress"] == env.chain.sealer  # copied from our /supported
        session = upto_client(env.alice, env)
        (alice, alice_held), (shop_funds, _) = funds(env, env.alice, payee)

        paid = session.get(shop.url + f"/metered?cost={COST}", timeout=30)

        assert paid.status_code == 200, (paid.status_code, paid.text, shop.log_text()[-2000:])
        assert paid.json() == {"forecast": "a week of sun", "cost": str(COST)}
        assert funds(env, env.alice, payee) == [(alice - COST, alice_held), (shop_funds + COST, 0)]
        settlement = SettleResponse.model_validate(decode_header(paid.headers["PAYMENT-RESPONSE"]))
        assert settlement.success and settlement.amount == str(COST) and settlement.payer == env.alice.address
        settle_tx = env.ledger.transaction(settlement.transaction).tx
        assert settle_tx.kind == "settle" and settle_tx.message.amount == COST  # type: ignore[union-attr]
        hold_tx = env.ledger.transaction(settle_tx.message.hold_id).tx  # type: ignore[union-attr]
        assert hold_tx.kind == "permit2_hold" and hold_tx.message.amount == MAX  # type: ignore[union-attr]
        assert settlement.extensions is not None
        receipt = Receipt.from_dict(settlement.extensions["inferpay"]["receipt"])
        receipt.verify(env.chain.sealer)
        assert (receipt.charged, receipt.authorized, receipt.pay_to) == (COST, MAX, payee.address)

        # The very payment the client sent, replayed: refused, nothing charged.
        header = paid.request.headers["PAYMENT-SIGNATURE"]
        replay = requests.get(shop.url + f"/metered?cost={COST}", headers={"PAYMENT-SIGNATURE": header}, timeout=30)
        assert replay.status_code == 402, replay.text
        assert funds(env, env.alice, payee) == [(alice - COST, alice_held), (shop_funds + COST, 0)]

        # The exact route of the same server still takes exact.
        assert upto_client(env.alice, env, "exact").get(shop.url + "/paid", timeout=30).status_code == 200
    env.wait_quiet()
    env.audit_ok()


# ---- 2. the facilitator: hold the maximum, capture the cost ----


def test_verify_holds_the_maximum_and_settle_captures_the_cost(env: GatewayEnv) -> None:
    payload = sdk_payload(env.alice, requirements(env))
    (alice, held), (bob, _) = funds(env, env.alice, env.bob)

    verified = ask(env, "verify", payload)
    assert verified == {"isValid": True, "payer": env.alice.address}
    assert ask(env, "verify", payload)["isValid"] is True  # the same hold, found again
    assert funds(env, env.alice)[0] == (alice - MAX, held + MAX)

    settled = ask(env, "settle", payload, at_cost(env, COST))
    assert settled["success"] is True, settled
    assert (settled["amount"], settled["payer"], settled["network"]) == (str(COST), env.alice.address, env.network)
    assert funds(env, env.alice, env.bob) == [(alice - COST, held), (bob + COST, 0)]
    receipt = Receipt.from_dict(settled["extensions"]["inferpay"]["receipt"])
    receipt.verify(env.chain.sealer)
    assert (receipt.tx_id, receipt.charged, receipt.authorized) == (settled["transaction"], COST, MAX)
    nonce = int(payload["payload"]["permit2Authorization"]["nonce"])
    assert receipt.nonce == "0x" + nonce.to_bytes(32, "big").hex()

    again = ask(env, "settle", payload, at_cost(env, COST))
    assert (again["success"], again["errorReason"], again["transaction"]) == (
        False,
        "duplicate_settlement",
        settled["transaction"],
    )
    other = ask(env, "settle", payload, at_cost(env, COST + 1))  # another amount: still settled once
    assert other["errorReason"] == "duplicate_settlement"
    assert ask(env, "verify", payload)["invalidReason"] == wire.ERR_PERMIT2_INVALID_NONCE
    assert funds(env, env.alice, env.bob) == [(alice - COST, held), (bob + COST, 0)]


@pytest.mark.parametrize("cost", [COST, MAX, 0])
def test_settle_without_verify_holds_and_captures_in_one_step(env: GatewayEnv, cost: int) -> None:
    payload = sdk_payload(env.alice, requirements(env))
    (alice, held), (bob, _) = funds(env, env.alice, env.bob)
    settled = ask(env, "settle", payload, at_cost(env, cost))
    assert settled["success"] is True and settled["amount"] == str(cost), settled
    assert funds(env, env.alice, env.bob) == [(alice - cost, held), (bob + cost, 0)]
    assert env.ledger.transaction(settled["transaction"]).tx.message.amount == cost  # type: ignore[union-attr]


def test_a_settle_above_the_maximum_is_refused_and_holds_nothing(env: GatewayEnv) -> None:
    payload = sdk_payload(env.alice, requirements(env))
    before = env.quiet_dump()
    for op, reqs in (("settle", at_cost(env, MAX + 1)), ("verify", at_cost(env, MAX - 1))):
        answer = ask(env, op, payload, reqs)
        reason = answer.get("errorReason", answer.get("invalidReason"))
        expected = wire.ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT if op == "settle" else wire.ERR_PERMIT2_AMOUNT_MISMATCH
        assert reason == expected, answer
    assert env.quiet_dump() == before
    assert ask(env, "settle", payload, at_cost(env, MAX))["success"] is True  # the payload itself is fine


def test_twin_settles_of_other_amounts_at_once_capture_once(env: GatewayEnv) -> None:
    payload = sdk_payload(env.alice, requirements(env))
    assert ask(env, "verify", payload)["isValid"] is True
    (alice, held), (bob, _) = funds(env, env.alice, env.bob)
    barrier = threading.Barrier(8)

    def settle(cost: int) -> dict[str, Any]:
        barrier.wait(timeout=30)
        return ask(env, "settle", payload, at_cost(env, cost))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(settle, [100 * (i + 1) for i in range(8)]))

    won = [a for a in answers if a["success"]]
    assert len(won) == 1, answers
    assert {a["errorReason"] for a in answers if not a["success"]} == {"duplicate_settlement"}
    captured = int(won[0]["amount"])
    assert funds(env, env.alice, env.bob) == [(alice + MAX - captured, held - MAX), (bob + captured, 0)]


def test_a_permit2_the_paid_proxy_holds_is_never_captured_by_the_facilitator(env: GatewayEnv) -> None:
    from gateway.server.home import Home
    from gateway.wire.x402 import PaymentPayload
    from ledger.ledger import Ledger

    proxy_side = Ledger(env.store, sealer=Home(env.home).sealer())  # holds as gateway/server/proxy.py does
    payload = sdk_payload(env.alice, requirements(env))
    payment = PaymentPayload.from_dict(payload)
    hold = proxy_side.hold(payment.authorization, payment.signature, expires_at_s=proxy_side.now_s() + 30)
    for op in ("settle", "verify"):
        answer = ask(env, op, payload, at_cost(env, COST) if op == "settle" else None)
        assert answer.get("errorReason", answer.get("invalidReason")) == wire.ERR_PERMIT2_INVALID_NONCE, answer
    row = env.store.hold(hold.tx_id)
    assert row is not None and row.status == "open"
    proxy_side.settle(hold.tx_id, COST)


def test_the_same_payment_id_and_upto_payload_get_the_first_answer(env: GatewayEnv) -> None:
    extension = {"info": {"required": False, "id": "pay_" + secrets.token_hex(16)}}
    payload = {**sdk_payload(env.alice, requirements(env)), "extensions": {"payment-identifier": extension}}
    (alice, held), (bob, _) = funds(env, env.alice, env.bob)
    first = ask(env, "settle", payload, at_cost(env, COST))
    assert first["success"] is True and ask(env, "settle", payload, at_cost(env, COST)) == first
    conflict = ask(env, "settle", payload, at_cost(env, COST - 1))  # the same id, another request
    assert conflict["errorReason"] == wire.ERR_PAYMENT_ID_CONFLICT
    assert funds(env, env.alice, env.bob) == [(alice - COST, held), (bob + COST, 0)]


# ---- 3. forged and altered Permit2s: 200 refusals with the SDK's reasons, nothing written ----


Case = Callable[[GatewayEnv], tuple[dict[str, Any], dict[str, Any]]]


def _mutated(change: Callable[[dict[str, Any]], None]) -> Case:
    """The official client's payload for our requirements, then edited after signing."""

    def make(env: GatewayEnv) -> tuple[dict[str, Any], dict[str, Any]]:
        payload = sdk_payload(env.alice, requirements(env))
        change(payload["payload"])
        return payload, requirements(env)

    return make


def _forged(reqs: Callable[[GatewayEnv], dict[str, Any]] = requirements, **fields: Any) -> Case:
    def make(env: GatewayEnv) -> tuple[dict[str, Any], dict[str, Any]]:
        values = {k: v(env) if callable(v) else v for k, v in fields.items()}
        return forged_payload(env, env.alice, requirements(env), **values), reqs(env)

    return make


def _used_nonce(env: GatewayEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    first = sdk_payload(env.alice, requirements(env))
    assert ask(env, "settle", first, at_cost(env, 1))["success"] is True
    nonce = int(first["payload"]["permit2Authorization"]["nonce"])
    return forged_payload(env, env.alice, requirements(env), nonce=nonce, deadline=int(time.time()) + 30), requirements(
        env
    )


def _high_s(payload: dict[str, Any]) -> None:
    payload["signature"] = high_s_twin(payload["signature"])


def _to_mallory(payload: dict[str, Any]) -> None:
    payload["permit2Authorization"]["witness"]["to"] = "0x" + "99" * 20


def _bad_nonce(payload: dict[str, Any]) -> None:
    payload["permit2Authorization"]["nonce"] = "not a number"


def _huge_amount(payload: dict[str, Any]) -> None:
    payload["permit2Authorization"]["permitted"]["amount"] = str(2**63)


REFUSALS: dict[str, tuple[Case, str]] = {
    "wrong token": (_forged(token=lambda env: env.bob.address), wire.ERR_PERMIT2_TOKEN_MISMATCH),
    "wrong asset in the requirements": (
        _forged(lambda env: requirements(env, asset=env.bob.address)),
        wire.ERR_PERMIT2_TOKEN_MISMATCH,
    ),
    "witness.to is not payTo": (
        _forged(lambda env: requirements(env, payTo=env.operator)),
        "invalid_permit2_recipient_mismatch",
    ),
    "witness.to altered after signing": (_mutated(_to_mallory), "invalid_permit2_recipient_mismatch"),
    "wrong facilitator": (_forged(facilitator=lambda env: env.operator), wire.ERR_UPTO_FACILITATOR_MISMATCH),
    "wrong spender": (_forged(spender="0x402085c248EeA27D92E8b30b2C58ed07f9E20001"), wire.ERR_PERMIT2_INVALID_SPENDER),
    "signed for another chain": (
        _forged(chain=lambda env: dataclasses.replace(env.chain, chain_id=env.chain.chain_id + 1)),
        wire.ERR_PERMIT2_INVALID_SIGNATURE,
    ),
    "another network": (
        _forged(lambda env: requirements(env, network="eip155:8453")),
        wire.ERR_UPTO_NETWORK_MISMATCH,
    ),
    "expired deadline": (_forged(deadline=lambda env: int(time.time()) - 1), wire.ERR_PERMIT2_DEADLINE_EXPIRED),
    "validAfter ahead": (_forged(valid_after=lambda env: int(time.time()) + 600), wire.ERR_PERMIT2_NOT_YET_VALID),
    "high-S twin": (_mutated(_high_s), wire.ERR_PERMIT2_INVALID_SIGNATURE),
    "reused nonce": (_used_nonce, wire.ERR_PERMIT2_INVALID_NONCE),
    "more than the payer has": (
        _forged(lambda env: requirements(env, amount=str(10**12)), amount=10**12),
        wire.ERR_PERMIT2_INSUFFICIENT_BALANCE,
    ),
    "nonce not a number": (_mutated(_bad_nonce), wire.ERR_UPTO_INVALID_FORMAT),
    "amount past 2**63-1": (_mutated(_huge_amount), wire.ERR_UPTO_INVALID_FORMAT),
    "EIP-3009 payload under upto": (
        lambda env: (env.payment(env.alice, accepted=requirements(env))[1], requirements(env)),
        wire.ERR_UNSUPPORTED_PAYLOAD,
    ),
    "Permit2 under exact": (
        lambda env: (
            {**sdk_payload(env.alice, requirements(env)), "accepted": (exact := requirements(env, scheme="exact"))},
            exact,
        ),
        wire.ERR_UNSUPPORTED_PAYLOAD,
    ),
    "accepted exact, required upto": (
        lambda env: (
            {**sdk_payload(env.alice, requirements(env)), "accepted": requirements(env, scheme="exact")},
            requirements(env),
        ),
        wire.ERR_UPTO_INVALID_SCHEME,
    ),
}


def test_every_forged_or_altered_permit2_is_a_200_refusal_and_writes_nothing(env: GatewayEnv) -> None:
    cases = {name: make(env) for name, (make, _) in REFUSALS.items()}  # made first: the reused nonce settles once
    before = env.quiet_dump()
    for name, (payload, reqs) in cases.items():
        reason = REFUSALS[name][1]
        verified = ask(env, "verify", payload, reqs)
        assert (verified["isValid"], verified["invalidReason"]) == (False, reason), (name, verified)
        assert verified["invalidMessage"] and verified["payer"] == env.alice.address, (name, verified)
        settled = ask(env, "settle", payload, reqs)
        assert (settled["success"], settled["errorReason"], settled["transaction"]) == (False, reason, ""), (
            name,
            settled,
        )
    assert env.quiet_dump() == before  # the ledger is byte-for-byte what it was


def test_the_upto_reason_strings_are_the_sdks() -> None:
    from x402.mechanisms.evm import constants as sdk

    assert (wire.ERR_UPTO_INVALID_SCHEME, wire.ERR_UPTO_NETWORK_MISMATCH) == (
        sdk.ERR_UPTO_INVALID_SCHEME,
        sdk.ERR_UPTO_NETWORK_MISMATCH,
    )
    assert (wire.ERR_UPTO_FACILITATOR_MISMATCH, wire.ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT) == (
        sdk.ERR_UPTO_FACILITATOR_MISMATCH,
        sdk.ERR_UPTO_SETTLEMENT_EXCEEDS_AMOUNT,
    )
    for ours, theirs in [
        (wire.ERR_PERMIT2_INVALID_SPENDER, sdk.ERR_PERMIT2_INVALID_SPENDER),
        (wire.ERR_PERMIT2_RECIPIENT_MISMATCH, sdk.ERR_PERMIT2_RECIPIENT_MISMATCH),
        (wire.ERR_PERMIT2_DEADLINE_EXPIRED, sdk.ERR_PERMIT2_DEADLINE_EXPIRED),
        (wire.ERR_PERMIT2_NOT_YET_VALID, sdk.ERR_PERMIT2_NOT_YET_VALID),
        (wire.ERR_PERMIT2_AMOUNT_MISMATCH, sdk.ERR_PERMIT2_AMOUNT_MISMATCH),
        (wire.ERR_PERMIT2_TOKEN_MISMATCH, sdk.ERR_PERMIT2_TOKEN_MISMATCH),
        (wire.ERR_PERMIT2_INVALID_SIGNATURE, sdk.ERR_PERMIT2_INVALID_SIGNATURE),
        (wire.ERR_PERMIT2_INSUFFICIENT_BALANCE, sdk.ERR_PERMIT2_INSUFFICIENT_BALANCE),
    ]:
        assert ours == theirs


# ---- 4. the gateway's own metered routes ----


def test_official_upto_client_pays_a_metered_route_its_metered_cost(env: GatewayEnv) -> None:
    offer = requests.post(env.route_url(EMBED), json={}, timeout=10)
    accepts = decode_header(offer.headers["PAYMENT-REQUIRED"])["accepts"]
    assert [a["scheme"] for a in accepts] == ["upto", "exact"]
    assert accepts[0]["extra"]["facilitatorAddress"] == env.chain.sealer
    assert accepts[0]["extra"]["assetTransferMethod"] == "permit2"
    assert {a["amount"] for a in accepts} == {str(EMBED_MAX)}
    text = "one two three four five six seven"
    for scheme in ("upto", "exact"):
        session = upto_client(env.alice, env, scheme)
        alice, operator = env.available(env.alice), env.available(env.operator)

        response = session.post(env.route_url(EMBED), json={"model": EMBED_MODEL, "input": text}, timeout=30)

        assert response.status_code == 200, (scheme, response.text)
        settlement = decode_header(response.headers["PAYMENT-RESPONSE"])
        assert settlement["success"] is True and settlement["amount"] == str(embed_cost(7)), settlement
        receipt = Receipt.from_dict(settlement["receipt"])
        receipt.verify(env.chain.sealer)
        assert (receipt.charged, receipt.authorized, receipt.path) == (embed_cost(7), EMBED_MAX, EMBED)
        assert (env.available(env.alice), env.available(env.operator)) == (
            alice - embed_cost(7),
            operator + embed_cost(7),
        )
        hold_kind = env.ledger.transaction(receipt.hold_id).tx.kind
        assert hold_kind == ("permit2_hold" if scheme == "upto" else "hold")

        # The same signed payment again: refused, nothing charged.
        header = response.request.headers["PAYMENT-SIGNATURE"]
        assert isinstance(header, str)
        replay = requests.post(
            env.route_url(EMBED),
            json={"model": EMBED_MODEL, "input": text},
            headers={"PAYMENT-SIGNATURE": header},
            timeout=30,
        )
        assert (replay.status_code, error_code(replay)) == (402, "payment_already_used")
        assert env.available(env.alice) == alice - embed_cost(7)
    env.wait_quiet()
    env.audit_ok()


def _offered_upto(env: GatewayEnv) -> dict[str, Any]:
    accepts: list[dict[str, Any]] = decode_header(
        requests.post(env.route_url(EMBED), json={}, timeout=10).headers["PAYMENT-REQUIRED"]
    )["accepts"]
    return accepts[0]


PROXY_REFUSALS: dict[str, tuple[Callable[[GatewayEnv, dict[str, Any]], dict[str, Any]], str]] = {
    "wrong facilitator": (
        lambda env, o: forged_payload(env, env.alice, o, facilitator=env.operator),
        "wrong_facilitator",
    ),
    "wrong token": (lambda env, o: forged_payload(env, env.alice, o, token=env.bob.address), "wrong_asset"),
    "wrong spender": (lambda env, o: forged_payload(env, env.alice, o, spender=env.bob.address), "wrong_spender"),
    "witness.to not the payee": (lambda env, o: forged_payload(env, env.alice, o, to=env.bob.address), "wrong_payee"),
    "less than the maximum": (lambda env, o: forged_payload(env, env.alice, o, amount=EMBED_MAX - 1), "amount_too_low"),
    "signed for another chain": (
        lambda env, o: forged_payload(env, env.alice, o, chain=dataclasses.replace(env.chain, chain_id=1)),
        "invalid_signature",
    ),
    "expired deadline": (
        lambda env, o: forged_payload(env, env.alice, o, deadline=int(time.time()) - 1),
        "authorization_expired",
    ),
    "high-S twin": (
        lambda env, o: {
            **(p := forged_payload(env, env.alice, o)),
            "payload": {**p["payload"], "signature": high_s_twin(p["payload"]["signature"])},
        },
        "high_s_signature",
    ),
}


def test_forged_permit2s_are_refused_by_the_paid_proxy_and_write_nothing(env: GatewayEnv) -> None:
    offered = _offered_upto(env)
    body = {"model": EMBED_MODEL, "input": "x"}
    cases = {name: make(env, offered) for name, (make, _) in PROXY_REFUSALS.items()}
    flat_offer = env.requirement(FLAT)
    on_flat = forged_payload(env, env.alice, {**flat_offer, "scheme": "upto"})
    before = env.quiet_dump()
    for name, payload in cases.items():
        response = requests.post(
            env.route_url(EMBED), json=body, headers={"PAYMENT-SIGNATURE": encode_header(payload)}, timeout=30
        )
        assert (response.status_code, error_code(response)) == (402, PROXY_REFUSALS[name][1]), (name, response.text)
        assert "PAYMENT-REQUIRED" in response.headers  # with the terms a client could pay
    flat = requests.post(
        env.route_url(FLAT), json=body, headers={"PAYMENT-SIGNATURE": encode_header(on_flat)}, timeout=30
    )
    assert (flat.status_code, error_code(flat)) == (402, "unsupported_scheme")
    assert env.quiet_dump() == before

"""The x402 v2 facilitator (``/facilitator``) of the real gateway (gunicorn, 2 workers):

1. an unmodified official x402 Flask resource server (its own process) whose facilitator is
   ours, paid by the unmodified official x402 requests client: 402 -> pay -> 200, balances
   exact, the PAYMENT-RESPONSE's transaction a ledger settle, a replay refused;
2. 30 verify+settle pairs at once from a payer who can afford 10: exactly 10 settle;
3. one payload settled twice, in turn and at once: exactly one success;
4. every business refusal an HTTP 200 with its x402 reason, balances untouched; non-x402
   bodies a 400 JSON error;
5. verify without settle: the hold appears, and expires by itself;
and ``inferpay facilitator --config`` serving the same on its own.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.wire import facilitator as wire
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header
from ledger.clock import ms_to_s, system_now_ms
from ledger.tlog.note import NoteVerifier
from ledger.tlog.proof import parse_tlog_proof, verify_tlog_proof
from tests.support.gateway import PASSWORD, SCRYPT_N, GatewayEnv, error_code, start_gateway_env
from tests.support.servers import run_server_command, run_wsgi_in_process
from wallets.wallet import Wallet

PRICE = 1000  # base units


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-facilitator"))) as started:
        yield started


def facilitator_url(env: GatewayEnv) -> str:
    return env.url + "/facilitator"


def requirements(env: GatewayEnv, **override: Any) -> dict[str, Any]:
    """What an x402 resource server sends as paymentRequirements for PRICE, paid to bob."""
    base = {
        "scheme": "exact",
        "network": env.network,
        "asset": env.chain.token_address,
        "amount": str(PRICE),
        "payTo": env.bob.address,
        "maxTimeoutSeconds": 60,
        "extra": {"name": env.chain.name, "version": env.chain.version},
    }
    return {**base, **override}


def signed_payload(env: GatewayEnv, payer: Wallet, reqs: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """A v2 paymentPayload as the SDK's exact client makes it (accepted = the requirements)."""
    reqs = reqs or requirements(env)
    _, payload = env.payment(payer, accepted=reqs, **kw)
    payload["resource"] = {"url": "http://resource.test/paid"}
    return payload


def ask(env: GatewayEnv, op: str, payload: dict[str, Any], reqs: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "x402Version": 2,
        "paymentPayload": payload,
        "paymentRequirements": reqs or requirements(env),
    }
    response = requests.post(f"{facilitator_url(env)}/{op}", json=body, timeout=30)
    assert response.status_code == 200, response.text  # a refusal, too, is a 200
    answer: dict[str, Any] = response.json()
    return answer


def held_and_available(env: GatewayEnv, *who: Wallet) -> list[tuple[int, int]]:
    return [(env.account(w).available, env.account(w).held) for w in who]


# ---- 0. what we settle ----


def test_supported_names_our_network_and_the_sealer(env: GatewayEnv) -> None:
    from x402.schemas import SupportedResponse

    response = requests.get(facilitator_url(env) + "/supported", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": env.network},
            {
                "x402Version": 2,
                "scheme": "upto",
                "network": env.network,
                "extra": {"facilitatorAddress": env.chain.sealer},
            },
        ],
        "extensions": ["payment-identifier"],
        "signers": {"eip155:*": [env.chain.sealer]},
    }
    SupportedResponse.model_validate(body)  # what the SDK parses


# ---- 1. the official x402 resource server and client, unmodified ----


def test_official_x402_resource_server_and_client_pay_through_our_facilitator(env: GatewayEnv) -> None:
    from x402 import x402ClientSync
    from x402.http.clients.requests import x402_requests
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.schemas import SettleResponse

    payee = env.new_wallet("shop")
    with run_wsgi_in_process(
        "tests.support.x402_resource_server:create_resource_app",
        facilitator_url(env),
        env.network,
        env.chain.token_address,
        payee.address,
        PRICE,
        ready_path="/health",
    ) as shop:
        unpaid = requests.get(shop.url + "/paid", timeout=30)
        assert unpaid.status_code == 402
        offered = decode_header(unpaid.headers["PAYMENT-REQUIRED"])["accepts"][0]
        assert (offered["network"], offered["asset"], offered["amount"]) == (
            env.network,
            env.chain.token_address,
            str(PRICE),
        )

        client = x402ClientSync()
        client.register("eip155:*", ExactEvmScheme(env.alice.local_account()))  # type: ignore[arg-type]
        client.set_spend_controls({"allowed_assets": [{"network": env.network, "asset": env.chain.token_address}]})
        session = x402_requests(client)
        (alice, _), (shop_funds, _) = held_and_available(env, env.alice, payee)

        paid = session.get(shop.url + "/paid", timeout=30)

        assert paid.status_code == 200, (paid.status_code, paid.text, shop.log_text()[-2000:])
        assert paid.json() == {"weather": "sunny", "paid": True}
        assert held_and_available(env, env.alice, payee) == [(alice - PRICE, 0), (shop_funds + PRICE, 0)]
        settlement = SettleResponse.model_validate(decode_header(paid.headers["PAYMENT-RESPONSE"]))
        assert settlement.success and settlement.payer == env.alice.address and settlement.network == env.network
        stored = requests.get(f"{env.ledger_url}/transactions/{settlement.transaction}", timeout=10)
        assert stored.status_code == 200, stored.text
        tx = stored.json()["transaction"]
        assert tx["kind"] == "settle" and tx["message"]["amount"] == str(PRICE)
        assert settlement.extensions is not None
        receipt = Receipt.from_dict(settlement.extensions["inferpay"]["receipt"])
        receipt.verify(env.chain.sealer)
        assert (receipt.tx_id, receipt.pay_to, receipt.charged) == (settlement.transaction, payee.address, PRICE)

        # Replaying the very payment the client sent is refused, and charges nothing.
        header = paid.request.headers["PAYMENT-SIGNATURE"]
        replay = requests.get(shop.url + "/paid", headers={"PAYMENT-SIGNATURE": header}, timeout=30)
        assert replay.status_code == 402, replay.text
        assert held_and_available(env, env.alice, payee) == [(alice - PRICE, 0), (shop_funds + PRICE, 0)]


def test_settle_answer_carries_a_sealer_signed_receipt_of_the_ledger_settle(env: GatewayEnv) -> None:
    payload = signed_payload(env, env.alice)
    (alice, _), (bob, _) = held_and_available(env, env.alice, env.bob)

    answer = ask(env, "settle", payload)

    assert answer["success"] is True, answer
    assert (answer["payer"], answer["network"], answer["amount"]) == (env.alice.address, env.network, str(PRICE))
    receipt = Receipt.from_dict(answer["extensions"]["inferpay"]["receipt"])
    receipt.verify(env.chain.sealer)
    assert receipt.tx_id == answer["transaction"] and receipt.path == "http://resource.test/paid"
    assert (receipt.payer, receipt.pay_to, receipt.charged, receipt.authorized) == (
        env.alice.address,
        env.bob.address,
        PRICE,
        PRICE,
    )
    assert receipt.nonce == payload["payload"]["authorization"]["nonce"]
    assert receipt.balance_after == alice - PRICE
    assert held_and_available(env, env.alice, env.bob) == [(alice - PRICE, 0), (bob + PRICE, 0)]
    settle_tx = env.ledger.transaction(answer["transaction"]).tx
    assert settle_tx.kind == "settle" and settle_tx.message.hold_id == receipt.hold_id  # type: ignore[union-attr]

    # Once sealed, the offline receipt the answer points to proves the settle under the log's key.
    inferpay = answer["extensions"]["inferpay"]
    env.wait_quiet()
    proof = parse_tlog_proof(requests.get(inferpay["tlogProof"], timeout=5).content)
    assert proof.extra is not None and b'"settle"' in proof.extra
    verify_tlog_proof(proof, proof.extra, NoteVerifier.from_vkey(inferpay["checkpointKey"]), None)


# ---- 2. races: funds are reserved at /verify ----


def test_thirty_payments_at_once_from_a_payer_who_can_afford_ten(env: GatewayEnv) -> None:
    racer = env.new_wallet("racer", funds=f"{10 * PRICE / 1_000_000:.6f}")
    payloads = [signed_payload(env, racer) for _ in range(30)]
    (bob, _), *_ = held_and_available(env, env.bob)
    barrier = threading.Barrier(30)
    low_water = [10 * PRICE]

    def pay(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        barrier.wait(timeout=30)
        verified = ask(env, "verify", payload)
        low_water[0] = min(low_water[0], env.available(racer))
        return verified, ask(env, "settle", payload)

    with ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(pay, payloads))

    settled = [s for _, s in outcomes if s["success"]]
    refused = [s for _, s in outcomes if not s["success"]]
    assert len(settled) == 10 and len(refused) == 20
    assert {s["errorReason"] for s in refused} == {"insufficient_funds"}
    assert sum(1 for v, _ in outcomes if v["isValid"]) == 10
    assert {v["invalidReason"] for v, _ in outcomes if not v["isValid"]} == {"insufficient_funds"}
    assert len({s["transaction"] for s in settled}) == 10
    assert low_water[0] >= 0
    assert held_and_available(env, racer, env.bob) == [(0, 0), (bob + 10 * PRICE, 0)]
    env.wait_quiet()
    env.audit_ok()


# ---- 3. one payload, settled twice ----


def test_the_same_payload_settles_once_in_turn(env: GatewayEnv) -> None:
    payload = signed_payload(env, env.alice)
    alice, held = held_and_available(env, env.alice)[0]
    assert ask(env, "verify", payload)["isValid"] is True
    assert ask(env, "verify", payload)["isValid"] is True  # the same hold, found again
    assert held_and_available(env, env.alice)[0] == (alice - PRICE, held + PRICE)
    alice, held = alice - PRICE, held + PRICE
    first = ask(env, "settle", payload)
    assert first["success"] is True
    assert held_and_available(env, env.alice)[0] == (alice, held - PRICE)

    second = ask(env, "settle", payload)
    assert second["success"] is False and second["errorReason"] == "duplicate_settlement"
    assert second["transaction"] == first["transaction"]  # the settle that already happened
    again = ask(env, "verify", payload)
    assert again["isValid"] is False and again["invalidReason"] == "invalid_exact_evm_nonce_already_used"
    assert held_and_available(env, env.alice)[0] == (alice, held - PRICE)


def test_the_same_payload_settled_by_many_threads_at_once_settles_once(env: GatewayEnv) -> None:
    payload = signed_payload(env, env.alice)
    (alice, held), (bob, _) = held_and_available(env, env.alice, env.bob)
    barrier = threading.Barrier(12)

    def settle(_: int) -> dict[str, Any]:
        barrier.wait(timeout=30)
        return ask(env, "settle", payload)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(settle, range(12)))

    assert sum(a["success"] for a in answers) == 1
    assert {a["errorReason"] for a in answers if not a["success"]} == {"duplicate_settlement"}
    assert held_and_available(env, env.alice, env.bob) == [(alice - PRICE, held), (bob + PRICE, 0)]


def test_a_hold_the_paid_proxy_placed_is_never_captured_by_the_facilitator(env: GatewayEnv) -> None:
    """The same signed authorization, presented to the paid proxy (which holds it while its
    upstream call runs) and then to the facilitator: the facilitator refuses it as a used
    nonce, leaves the proxy's hold open, and the proxy's own settle still succeeds."""
    from gateway.server.home import Home
    from gateway.wire.x402 import PaymentPayload
    from ledger.ledger import Ledger

    proxy_side = Ledger(env.store, sealer=Home(env.home).sealer())  # holds as gateway/server/proxy.py does
    (alice, held), (bob, _) = held_and_available(env, env.alice, env.bob)
    # Under another expiry than the facilitator's, and under the very same one (so the same hold id).
    for shorter_s in (30, 0):
        payload = signed_payload(env, env.alice)
        payment = PaymentPayload.from_dict(payload)
        expires_at_s = payment.authorization.valid_before - shorter_s
        hold = proxy_side.hold(payment.authorization, payment.signature, expires_at_s=expires_at_s)
        assert hold.duplicate is False

        for op in ("settle", "verify", "settle"):
            answer = ask(env, op, payload)
            assert answer.get("errorReason", answer.get("invalidReason")) == wire.ERR_NONCE_ALREADY_USED, (op, answer)
            assert answer.get("success", answer.get("isValid")) is False
        row = env.store.hold(hold.tx_id)
        assert row is not None and row.status == "open"
        assert held_and_available(env, env.alice)[0] == (alice - PRICE, held + PRICE)

        settled = proxy_side.settle(hold.tx_id, PRICE)
        assert settled.duplicate is False and env.ledger.transaction(settled.tx_id).tx.kind == "settle"
        alice -= PRICE
    assert held_and_available(env, env.alice, env.bob) == [(alice, held), (bob + 2 * PRICE, 0)]


# ---- 3b. the payment-identifier extension ----


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(16)  # as the SDK's generate_payment_id makes them


def with_payment_id(payload: dict[str, Any], payment_id: str) -> dict[str, Any]:
    """``payload`` carrying ``payment_id`` as the spec (and the SDK's client) appends it to the
    server's declaration. (The SDK's x402.extensions package is not imported: it needs
    jsonschema, which the SDK's core does not.)"""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"required": {"type": "boolean"}, "id": {"type": "string", "minLength": 16, "maxLength": 128}},
        "required": ["required"],
    }
    extension = {"info": {"required": False, "id": payment_id}, "schema": schema}
    return {**payload, "extensions": {"payment-identifier": extension}}


def test_the_same_payment_id_and_payload_get_the_first_answer_and_one_charge(env: GatewayEnv) -> None:
    payload = with_payment_id(signed_payload(env, env.alice), new_payment_id())
    (alice, held), (bob, _) = held_and_available(env, env.alice, env.bob)
    verified = [ask(env, "verify", payload) for _ in range(2)]
    assert verified[0] == verified[1] and verified[0]["isValid"] is True
    barrier = threading.Barrier(10)

    def settle(_: int) -> dict[str, Any]:
        barrier.wait(timeout=30)
        return ask(env, "settle", payload)  # ten at once, over the gateway's two workers

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(settle, range(10)))
    answers.append(ask(env, "settle", payload))  # and once more, in turn

    assert answers[0]["success"] is True, answers[0]
    assert all(a == answers[0] for a in answers), answers  # byte for byte: the receipt too
    assert held_and_available(env, env.alice, env.bob) == [(alice - PRICE, held), (bob + PRICE, 0)]
    assert ask(env, "verify", payload) == verified[0]  # verify's answer is verify's own


def test_the_same_payment_id_with_another_payload_is_refused_and_charges_nothing(env: GatewayEnv) -> None:
    payment_id = new_payment_id()
    first = with_payment_id(signed_payload(env, env.alice), payment_id)
    assert ask(env, "verify", first)["isValid"] is True
    (alice, held), (bob, _) = held_and_available(env, env.alice, env.bob)

    other = with_payment_id(signed_payload(env, env.alice), payment_id)  # a new nonce, the same id
    refused_verify, refused_settle = ask(env, "verify", other), ask(env, "settle", other)
    assert refused_verify["isValid"] is False and refused_verify["invalidReason"] == wire.ERR_PAYMENT_ID_CONFLICT
    assert refused_settle["success"] is False and refused_settle["errorReason"] == wire.ERR_PAYMENT_ID_CONFLICT
    assert "payment identifier" in refused_settle["errorMessage"]
    # The same payload under other requirements is another request, too.
    assert ask(env, "settle", first, requirements(env, maxTimeoutSeconds=30))["errorReason"] == (
        wire.ERR_PAYMENT_ID_CONFLICT
    )
    assert held_and_available(env, env.alice, env.bob) == [(alice, held), (bob, 0)]

    assert ask(env, "settle", first)["success"] is True  # the first payload still settles under its id
    for bad_id in ("short", "x" * 129, "has spaces in it!!"):
        bad = {**first, "extensions": {"payment-identifier": {"info": {"required": False, "id": bad_id}}}}
        assert ask(env, "verify", bad)["invalidReason"] == wire.ERR_INVALID_PAYLOAD


# ---- 4. refusals are 200 answers with a reason; non-x402 is a 400 ----


Case = Callable[[], tuple[dict[str, Any], dict[str, Any]]]


def _refusals(env: GatewayEnv) -> list[tuple[str, Case, str]]:
    """(what, a maker of (paymentPayload, paymentRequirements), the reason the answer names)."""
    other = "0x" + "11" * 20

    def accepting(reqs: dict[str, Any]) -> Case:
        """The payer signs for requirements that are not ours, and the server sends them."""
        return lambda: (signed_payload(env, env.alice, reqs), reqs)

    def paying(reqs_override: dict[str, Any], **sign: Any) -> Case:
        """The payer signs for ours (with ``sign`` overrides); the server sends ``reqs_override``."""
        return lambda: (signed_payload(env, env.alice, requirements(env), **sign), requirements(env, **reqs_override))

    def forged() -> tuple[dict[str, Any], dict[str, Any]]:
        payload = signed_payload(env, env.alice)
        signature = payload["payload"]["signature"]
        payload["payload"]["signature"] = signature[:10] + ("0" if signature[10] != "0" else "1") + signature[11:]
        return payload, requirements(env)

    value_mismatch = "invalid_exact_evm_payload_authorization_value_mismatch"
    valid_after_future = "invalid_exact_evm_payload_authorization_valid_after"
    later = ms_to_s(system_now_ms()) + 600
    return [
        ("wrong network", accepting(requirements(env, network="eip155:8453")), "network_mismatch"),
        ("wrong asset", accepting(requirements(env, asset=other)), "asset_mismatch"),
        ("unknown scheme", accepting(requirements(env, scheme="deferred")), "unsupported_scheme"),
        ("EIP-3009 under upto", accepting(requirements(env, scheme="upto")), "unsupported_payload_type"),
        ("wrong payTo", paying({"payTo": env.operator}), "invalid_exact_evm_payload_recipient_mismatch"),
        ("amount too low", paying({"amount": str(PRICE + 1)}), value_mismatch),
        ("amount above exact", paying({}, value=PRICE + 1), value_mismatch),
        ("bad signature", forged, "invalid_exact_evm_payload_signature"),
        (
            "expired",
            paying({}, valid_after=0, valid_before=1000),
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        ("not yet valid", paying({}, valid_after=later, valid_before=later + 60), valid_after_future),
        ("negative amount", paying({"amount": "-1"}), "invalid_payment_requirements"),
        ("amount past 2**63-1", paying({"amount": str(2**63)}), "invalid_payment_requirements"),
        ("no timeout", paying({"maxTimeoutSeconds": 0}), "invalid_payment_requirements"),
    ]


def test_business_refusals_are_200_with_the_x402_reason_and_change_nothing(env: GatewayEnv) -> None:
    before = held_and_available(env, env.alice, env.bob, env.wallets["operator"])
    for name, make, reason in _refusals(env):
        for op in ("verify", "settle"):
            payload, reqs = make()
            answer = ask(env, op, payload, reqs)
            if op == "verify":
                assert answer["isValid"] is False and answer["invalidReason"] == reason, (name, answer)
                assert answer["invalidMessage"], name
            else:
                assert answer["success"] is False and answer["errorReason"] == reason, (name, answer)
                assert answer["transaction"] == "" and "network" in answer, (name, answer)
    assert held_and_available(env, env.alice, env.bob, env.wallets["operator"]) == before


def test_the_reason_table_is_what_the_sdk_names() -> None:
    from x402.mechanisms.evm import constants as sdk

    for ours, theirs in [
        (wire.ERR_INVALID_SIGNATURE, sdk.ERR_INVALID_SIGNATURE),
        (wire.ERR_RECIPIENT_MISMATCH, sdk.ERR_RECIPIENT_MISMATCH),
        (wire.ERR_AUTHORIZATION_VALUE_MISMATCH, sdk.ERR_AUTHORIZATION_VALUE_MISMATCH),
        (wire.ERR_VALID_BEFORE_EXPIRED, sdk.ERR_VALID_BEFORE_EXPIRED),
        (wire.ERR_VALID_AFTER_FUTURE, sdk.ERR_VALID_AFTER_FUTURE),
        (wire.ERR_NONCE_ALREADY_USED, sdk.ERR_NONCE_ALREADY_USED),
        (wire.ERR_NETWORK_MISMATCH, sdk.ERR_NETWORK_MISMATCH),
        (wire.ERR_UNSUPPORTED_SCHEME, sdk.ERR_UNSUPPORTED_SCHEME),
    ]:
        assert ours == theirs


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"x402Version": 2}',
        b'{"x402Version": 1, "paymentPayload": {}, "paymentRequirements": {}}',
        b'{"x402Version": 2, "paymentPayload": [], "paymentRequirements": {}}',
        b'{"x402Version": true, "paymentPayload": {}, "paymentRequirements": {}}',
        b"[" * 100_000,
    ],
)
def test_a_request_that_is_not_x402_is_a_400_json_error(env: GatewayEnv, body: bytes) -> None:
    for op in ("verify", "settle"):
        response = requests.post(
            f"{facilitator_url(env)}/{op}", data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert response.status_code == 400, response.text
        assert error_code(response) == "malformed_payment"


def test_an_unparseable_payload_inside_a_request_is_a_refusal(env: GatewayEnv) -> None:
    payload = signed_payload(env, env.alice)
    payload["payload"]["authorization"]["value"] = "lots"
    answer = ask(env, "verify", payload)
    assert answer["isValid"] is False and answer["invalidReason"] == "invalid_payload"
    assert answer["payer"] == env.alice.address


# ---- 5. verify without settle: the hold, and its expiry ----


def test_a_verified_payment_never_settled_is_held_then_released_by_expiry(env: GatewayEnv) -> None:
    short = requirements(env, maxTimeoutSeconds=1)
    payload = signed_payload(env, env.alice, short)
    alice, held = held_and_available(env, env.alice)[0]

    assert ask(env, "verify", payload, short)["isValid"] is True
    assert held_and_available(env, env.alice)[0] == (alice - PRICE, held + PRICE)

    env.wait_for(lambda: env.account(env.alice).held == held, timeout=10, what="the hold to expire")
    assert env.available(env.alice) == alice
    late = ask(env, "settle", payload, short)
    assert late["success"] is False and late["errorReason"] == "invalid_transaction_state", late
    assert held_and_available(env, env.alice)[0] == (alice, held)


# ---- the standalone command ----

_LAUNCH = (
    "import sys; from pathlib import Path; "
    "Path(sys.argv[1]).write_text(f'[facilitator]\\nport = {sys.argv[2]}\\nworkers = 1\\nthreads = 4\\n'); "
    "from inferpay_cli.main import cli; cli(sys.argv[3:], prog_name='inferpay')"
)


def test_inferpay_facilitator_command_serves_the_facilitator_alone(env: GatewayEnv) -> None:
    config = env.directory / "facilitator.toml"
    argv = [sys.executable, "-c", _LAUNCH, str(config), "{port}", "--home", str(env.home), "facilitator"]
    argv += ["--config", str(config)]
    runner_env = {"INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    with run_server_command(argv, ready_path="/health", env=runner_env) as served:
        supported = requests.get(served.url + "/facilitator/supported", timeout=10).json()
        assert supported["kinds"][0]["network"] == env.network
        assert requests.post(served.url + "/v1/flat", json={}, timeout=10).status_code == 404  # no proxy here
        payload = signed_payload(env, env.alice)
        body: dict[str, Any] = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirements(env)}
        answer = requests.post(served.url + "/facilitator/settle", json=body, timeout=30).json()
        assert answer["success"] is True, answer
        assert env.ledger.transaction(answer["transaction"]).tx.kind == "settle"


def test_the_facilitator_config_is_read_strictly(tmp_path: Path) -> None:
    from gateway.server.facilitator_app import parse_facilitator_config
    from gateway.wire.errors import ConfigError

    config = parse_facilitator_config({"facilitator": {"port": 9999, "workers": 3, "database": "x.db"}}, home=tmp_path)
    assert (config.port, config.workers, config.threads, config.database, config.routes) == (9999, 3, 8, "x.db", ())
    assert config.home == tmp_path and parse_facilitator_config({}, home=tmp_path).port == 8403
    bad: dict[str, Any]
    for bad in (
        {"facilitator": {"pay_to": "operator"}},
        {"facilitator": {"port": 70000}},
        {"facilitator": {"workers": "2"}},
        {"gateway": {}},
        {"facilitator": []},
    ):
        with pytest.raises(ConfigError):
            parse_facilitator_config(bad, home=tmp_path)


def test_a_paid_route_cannot_shadow_the_facilitator(tmp_path: Path) -> None:
    from gateway.server.config import parse_config
    from gateway.wire.errors import ConfigError

    route = {"path": "/facilitator/settle", "upstream": "http://127.0.0.1:1/x", "price": "0.001"}
    with pytest.raises(ConfigError, match="shadow"):
        parse_config({"routes": [route]}, home=tmp_path)

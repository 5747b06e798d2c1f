"""The compute pool over the real gateway's ledger API: providers register, update and withdraw
with signed registrations over HTTP (``POST /ledger/providers``) and anyone reads them; holders
redeem, payees refund a real paid call's settle, an operator's backend mints; each bad request
is a JSON error with its stable code and changes nothing; the client SDK
(``LedgerApiClient``) speaks all of it and hands back the server's errors as their classes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth, receipt_of
from gateway.client.ledger_api import LedgerApiClient
from ledger.errors import NotAPayee, NotFound, RefundExceedsCredit
from ledger.types import Mint, ProviderEarnings, ProviderRegistration, Redeem, Refund
from tests.support.gateway import FLAT, FLAT_PRICE, GatewayEnv, error_code, start_gateway_env
from wallets import Wallet


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-pool"))) as started:
        yield started


def nonce() -> str:
    return "0x" + secrets.token_hex(32)


def registration(wallet: Wallet, **fields: Any) -> ProviderRegistration:
    values: dict[str, Any] = {
        "provider": wallet.address,
        "endpoint": "http://127.0.0.1:8101/v1",
        "models": ("tiny-chat",),
        "price_per_call": 500,
        "price_per_1k_input": 2,
        "price_per_1k_output": 9,
        "capacity": 0,
        "status": "active",
        "nonce": nonce(),
        **fields,
    }
    return ProviderRegistration(**values)


def post(env: GatewayEnv, path: str, body: Any) -> requests.Response:
    return requests.post(env.ledger_url + path, json=body, timeout=10)


def signed(env: GatewayEnv, field: str, message: Any, signer: Wallet) -> dict[str, Any]:
    return {field: message.to_dict(), "signature": signer.sign(env.chain, message)}


def paid_call(env: GatewayEnv) -> str:
    """A real paid call by alice; the id of the settle that charged it."""
    response = requests.post(
        env.route_url(FLAT), json={"x": 1}, auth=PaymentAuth(env.alice, trusted_sealer=env.chain.sealer), timeout=10
    )
    receipt = receipt_of(response)
    assert response.status_code == 200 and receipt is not None, response.text
    return receipt.tx_id


def test_a_provider_registers_updates_and_withdraws_over_http(env: GatewayEnv) -> None:
    provider = env.new_wallet("provider-a")
    first = registration(provider)
    response = post(env, "/providers", signed(env, "registration", first, provider))
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "provider_registration"
    again = post(env, "/providers", signed(env, "registration", first, provider))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    record = requests.get(f"{env.ledger_url}/providers/{provider.address}", timeout=10).json()
    assert record["registration"] == first.to_dict() and record["approved"] is False
    assert record["registrationId"] == response.json()["txId"]
    listed = requests.get(f"{env.ledger_url}/providers", timeout=10).json()
    assert provider.address in [p["address"] for p in listed["providers"]]
    version = listed["poolVersion"]
    update = registration(provider, price_per_call=700)
    assert post(env, "/providers", signed(env, "registration", update, provider)).status_code == 201
    withdrawal = registration(provider, status="withdrawn")
    assert post(env, "/providers", signed(env, "registration", withdrawal, provider)).status_code == 201
    api = LedgerApiClient(env.ledger_url)
    assert api.provider(provider.address).registration == withdrawal
    assert int(api.pool()["poolVersion"]) == int(version) + 2
    assert api.provider_earnings(provider.address) == ProviderEarnings(0, 0, 0, 0)
    earnings = requests.get(f"{env.ledger_url}/providers/{provider.address}/earnings", timeout=10).json()
    assert earnings == {"address": provider.address, "calls": "0", "earned": "0", "refunded": "0", "redeemed": "0"}


def test_the_sdk_registers_and_reads_providers(env: GatewayEnv) -> None:
    provider = env.new_wallet("provider-b")
    reg = registration(provider, models=("tiny-chat", "tiny-embed"))
    with LedgerApiClient.for_node(env.url) as api:
        result = api.register_provider(reg, provider.sign(env.chain, reg))
        assert result["duplicate"] is False
        found = {p.address: p for p in api.providers()}
        assert found[provider.address].registration == reg
        assert found[provider.address].registration_id == result["txId"]
        assert api.pool_fee().fee_bps == 0
        with pytest.raises(NotFound):
            api.provider("0x" + "00" * 19 + "07")


BAD_REGISTRATIONS = {
    "not JSON": (400, "invalid_input"),
    "no signature": (400, "invalid_input"),
    "an extra field": (400, "malformed_record"),
    "an endpoint with a password": (400, "invalid_input"),
    "no models": (400, "invalid_input"),
    "a price past 2**63-1": (400, "malformed_record"),
    "signed by someone else": (402, "invalid_signature"),
    "a tampered record": (402, "invalid_signature"),
}


def _bad_registration(env: GatewayEnv, case: str) -> Any:
    provider = env.wallets.get("provider-c") or env.new_wallet("provider-c")
    good = signed(env, "registration", registration(provider), provider)
    if case == "not JSON":
        return None
    if case == "no signature":
        return {"registration": good["registration"]}
    if case == "an extra field":
        return {**good, "registration": {**good["registration"], "memo": "x"}}
    if case == "an endpoint with a password":
        return signed(env, "registration", registration(provider, endpoint="http://u:p@127.0.0.1/v1"), provider)
    if case == "no models":
        return signed(env, "registration", registration(provider, models=()), provider)
    if case == "a price past 2**63-1":
        return {**good, "registration": {**good["registration"], "pricePerCall": str(2**63)}}
    if case == "signed by someone else":
        return signed(env, "registration", registration(provider), env.bob)
    if case == "a tampered record":
        return {**good, "registration": {**good["registration"], "pricePerCall": "1"}}
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(BAD_REGISTRATIONS))
def test_a_bad_registration_is_a_json_error_and_changes_nothing(env: GatewayEnv, case: str) -> None:
    status, code = BAD_REGISTRATIONS[case]
    body = _bad_registration(env, case)
    before = env.quiet_dump()
    if body is None:
        response = requests.post(
            env.ledger_url + "/providers", data=b"{nope", headers={"Content-Type": "application/json"}, timeout=10
        )
    else:
        response = post(env, "/providers", body)
    assert (response.status_code, error_code(response)) == (status, code), response.text
    assert env.quiet_dump() == before


def test_redeems_burn_supply_and_an_overspend_is_refused(env: GatewayEnv) -> None:
    env.wait_quiet()
    supply = env.store.supply()
    holder = env.new_wallet("redeemer", "2")
    env.wait_quiet()
    redeem = Redeem(holder.address, 1_500_000, "iban:DE00-payout-7", nonce())
    response = post(env, "/redeems", signed(env, "redeem", redeem, holder))
    assert response.status_code == 201, response.text
    env.wait_quiet()
    assert env.store.supply() == supply + 2_000_000 - 1_500_000
    assert env.available(holder) == 500_000
    before = env.quiet_dump()
    too_much = Redeem(holder.address, 500_001, "again", nonce())
    response = post(env, "/redeems", signed(env, "redeem", too_much, holder))
    assert (response.status_code, error_code(response)) == (402, "insufficient_funds")
    forged = Redeem(holder.address, 1, "not mine", nonce())
    response = post(env, "/redeems", signed(env, "redeem", forged, env.alice))
    assert (response.status_code, error_code(response)) == (402, "invalid_signature")
    assert env.quiet_dump() == before


def test_a_payee_refunds_a_paid_call_and_nobody_else_can(env: GatewayEnv) -> None:
    settle_id = paid_call(env)
    operator = env.wallets["operator"]
    env.wait_quiet()
    before_alice = env.available(env.alice)
    part = Refund(settle_id, operator.address, FLAT_PRICE // 4, nonce())
    assert post(env, "/refunds", signed(env, "refund", part, operator)).status_code == 201
    env.wait_quiet()
    assert env.available(env.alice) == before_alice + FLAT_PRICE // 4
    before = env.quiet_dump()
    by_bob = Refund(settle_id, env.bob.address, 1, nonce())
    response = post(env, "/refunds", signed(env, "refund", by_bob, env.bob))
    assert (response.status_code, error_code(response)) == (403, "not_a_payee")
    too_much = Refund(settle_id, operator.address, FLAT_PRICE, nonce())
    response = post(env, "/refunds", signed(env, "refund", too_much, operator))
    assert (response.status_code, error_code(response)) == (409, "refund_exceeds_credit")
    unknown = Refund("0x" + "ab" * 32, operator.address, 1, nonce())
    response = post(env, "/refunds", signed(env, "refund", unknown, operator))
    assert (response.status_code, error_code(response)) == (404, "not_found")
    assert env.quiet_dump() == before
    with LedgerApiClient(env.ledger_url) as api:  # the same refusals, as their classes, through the SDK
        with pytest.raises(NotAPayee):
            api.refund(by_bob, env.bob.sign(env.chain, by_bob))
        with pytest.raises(RefundExceedsCredit):
            api.refund(too_much, operator.sign(env.chain, too_much))
        rest = Refund(settle_id, operator.address, FLAT_PRICE - FLAT_PRICE // 4, nonce())
        assert api.refund(rest, operator.sign(env.chain, rest))["kind"] == "refund"


def test_an_operator_signed_mint_over_http(env: GatewayEnv) -> None:
    operator, customer = env.wallets["operator"], env.new_wallet("customer")
    mint = Mint(customer.address, 3_000_000, nonce())
    with LedgerApiClient(env.ledger_url) as api:
        assert api.mint(mint, operator.sign(env.chain, mint))["kind"] == "mint"
    env.wait_quiet()
    assert env.available(customer) == 3_000_000
    before = env.quiet_dump()
    forged = Mint(customer.address, 1, nonce())
    response = post(env, "/mints", signed(env, "mint", forged, customer))
    assert (response.status_code, error_code(response)) == (402, "invalid_signature")
    assert env.quiet_dump() == before


def test_the_cli_joins_and_reads_the_pool_over_node(env: GatewayEnv) -> None:
    """A provider that is not the operator joins with `--node`: its wallet signs here, the
    gateway's ledger API records it; reads, redeems and refunds go the same way."""
    env.new_wallet("provider-cli")
    result = env.cli(
        "provider",
        "register",
        "provider-cli",
        "--endpoint",
        "http://127.0.0.1:8102/v1",
        "--model",
        "tiny-chat",
        "--price-per-call",
        "0.0002",
        "--node",
        env.url,
        "--json",
    )
    assert json.loads(result.stdout)["kind"] == "provider_registration"
    listed = json.loads(env.cli("provider", "list", "--node", env.url, "--json").stdout)
    mine = next(p for p in listed if p["address"] == env.wallets["provider-cli"].address)
    assert mine["registration"]["pricePerCall"] == "200"
    env.cli("provider", "update", "provider-cli", "--price-per-call", "0.0003", "--node", env.url)
    shown = json.loads(env.cli("provider", "show", "provider-cli", "--node", env.url, "--json").stdout)
    assert shown["registration"]["pricePerCall"] == "300"
    earnings = json.loads(env.cli("provider", "earnings", "provider-cli", "--node", env.url, "--json").stdout)
    assert earnings["calls"] == "0"
    assert json.loads(env.cli("pool-fee", "--node", env.url, "--json").stdout)["feeBps"] == "0"
    settle_id = paid_call(env)
    env.cli("refund", "operator", settle_id, "0.0001", "--node", env.url)
    refused = env.cli("refund", "bob", settle_id, "0.0001", "--node", env.url, ok=False)
    assert refused.exit_code == 1 and refused.stderr.strip().endswith("[not_a_payee]")
    env.cli("redeem", "alice", "0.5", "--reference", "payout-cli", "--node", env.url)
    env.cli("provider", "withdraw", "provider-cli", "--node", env.url)
    env.wait_quiet()
    assert env.ledger.provider(env.wallets["provider-cli"].address).registration.status == "withdrawn"

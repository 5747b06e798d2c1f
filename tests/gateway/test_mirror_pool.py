"""A mirror of a ledger that carries the compute pool: registrations, approvals, a pool fee,
split settles, refunds and redeems are replayed by the mirror's own copy of the ledger's rules
(the auditor's), and the copy answers the same providers, fee, earnings and supply.

The gateway (a real process) records registrations, redeems and refunds over its ledger API;
the split settles, approvals and the fee are written by a second writer on the same SQLite file
with the home's sealer key, as a second gateway worker would (this gateway has no pool route:
routing is another part's), which SQLite's write lock serializes with the gateway's own writes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.server.home import Home
from ledger.ledger import Ledger
from ledger.storage.sqlite import SQLiteStore
from ledger.types import ProviderRegistration, Redeem, Refund
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.mirror import assert_same_ledger, run_mirror


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-mirror-pool"))) as started:
        yield started


def post(env: GatewayEnv, path: str, field: str, message: Any, signer: Any) -> str:
    body = {field: message.to_dict(), "signature": signer.sign(env.chain, message)}
    response = requests.post(env.ledger_url + path, json=body, timeout=10)
    assert response.status_code == 201, response.text
    tx_id: str = response.json()["txId"]
    return tx_id


def test_a_mirror_replays_the_pool_and_agrees(env: GatewayEnv, tmp_path: Path) -> None:
    provider = env.new_wallet("gpu")
    registration = ProviderRegistration(
        provider.address,
        "http://127.0.0.1:8101/v1",
        ("tiny-chat",),
        300,
        5,
        7,
        2,
        "active",
        "0x" + secrets.token_hex(32),
    )
    pool_txs = [post(env, "/providers", "registration", registration, provider)]
    env.wait_quiet()
    second_writer = Ledger(SQLiteStore(env.home / "ledger.db"), sealer=Home(env.home).sealer())
    try:
        record = second_writer.provider(provider.address)
        pool_txs.append(second_writer.approve_provider(provider.address, True).tx_id)
        pool_txs.append(second_writer.set_pool_fee(500, 3).tx_id)
        splits = []
        for tokens in (10, 2000):
            auth, signature = env.alice.authorize_transfer(env.chain, env.operator, 5000)
            held = second_writer.hold(auth, signature)
            splits.append(
                second_writer.settle_split(
                    held.tx_id,
                    provider=provider.address,
                    registration_id=record.registration_id,
                    input_tokens=tokens,
                    output_tokens=tokens,
                    usage_capped=tokens > 1000,
                )
            )
    finally:
        second_writer.store.close()
    post(
        env,
        "/refunds",
        "refund",
        Refund(splits[1].tx_id, provider.address, 100, "0x" + secrets.token_hex(32)),
        provider,
    )
    post(env, "/redeems", "redeem", Redeem(provider.address, 200, "payout-1", "0x" + secrets.token_hex(32)), provider)
    env.wait_quiet()

    home = tmp_path / "mirror"
    result = run_mirror(env.url, home)
    assert result.returncode == 0, result.stderr
    assert_same_ledger(env, home)
    copy = SQLiteStore(home / "ledger.db")
    try:
        assert copy.providers() == env.store.providers()
        assert copy.pool_fee() == env.store.pool_fee() and copy.pool_version() == env.store.pool_version()
        assert copy.provider_earnings(provider.address) == env.store.provider_earnings(provider.address)
        assert copy.provider_earnings(provider.address).calls == 2
        assert copy.operator_fees() == env.store.operator_fees() > 0
        assert copy.refunds_by_settle() == env.store.refunds_by_settle()
    finally:
        copy.close()

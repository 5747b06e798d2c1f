"""The ledger over HTTP on the real gateway (``/ledger/...``), checked against the SQLite file
it serves, every proof verified client-side; signed transfers submitted over HTTP; and
``/openapi.json`` compared with the routes the Flask app actually serves.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth, check_consistency, fetch_head, receipt_of
from gateway.server.config import load_config
from ledger.blocks import check_block_signature, verify_consistency, verify_inclusion
from ledger.encoding import transaction_id
from ledger.types import SignedBlock, Transaction
from tests.support.gateway import FLAT, GatewayEnv, error_code, start_gateway_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-ledger"))) as started:
        yield started


def get(env: GatewayEnv, path: str, **params: Any) -> Any:
    response = requests.get(env.ledger_url + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def transfer_body(env: GatewayEnv, payer: Any, to: str, value: int, **kw: Any) -> dict[str, Any]:
    auth, signature = payer.authorize_transfer(env.chain, to, value, **kw)
    return {"authorization": auth.to_dict(), "signature": signature}


def submit(env: GatewayEnv, body: Any) -> requests.Response:
    if isinstance(body, bytes):
        return requests.post(
            env.ledger_url + "/transfers", data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
    return requests.post(env.ledger_url + "/transfers", json=body, timeout=10)


def test_info_and_head_are_the_ledgers(env: GatewayEnv) -> None:
    env.wait_quiet()
    info = get(env, "/info")
    assert {k: info[k] for k in ("chainId", "tokenAddress", "operator", "sealer", "name", "version")} == (
        env.chain.to_dict()
    )
    assert info["supply"] == str(env.store.supply())
    assert info["head"] == env.store.head().to_dict() == get(env, "/head")
    check_block_signature(SignedBlock.from_dict(info["head"]), env.chain.sealer)


def test_accounts_show_balances_and_open_holds(env: GatewayEnv) -> None:
    env.wait_quiet()
    account = get(env, f"/accounts/{env.alice.address}")
    assert account == {**env.account(env.alice).to_dict(), "holds": []}
    assert get(env, f"/accounts/{env.alice.address.lower()}")["address"] == env.alice.address
    nobody = "0x" + "00" * 19 + "01"
    assert get(env, f"/accounts/{nobody}") == {
        "address": "0x0000000000000000000000000000000000000001",
        "available": "0",
        "held": "0",
        "holds": [],
    }
    bad_checksum = env.alice.address[:2] + env.alice.address[2:].swapcase()
    response = requests.get(f"{env.ledger_url}/accounts/{bad_checksum}", timeout=10)
    assert response.status_code == 400 and error_code(response) == "invalid_address"


def test_signed_transfers_over_http_and_history_pagination(env: GatewayEnv) -> None:
    frank = env.new_wallet("frank", "1")
    before = env.available(env.bob)
    sent = []
    for i in range(7):
        body = transfer_body(env, frank, env.bob.address, 1000 + i)
        response = submit(env, body)
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["kind"] == "transfer" and result["duplicate"] is False
        sent.append(result["txId"])
        if i == 0:  # the same signed transfer again is answered with its first result, not applied twice
            again = submit(env, body)
            assert again.status_code == 200, again.text
            assert (again.json()["txId"], again.json()["duplicate"]) == (result["txId"], True)
    env.wait_quiet()
    assert env.available(env.bob) == before + sum(1000 + i for i in range(7))
    assert env.available(frank) == 1_000_000 - sum(1000 + i for i in range(7))

    pages, before_seq = [], None
    while True:
        page = get(env, f"/accounts/{frank.address}/history", limit=3, **({"before": before_seq} if before_seq else {}))
        assert page["address"] == frank.address and len(page["entries"]) <= 3
        pages.append(page["entries"])
        before_seq = page["next"]
        if before_seq is None:
            break
    entries = [e for page in pages for e in page]
    assert [len(p) for p in pages] == [3, 3, 2]  # 7 transfers and the mint
    assert [e["txId"] for e in entries] == list(reversed(sent)) + [entries[-1]["txId"]]
    assert entries[-1]["transaction"]["kind"] == "mint"
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 8
    assert entries == get(env, f"/accounts/{frank.address}/history")["entries"]
    assert [e["txId"] for e in entries] == [s.tx_id for s in env.history(frank)]
    assert all(isinstance(e["blockHeight"], int) for e in entries)
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"before": "-1"}):
        response = requests.get(f"{env.ledger_url}/accounts/{frank.address}/history", params=bad, timeout=10)
        assert response.status_code == 400 and error_code(response) == "invalid_input"


def test_a_transaction_comes_with_an_inclusion_proof_to_a_signed_block(env: GatewayEnv) -> None:
    paid = requests.post(env.route_url(FLAT), json={"x": 1}, auth=PaymentAuth(env.alice), timeout=30)
    receipt = receipt_of(paid)
    assert receipt is not None
    env.wait_quiet()
    for tx_id in (receipt.tx_id, receipt.hold_id):
        found = get(env, f"/transactions/{tx_id}")
        stored = env.ledger.transaction(tx_id)
        assert (found["txId"], found["seq"], found["blockHeight"]) == (tx_id, stored.seq, stored.block_height)
        assert found["transaction"] == stored.tx.to_dict()
        block = verify_inclusion(found["inclusionProof"], env.chain)
        assert block.header.height == stored.block_height
        assert transaction_id(Transaction.from_dict(found["inclusionProof"]["transaction"])) == tx_id
    assert get(env, f"/transactions/{receipt.tx_id.upper().replace('0X', '0x')}")["txId"] == receipt.tx_id


def test_blocks_are_listed_signed_and_hold_their_transactions(env: GatewayEnv) -> None:
    env.wait_quiet()
    head = env.store.head().header.height
    assert head >= 3
    listed = get(env, "/blocks")["blocks"]
    assert [b["header"]["height"] for b in listed] == list(range(head + 1))
    assert get(env, "/blocks", **{"from": 1, "limit": 2})["blocks"] == listed[1:3]
    for data in listed:
        block = SignedBlock.from_dict(data)
        check_block_signature(block, env.chain.sealer)
        one = get(env, f"/blocks/{block.header.height}")
        assert {k: v for k, v in one.items() if k != "transactions"} == data
        assert [t["txId"] for t in one["transactions"]] == [
            s.tx_id for s in env.store.block_transactions(block.header.height)
        ]
        assert len(one["transactions"]) == block.header.tx_count
    for height in range(1, head + 1):
        assert listed[height]["header"]["prevHash"] == listed[height - 1]["hash"]


def test_consistency_proofs_between_any_two_heads(env: GatewayEnv) -> None:
    env.wait_quiet()
    pinned = fetch_head(env.ledger_url, env.chain)
    paid = requests.post(env.route_url(FLAT), json={}, auth=PaymentAuth(env.alice), timeout=30)
    assert paid.status_code == 200, paid.text
    env.wait_quiet()
    head = env.store.head().header.height
    assert head > pinned.header.height
    for old in (0, 1, pinned.header.height):
        proof = get(env, "/consistency", old=old, new=head)
        verify_consistency(
            SignedBlock.from_dict(proof["old"]), SignedBlock.from_dict(proof["new"]), proof["proof"], env.chain
        )
    assert check_consistency(env.ledger_url, pinned, env.chain).header.height == head
    response = requests.get(f"{env.ledger_url}/consistency", params={"old": head, "new": 0}, timeout=10)
    assert response.status_code == 400 and error_code(response) == "invalid_input"


BAD_TRANSFERS: dict[str, tuple[int, str]] = {
    "not JSON": (400, "invalid_input"),
    "no signature": (400, "invalid_input"),
    "an extra field": (400, "invalid_input"),
    "a malformed value": (400, "invalid_amount"),
    "a tampered signature": (402, "invalid_signature"),
    "signed by someone else": (402, "invalid_signature"),
    "more than the balance": (402, "insufficient_funds"),
    "an expired window": (402, "authorization_expired"),
    "a reused nonce": (402, "nonce_reused"),
    "a payment to oneself": (400, "invalid_input"),
}


def _bad_transfer(env: GatewayEnv, case: str) -> Any:
    good = transfer_body(env, env.alice, env.bob.address, 5)
    auth = good["authorization"]
    if case == "not JSON":
        return b"{not json"
    if case == "no signature":
        return {"authorization": auth}
    if case == "an extra field":
        return {**good, "memo": "hi"}
    if case == "a malformed value":
        return {**good, "authorization": {**auth, "value": "five"}}
    if case == "a tampered signature":
        return {**good, "authorization": {**auth, "value": "6"}}
    if case == "signed by someone else":
        return {**good, "signature": transfer_body(env, env.bob, env.alice.address, 5)["signature"]}
    if case == "more than the balance":
        return transfer_body(env, env.bob, env.alice.address, 10_000_000)
    if case == "an expired window":
        now = int(time.time())
        return transfer_body(env, env.alice, env.bob.address, 5, valid_after=now - 100, valid_before=now - 10)
    if case == "a reused nonce":
        nonce = "0x" + secrets.token_hex(32)
        assert submit(env, transfer_body(env, env.alice, env.bob.address, 5, nonce=nonce)).status_code == 201
        return transfer_body(env, env.alice, env.bob.address, 6, nonce=nonce)
    if case == "a payment to oneself":
        return transfer_body(env, env.alice, env.alice.address, 5)
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(BAD_TRANSFERS))
def test_a_bad_transfer_is_a_4xx_json_error_and_changes_nothing(env: GatewayEnv, case: str) -> None:
    status, code = BAD_TRANSFERS[case]
    body = _bad_transfer(env, case)
    before = env.quiet_dump()
    response = submit(env, body)
    assert (response.status_code, error_code(response)) == (status, code), response.text
    assert env.quiet_dump() == before


# The ledger API's POSTs of signed records (the compute pool's, and operator-signed mints).
SIGNED_POSTS = ("/ledger/providers", "/ledger/redeems", "/ledger/refunds", "/ledger/mints")


def _openapi_path(rule: str) -> str:
    """``/ledger/blocks/<int:height>`` -> ``/ledger/blocks/{}`` (parameter names aside)."""
    return re.sub(r"<(?:[a-z]+:)?\w+>", "{}", rule)


def test_openapi_lists_exactly_the_routes_served(env: GatewayEnv) -> None:
    from gateway.server.app import create_app

    document = requests.get(env.url + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    documented = {re.sub(r"\{\w+\}", "{}", p): ops for p, ops in document["paths"].items()}

    config = load_config(env.config_path, home=env.home)
    app = create_app(config, start_sealer=False)  # the same app, built in-process only to read its url_map
    try:
        served: dict[str, set[str]] = {}
        for rule in app.url_map.iter_rules():
            if rule.endpoint in ("static", "proxy.paid_call") or rule.endpoint.startswith("explorer."):
                continue  # the explorer's HTML pages are no API (README, "The explorer")
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            served.setdefault(_openapi_path(rule.rule), set()).update(methods)
    finally:
        app.extensions["inferpay"].close()
    for route in config.routes:  # the paid catch-all serves exactly the configured paths
        served.setdefault(route.path, set()).add("post")

    assert set(documented) == set(served)
    for path, methods in served.items():
        assert methods <= set(documented[path]), path

    # And each documented path answers on the running gateway (not 404), with sample parameters.
    samples = {
        "address": env.alice.address,
        "txId": env.store.head().to_dict()["hash"],
        "height": "0",
        "tilePath": "entries/000.p/1",
    }
    for path, operations in document["paths"].items():
        url = env.url + re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path)
        for method in operations:
            params = {"old": 0, "new": 0} if path.endswith("/consistency") else None
            response = requests.request(method, url, params=params, json={}, timeout=10)
            assert response.status_code != 500, (method, path, response.text)
            if path.startswith("/ledger/transactions/"):
                assert response.status_code == 404  # a block hash is no transaction: but the route is there
            elif path in ("/facilitator/verify", "/facilitator/settle") or (method == "post" and path in SIGNED_POSTS):
                assert response.status_code == 400  # {} is no x402 request, no signed record: but the route is there
            elif path == "/ledger/providers/{address}":
                assert response.status_code == 404  # alice is no provider: but the route is there
            elif path != "/ledger/transfers":
                assert response.status_code in (200, 402), (method, path, response.status_code, response.text)

"""Regression tests for the defects the reliability suite (``python -m reliability``) found.

Each test states the behaviour the suite expects. A defect's test is written while it is open,
marked ``xfail(strict=True, reason="BUG: ...")`` and listed in ``reliability/report.py``'s
``KNOWN_DEFECTS``; when the fix lands the strict xfail turns red, the marker and the entry are
removed, and the test stays here. Every test below was such a defect (docs/reliability.md).
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth, receipt_of
from gateway.client.payer import Payer
from gateway.server.config import parse_config
from gateway.wire.errors import ConfigError, MalformedPayment, ReceiptInvalid
from gateway.wire.x402 import PaymentPayload
from ledger.audit import audit
from ledger.crypto import sign_digest
from ledger.encoding import signing_digest
from ledger.storage.sqlite import SQLiteStore
from ledger.types import Allowance
from reliability.mitm import LyingGateway
from tests.ledger.test_audit_tamper import attacker
from tests.support.gateway import FLAT, GatewayEnv, error_code, start_gateway_env
from tests.support.ledger import UNIT, FakeClock, LedgerFixture, make_ledger

DEEP_JSON = base64.b64encode(b"[" * 5000).decode()  # 6668 characters: under MAX_HEADER_BYTES


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("reliability-regressions"))) as started:
        yield started


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[LedgerFixture]:
    fixture = make_ledger(tmp_path, backend="sqlite")
    yield fixture
    fixture.close()


# ---- deeply nested JSON: a parser error, never a 500 ----


def test_a_deeply_nested_payment_header_is_malformed_payment() -> None:
    with pytest.raises(MalformedPayment):
        PaymentPayload.from_header(DEEP_JSON)


def test_the_client_sdk_ignores_a_deeply_nested_402(sqlite_ledger: LedgerFixture) -> None:
    from wallets.wallet import Wallet

    payer = Payer(Wallet.from_private_key("alice", sqlite_ledger.party("alice").key))
    assert payer.challenge({"PAYMENT-REQUIRED": DEEP_JSON}) is None


def test_a_deeply_nested_payment_header_is_400_at_the_gateway(env: GatewayEnv) -> None:
    response = requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": DEEP_JSON}, timeout=30)
    assert response.status_code == 400 and error_code(response) == "malformed_payment"


def test_a_deeply_nested_transfer_body_is_400(env: GatewayEnv) -> None:
    response = requests.post(
        env.ledger_url + "/transfers", data=b"[" * 100_000, timeout=30, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and error_code(response)


# ---- configuration: a bad upstream URL names its key ----


def test_an_unparseable_upstream_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]\.upstream"):
        parse_config({"routes": [{"path": "/v1/x", "upstream": "http://[", "price": "0.001"}]})


# ---- the clock stepped back: sealing must go on ----


def test_auto_sealing_goes_on_after_the_clock_steps_back(tmp_path: Path) -> None:
    clock = FakeClock()
    lf = make_ledger(tmp_path, clock=clock, backend="sqlite")
    try:
        payer = lf.party("payer")
        lf.mint(payer.address, UNIT)
        clock.advance(1)
        assert lf.ledger.maybe_seal(max_age_ms=200, max_txs=1000)
        lf.mint(payer.address, UNIT)
        clock.advance(-60)  # an NTP step back: the waiting transaction was accepted "in the future"
        clock.advance(1)
        assert lf.ledger.maybe_seal(max_age_ms=200, max_txs=1000), "nothing sealed"
        assert lf.ledger.store.unsealed()[0] == 0
    finally:
        lf.close()


# ---- receipts: a genuine receipt of an earlier payment is not a receipt for this one ----


def test_the_sdk_refuses_a_receipt_replayed_from_an_earlier_payment(env: GatewayEnv) -> None:
    liar = LyingGateway(env.url)
    try:
        auth = PaymentAuth(env.alice, trusted_sealer=env.chain.sealer)
        first = requests.post(liar.url + FLAT, json={"n": 1}, auth=auth, timeout=30)
        assert receipt_of(first) is not None
        liar.mode = "receipt_replayed"  # every later paid answer carries the first receipt
        with pytest.raises(ReceiptInvalid):
            requests.post(liar.url + FLAT, json={"n": 2}, auth=auth, timeout=30)
    finally:
        liar.close()


# ---- the auditor: every table it vouches for, and never a crash ----


def _allowance_ledger(lf: LedgerFixture) -> None:
    owner, spender = lf.party("owner"), lf.party("spender")
    lf.mint(owner.address, 10 * UNIT)
    allowance = Allowance(owner.address, spender.address, UNIT, int(time.time()) + 3600, "0x" + secrets.token_hex(32))
    lf.ledger.grant_allowance(allowance, sign_digest(owner.key, signing_digest(lf.chain, allowance)))
    lf.ledger.seal_all()
    assert audit(SQLiteStore(lf.path)).ok


def test_an_allowance_whose_cap_was_raised_in_the_file_is_reported(sqlite_ledger: LedgerFixture) -> None:
    _allowance_ledger(sqlite_ledger)
    with attacker(Path(sqlite_ledger.path)) as conn:
        conn.execute("UPDATE allowances SET cap = cap * 100")
    assert not audit(SQLiteStore(sqlite_ledger.path)).ok


def test_a_deleted_history_index_row_is_reported(sqlite_ledger: LedgerFixture) -> None:
    payer = sqlite_ledger.party("payer")
    sqlite_ledger.mint(payer.address, UNIT)
    sqlite_ledger.ledger.seal_all()
    with attacker(Path(sqlite_ledger.path)) as conn:
        conn.execute("DELETE FROM postings")
    assert sqlite_ledger.ledger.store.history(payer.address, 10) == []  # the mint vanished from history
    assert not audit(SQLiteStore(sqlite_ledger.path)).ok


def test_a_deleted_transaction_in_block_one_is_reported_not_a_crash(sqlite_ledger: LedgerFixture) -> None:
    payer = sqlite_ledger.party("payer")
    for _ in range(3):  # three blocks of one transaction each
        sqlite_ledger.mint(payer.address, UNIT)
        sqlite_ledger.ledger.seal()
    with sqlite3.connect(sqlite_ledger.path) as conn:
        conn.execute("DELETE FROM transactions WHERE seq = 1")
    report = audit(SQLiteStore(sqlite_ledger.path))
    assert not report.ok and report.problems[0].code in ("tx_count_mismatch", "merkle_mismatch", "sequence_gap")


# ---- block heights past what SQLite stores: not found, never a 500 ----


def test_a_block_height_past_the_largest_integer_is_not_found(env: GatewayEnv) -> None:
    response = requests.get(f"{env.ledger_url}/blocks/{2**64}", timeout=30)
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_listing_blocks_from_the_largest_height_is_an_empty_page(env: GatewayEnv) -> None:
    response = requests.get(f"{env.ledger_url}/blocks", params={"from": 2**63 - 1}, timeout=30)
    assert response.status_code == 200 and response.json() == {"blocks": []}


# ---- a storage failure's answer names no database (found by the disk-full phase) ----


def test_a_full_disk_answers_storage_unavailable_without_naming_the_database(tmp_path: Path) -> None:
    from reliability.diskfull import Tmpfs, unavailable

    if (why := unavailable()) is not None:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    with Tmpfs("24m") as disk, start_gateway_env(disk.path) as env:
        disk.fill()
        try:
            answers = []
            # Every request is answered: a worker killed by SIGBUS (prometheus_client's sparse
            # metric files on the full disk; tests/gateway/test_metrics_disk.py) closed
            # connections without an answer, in CI twice.
            for _ in range(50):  # the WAL may have room for a few commits still
                header, _ = env.payment(env.alice)
                response = requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header})
                if response.status_code == 503:
                    answers.append(response)
                    break
            assert answers, "no write was refused on a full disk"
            assert error_code(answers[0]) == "storage_unavailable"
            assert str(disk.path) not in answers[0].text and "ledger.db" not in answers[0].text
        finally:
            disk.release()
        header, _ = env.payment(env.alice)  # space is back: paid again
        assert requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}).ok


def test_a_witness_on_a_full_disk_answers_503_without_naming_its_state_file() -> None:
    from ledger import merkle
    from ledger.errors import WitnessUnavailable
    from reliability.diskfull import Tmpfs, unavailable
    from tests.ledger.tlog_support import MemoryLog
    from tests.witness.support import start_witness, write_config
    from witness.client import add_checkpoint

    if (why := unavailable()) is not None:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    log = MemoryLog()
    log.append(*(b"entry %d" % i for i in range(3)))
    with Tmpfs("4m") as disk, start_witness(write_config(disk.path / "witness", [log.signer])) as server:
        add_checkpoint(server.url, 0, [], log.signed(1), 10)
        disk.fill()
        with pytest.raises(WitnessUnavailable) as refused:
            add_checkpoint(server.url, 1, merkle.consistency_proof(log.leaves[:2], 1), log.signed(2), 10)
        assert refused.value.details.get("status") == 503
        assert "[storage_unavailable]" in refused.value.message
        assert str(disk.path) not in refused.value.message and "witness.db" not in refused.value.message
        disk.release()
        assert add_checkpoint(server.url, 1, merkle.consistency_proof(log.leaves[:2], 1), log.signed(2), 10)


def test_a_storage_failure_at_the_gateway_names_no_database() -> None:
    """The PostgreSQL backend's message names the server, port, user, database and schema (the
    pg-faults phase saw it in every 503): a caller gets the code and a generic message."""
    from flask import Flask

    from gateway.server.error_handlers import STORAGE_UNAVAILABLE_MESSAGE, register
    from ledger.errors import StorageUnavailable

    app = Flask("storage-failure")
    register(app)

    @app.get("/fails")
    def fails() -> None:
        raise StorageUnavailable(
            "PostgreSQL at postgresql://ledger@db.internal:5432/prod?schema=pay is unavailable: server closed"
        )

    response = app.test_client().get("/fails")
    assert response.status_code == 503
    assert response.get_json() == {"error": {"code": "storage_unavailable", "message": STORAGE_UNAVAILABLE_MESSAGE}}


def test_a_commit_of_unknown_outcome_is_503_naming_the_transaction_not_the_database() -> None:
    """Defect 13: past the store's bound the gateway cannot know whether a commit landed; its
    answer must say so (a client retries or looks it up), not "unavailable" (which says nothing
    was done), and still name no database. The client SDK maps the code back to its class."""
    from flask import Flask

    from gateway.client.payer import gateway_error
    from gateway.server.error_handlers import COMMIT_OUTCOME_UNKNOWN_MESSAGE, register
    from ledger.errors import CommitOutcomeUnknown

    app = Flask("commit-outcome-unknown")
    register(app)
    tx_id = "0x" + "ab" * 32

    @app.get("/fails")
    def fails() -> None:
        raise CommitOutcomeUnknown(
            "the database went away while transaction ... (PostgreSQL at postgresql://ledger@db.internal:5432/prod)",
            txId=tx_id,
        )

    response = app.test_client().get("/fails")
    assert response.status_code == 503
    assert response.get_json() == {
        "error": {"code": "commit_outcome_unknown", "message": COMMIT_OUTCOME_UNKNOWN_MESSAGE, "txId": tx_id}
    }
    error = gateway_error(response.data)
    assert isinstance(error, CommitOutcomeUnknown) and error.details["txId"] == tx_id


# ---- a charge committed, then the database gone: answered as served, never as refused ----


@dataclass
class PayingApp:
    """The real gateway app (``create_app``) on a real home, SQLite ledger and echo upstream,
    driven through Flask's test client, so that one ledger call can be made to fail in-process
    exactly where a database outage would strike; ``payer`` is alice's SDK."""

    client: Any
    svc: Any
    payer: Payer
    address: str

    def paid_call(self) -> tuple[Any, Any]:
        """A 402, then the paid retry; returns the SDK's payment and the retry's answer."""
        asked = self.client.post("/v1/flat", data=b"{}")
        assert asked.status_code == 402
        challenge = self.payer.challenge(asked.headers, asked.data)
        assert challenge is not None
        payment = self.payer.pay(challenge, "POST", "http://localhost/v1/flat", b"{}")
        return payment, self.client.post("/v1/flat", data=b"{}", headers={"PAYMENT-SIGNATURE": payment.header})

    def stored(self) -> list[str]:
        return [raw.tx_id for raw in self.svc.ledger.store.iter_raw_transactions()]


@pytest.fixture
def paying_app(tmp_path: Path) -> Iterator[PayingApp]:
    from click.testing import CliRunner

    from gateway.server.app import close_app, create_app
    from gateway.server.home import Home
    from gateway.server.services import EXTENSION
    from inferpay_cli.main import cli
    from tests.support.gateway import PASSWORD, SCRYPT_N, start_upstreams

    home = tmp_path / "home"
    cli_env = {"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    for args in (["init"], ["wallet", "create", "alice"], ["mint", "alice", "10"]):
        result = CliRunner().invoke(cli, args, env=cli_env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    with start_upstreams() as (echo, _):
        config = parse_config(
            {"routes": [{"path": "/v1/flat", "upstream": echo.url + "/v1/echo", "price": "0.001"}]}, home=home
        )
        app = create_app(config, start_sealer=False)
        try:
            alice = Home(home).wallets.load("alice", PASSWORD)
            yield PayingApp(app.test_client(), app.extensions[EXTENSION], Payer(alice), alice.address)
        finally:
            close_app(app)


def test_a_call_whose_balance_is_unreadable_after_its_charge_commits_is_answered_as_served(
    paying_app: PayingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 13's second half (pg-faults, 2026-12-03, seed 85971): a paid call and an API-key
    charge answered 503 ``storage_unavailable`` *after* their settle committed. The receipt's
    ``balanceAfter`` is read once the settle is in; PostgreSQL was killed between the two, so
    the read failed and the call was refused though charged. Here the read fails the same way
    (the ledger's database gone just then): the call is served, the receipt proves the charge,
    and says nothing of the balance it could not read."""
    from gateway.wire.receipts import Receipt
    from gateway.wire.x402 import decode_header
    from ledger.errors import StorageUnavailable

    app = paying_app
    before = len(app.stored())

    def gone(address: str) -> None:
        raise StorageUnavailable("the ledger's database went away")

    with monkeypatch.context() as patched:
        patched.setattr(app.svc.ledger, "balance", gone)
        payment, paid = app.paid_call()

    assert paid.status_code == 200, paid.text
    settlement = decode_header(paid.headers["PAYMENT-RESPONSE"])
    assert settlement["success"] is True and "balanceAfter" not in settlement
    receipt = app.payer.finish(payment, paid.status_code, paid.headers, paid.data)
    assert receipt is not None and receipt.balance_after is None and receipt.charged == 1000
    Receipt.from_dict(settlement["receipt"]).verify(app.svc.sealer.address)
    stored = app.stored()
    assert len(stored) == before + 2  # the hold and its settle, once each
    assert stored.count(receipt.tx_id) == 1
    assert app.svc.ledger.balance(app.address).available == 10_000_000 - 1000


def test_a_facilitated_settle_whose_balance_is_unreadable_is_answered_as_settled(
    paying_app: PayingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 13's second half on the facilitator's path (``POST /facilitator/settle``, which
    builds its receipt with the same ``Services.balance_after_settle``): the settle commits, the
    balance read after it fails, and the answer is still a success whose receipt proves the
    charge and leaves the balance out."""
    from gateway.wire.receipts import Receipt
    from gateway.wire.x402 import decode_header
    from ledger.errors import StorageUnavailable

    app = paying_app
    asked = app.client.post("/v1/flat", data=b"{}")
    challenge = app.payer.challenge(asked.headers, asked.data)
    assert challenge is not None
    payment = app.payer.pay(challenge, "POST", "http://resource.test/paid", b"{}")
    payload = decode_header(payment.header)
    payload["resource"] = {"url": "http://resource.test/paid"}
    body = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": payload["accepted"]}
    before = len(app.stored())

    def gone(address: str) -> None:
        raise StorageUnavailable("the ledger's database went away")

    with monkeypatch.context() as patched:
        patched.setattr(app.svc.ledger, "balance", gone)
        settled = app.client.post("/facilitator/settle", json=body)

    assert settled.status_code == 200, settled.data
    answer = settled.get_json()
    assert answer["success"] is True, answer
    receipt = answer["extensions"]["inferpay"]["receipt"]
    assert "balanceAfter" not in receipt
    Receipt.from_dict(receipt).verify(app.svc.sealer.address)
    assert len(app.stored()) == before + 2  # its hold and its settle, once each
    assert app.svc.ledger.balance(app.address).available == 10_000_000 - 1000


@pytest.mark.parametrize("outcome_known", [True, False])
def test_the_sdk_keeps_a_payment_of_unknown_outcome_counted(
    paying_app: PayingApp, monkeypatch: pytest.MonkeyPatch, outcome_known: bool
) -> None:
    """A settle whose commit's fate is unknown reaches the client as 503
    ``commit_outcome_unknown`` through the real paid path, and the SDK keeps the authorization
    counted against its spend policy (it may have been captured); a plain
    ``storage_unavailable`` (nothing done) releases it."""
    from ledger.errors import CommitOutcomeUnknown, StorageUnavailable

    app = paying_app
    error = (
        StorageUnavailable("the database is down")
        if outcome_known
        else CommitOutcomeUnknown("the database went away mid-commit", txId="0x" + "cd" * 32)
    )

    def fails(hold_id: str, amount: int) -> None:
        raise error

    with monkeypatch.context() as patched:
        patched.setattr(app.svc.ledger, "settle", fails)
        payment, paid = app.paid_call()

    assert paid.status_code == 503 and paid.get_json()["error"]["code"] == error.code
    with pytest.raises(type(error)):
        app.payer.finish(payment, paid.status_code, paid.headers, paid.data)
    assert app.payer.spent == (0 if outcome_known else payment.authorization.value)

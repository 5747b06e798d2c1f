"""The PostgreSQL store under the conditions it exists for: many threads, processes and hosts
writing one ledger, sealers racing and dying, the server going away and coming back, and ledgers
moving between SQLite and PostgreSQL.

Every test gets a schema of its own in the server at ``$INFERPAY_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``), dropped afterwards; the whole module is skipped,
saying why, when that server does not answer. The single-process rules (every test in
test_ledger.py, through the ``lf`` fixture) already run on both backends; this module adds what
test_concurrency.py and test_audit_tamper.py check on SQLite with SQLite's own tools.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from ledger.audit import audit
from ledger.blocks import next_block
from ledger.clock import system_now_ms
from ledger.crypto import KeySigner, address_of, new_private_key, sign_digest
from ledger.encoding import signing_digest
from ledger.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    MalformedRecord,
    StorageUnavailable,
)
from ledger.ledger import Ledger
from ledger.sealer import AutoSealer
from ledger.storage import open_store
from ledger.storage.base import LedgerStore
from ledger.storage.dump import export_ledger, import_ledger
from ledger.storage.postgres import PostgresStore
from ledger.storage.postgres_schema import MIGRATIONS
from ledger.types import Account, Allowance, SignedBlock
from tests.ledger import test_ledger_model as model
from tests.support.ledger import (
    POSTGRES_URL,
    UNIT,
    LedgerFixture,
    drop_schema,
    make_ledger,
    new_postgres_url,
    postgres_unavailable,
    snapshot,
    using_backend,
)
from tests.support.workers import run_together, seal_in_process, spend_in_process

pytestmark = pytest.mark.skipif(postgres_unavailable() is not None, reason=str(postgres_unavailable()))

TIMEOUT = 60  # seconds: a racer or child that never arrives fails the test instead of hanging it


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[LedgerFixture]:
    fixture = make_ledger(tmp_path, backend="postgres")
    yield fixture
    fixture.close()


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(POSTGRES_URL, autocommit=True)


def schema_of(lf: LedgerFixture) -> str:
    return str(lf.path).split("schema=", 1)[1].split("&", 1)[0]


def assert_chain_well_formed(store: LedgerStore) -> None:
    """Blocks 0..H contiguous and linked; every transaction sealed into exactly one block."""
    head = store.head().header.height
    blocks = store.blocks(0, head + 1)
    assert [b.header.height for b in blocks] == list(range(head + 1))
    for previous, block in zip(blocks, blocks[1:], strict=False):
        assert block.header.prev_hash == previous.block_hash
        assert block.header.tree_size == previous.header.tree_size + block.header.tx_count
    rows = [(t.seq, t.block_height) for t in store.iter_raw_transactions()]
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), "seq has gaps"
    assert all(height is not None for _, height in rows), "a transaction was left unsealed"
    placed: list[int] = []
    for block in blocks:
        seqs = [t.seq for t in store.block_transactions(block.header.height)]
        assert len(seqs) == block.header.tx_count
        placed.extend(seqs)
    assert placed == [seq for seq, _ in rows]  # each once, in order, none missing
    assert blocks[-1].header.tree_size == len(rows)


def assert_audit_ok(store: LedgerStore, transactions: int | None = None) -> None:
    report = audit(store)
    assert report.ok, [str(p) for p in report.problems]
    if transactions is not None:
        assert report.transactions == transactions


# ---- bad URLs, an unreachable server, and coming back ----


def test_an_unreachable_server_is_one_clear_storage_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        open_store("postgresql://postgres:hunter2@127.0.0.1:1/test")
    message = caught.value.message
    assert time.monotonic() - started < 10
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith("cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/test:"), message
    assert "refused" in message.lower()


def test_an_unknown_database_says_so() -> None:
    with pytest.raises(StorageUnavailable, match="does not exist") as caught:
        open_store(POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database_" + secrets.token_hex(4))
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://postgres@127.0.0.1:notaport/test", "bad PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1/test?schema=drop;table", "bad schema name"),
        ("postgresql://postgres@127.0.0.1/test?no_such_option=1", "invalid URI query parameter"),
        ("postgresql://postgres@127.0.0.1/test?pool_size=0", "bad pool_size"),
        ("mysql://root@127.0.0.1/test", "unsupported database URL scheme"),
    ],
)
def test_a_bad_url_is_one_clear_invalid_input(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as caught:
        open_store(url)
    assert "\n" not in caught.value.message


def test_the_cli_reports_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    from inferpay_cli.main import cli

    runner = CliRunner(env={"INFERPAY_HOME": str(tmp_path), "INFERPAY_DATABASE": "postgresql://u:pw@127.0.0.1:1/x"})
    result = runner.invoke(cli, ["info"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    assert result.stderr.startswith("error: cannot connect to PostgreSQL at postgresql://u@127.0.0.1:1/x")


def test_connections_the_server_killed_are_replaced_without_an_error(pg: LedgerFixture) -> None:
    name = "inferpay_kill_" + secrets.token_hex(4)
    store = open_store(f"{pg.path}&application_name={name}")
    try:
        alice = pg.party("alice")
        pg.mint(alice.address, 5 * UNIT)
        assert store.account(alice.address).available == 5 * UNIT
        with admin() as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [name]
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        time.sleep(0.2)
        # Every pooled connection is dead now; the pool's check throws each away and reconnects.
        for _ in range(5):
            assert store.account(alice.address).available == 5 * UNIT
        assert store.supply() == 5 * UNIT
    finally:
        store.close()


class TcpProxy:
    """A TCP relay to the PostgreSQL server that can be switched off (refusing connections and
    cutting every open one, as a server going down would) and on again, on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


def test_the_server_going_away_fails_cleanly_and_the_store_recovers_when_it_returns(pg: LedgerFixture) -> None:
    target = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    host, port = str(target.get("host", "127.0.0.1")), int(str(target.get("port", 5432)))
    proxy = TcpProxy((host, port))
    proxy.start()
    url = str(pg.path).replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    assert url != str(pg.path), "the test URL must name host:port explicitly"
    ledger = Ledger(open_store(url + "&pool_timeout=1"), sealer=KeySigner(pg.sealer_key), clock=pg.clock)
    try:
        alice, bob = pg.party("alice"), pg.party("bob")
        pg.mint(alice.address, 10 * UNIT)
        assert ledger.balance(alice.address).available == 10 * UNIT

        proxy.stop()  # the server is gone: refused connections, and the pooled ones cut
        auth, signature = pg.authorization(alice, bob.address, UNIT)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            ledger.transfer(auth, signature)
        assert time.monotonic() - started < 10 and "\n" not in caught.value.message
        with pytest.raises(StorageUnavailable):
            ledger.balance(alice.address)
        assert pg.ledger.balance(alice.address).available == 10 * UNIT  # nothing was half-written

        proxy.start()  # back: the same store carries on once the pool has reconnected
        deadline = time.monotonic() + 30
        while True:
            try:
                result = ledger.transfer(auth, signature)  # the same signed payment, retried
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the store did not recover after the server came back"
                time.sleep(0.2)
        assert not result.duplicate
        assert ledger.balance(alice.address).available == 9 * UNIT
        assert ledger.seal_all()
        assert_audit_ok(pg.ledger.store, 2)
    finally:
        ledger.store.close()
        proxy.stop()


# ---- threads on one PostgreSQL ledger ----


def test_twenty_threads_spend_a_balance_of_five_exactly_five_times(pg: LedgerFixture) -> None:
    payer, payee = pg.party("payer"), pg.party("payee")
    pg.mint(payer.address, 5 * UNIT)
    signed = [pg.authorization(payer, payee.address, UNIT) for _ in range(20)]
    ledgers = [pg.reopen() for _ in range(4)]  # four "workers", five threads each

    results = run_together([partial(ledgers[i % 4].transfer, a, s) for i, (a, s) in enumerate(signed)])

    errors = [r for r in results if isinstance(r, Exception)]
    assert len(results) - len(errors) == 5
    assert all(isinstance(e, InsufficientFunds) for e in errors), errors
    assert pg.ledger.balance(payer.address) == Account(payer.address, 0, 0)
    assert pg.ledger.balance(payee.address).available == 5 * UNIT
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 6)


def test_the_same_transaction_submitted_by_many_threads_is_applied_once(pg: LedgerFixture) -> None:
    payer, payee = pg.party("payer"), pg.party("payee")
    pg.mint(payer.address, 5 * UNIT)
    auth, signature = pg.authorization(payer, payee.address, 2 * UNIT)
    ledgers = [pg.reopen() for _ in range(3)]

    results = run_together([partial(ledgers[i % 3].transfer, auth, signature) for i in range(12)])

    assert [r for r in results if isinstance(r, Exception)] == []
    assert len({r.tx_id for r in results}) == 1 and len({r.seq for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 11
    assert pg.ledger.balance(payer.address).available == 3 * UNIT


def test_racing_settle_void_and_retry_resolve_each_hold_once(pg: LedgerFixture) -> None:
    payer, payee = pg.party("payer"), pg.party("payee")
    pg.mint(payer.address, 10 * UNIT)
    ledgers = [pg.reopen() for _ in range(3)]
    holds = [pg.ledger.hold(*pg.authorization(payer, payee.address, UNIT)) for _ in range(8)]
    capture = UNIT // 4
    racers: list[Callable[[], Any]] = []
    for hold in holds:
        racers += [
            partial(ledgers[0].settle, hold.tx_id, capture),
            partial(ledgers[1].settle, hold.tx_id, capture),
            partial(ledgers[2].void, hold.tx_id),
        ]
    outcomes = run_together(racers)

    settled = 0
    for index, hold in enumerate(holds):
        settle_a, settle_b, void = outcomes[3 * index : 3 * index + 3]
        row = pg.ledger.store.hold(hold.tx_id)
        assert row is not None
        if row.status == "settle":
            settled += 1
            assert isinstance(void, IdempotencyConflict), void
            assert settle_a.tx_id == settle_b.tx_id == row.resolution_tx
            assert sorted([settle_a.duplicate, settle_b.duplicate]) == [False, True]
        else:
            assert row.status == "void" and void.tx_id == row.resolution_tx, row
            assert isinstance(settle_a, IdempotencyConflict) and isinstance(settle_b, IdempotencyConflict)
    assert pg.ledger.store.open_holds() == []
    assert pg.ledger.balance(payer.address) == Account(payer.address, 10 * UNIT - settled * capture, 0)
    assert pg.ledger.balance(payee.address).available == settled * capture
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 1 + 8 + 8)


def test_workers_expiring_the_same_holds_release_each_exactly_once(pg: LedgerFixture) -> None:
    payer, payee = pg.party("payer"), pg.party("payee")
    pg.mint(payer.address, 10 * UNIT)
    for _ in range(10):
        pg.ledger.hold(*pg.authorization(payer, payee.address, UNIT, ttl=60))
    pg.clock.advance(120)
    ledgers = [pg.reopen() for _ in range(4)]

    results = run_together([ledger.expire_holds for ledger in ledgers])

    assert [r for r in results if isinstance(r, Exception)] == []
    assert len([r for batch in results for r in batch if not r.duplicate]) == 10
    assert pg.ledger.balance(payer.address) == Account(payer.address, 10 * UNIT, 0)
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 1 + 10 + 10)


def test_payments_both_ways_between_two_accounts_do_not_deadlock_or_lose_money(pg: LedgerFixture) -> None:
    """A->B and B->A at once lock the same two rows in opposite orders unless the store orders its
    locks; settles of holds between them lock both too."""
    alice, bob = pg.party("alice"), pg.party("bob")
    pg.mint(alice.address, 100 * UNIT)
    pg.mint(bob.address, 100 * UNIT)
    alice_holds = [pg.ledger.hold(*pg.authorization(alice, bob.address, UNIT)).tx_id for _ in range(10)]
    bob_holds = [pg.ledger.hold(*pg.authorization(bob, alice.address, UNIT)).tx_id for _ in range(10)]
    ledgers = [pg.reopen() for _ in range(4)]
    racers: list[Callable[[], Any]] = []
    for i in range(10):
        racers.append(partial(ledgers[0].transfer, *pg.authorization(alice, bob.address, 3 * UNIT)))
        racers.append(partial(ledgers[1].transfer, *pg.authorization(bob, alice.address, 2 * UNIT)))
        racers.append(partial(ledgers[2].settle, alice_holds[i], UNIT))
        racers.append(partial(ledgers[3].settle, bob_holds[i], UNIT // 2))

    started = time.monotonic()
    results = run_together(racers)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert time.monotonic() - started < 30
    expected_alice = 100 * UNIT - 10 * 3 * UNIT + 10 * 2 * UNIT - 10 * UNIT + 10 * (UNIT // 2)
    assert pg.ledger.balance(alice.address) == Account(alice.address, expected_alice, 0)
    assert pg.ledger.balance(bob.address) == Account(bob.address, 200 * UNIT - expected_alice, 0)
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 2 + 20 + 40)


def test_concurrent_charges_never_pass_an_allowance_cap(pg: LedgerFixture) -> None:
    owner, gateway = pg.party("owner"), pg.party("gateway")
    pg.mint(owner.address, 100 * UNIT)
    allowance = Allowance(
        owner.address, gateway.address, 7 * UNIT, pg.clock.now_s() + 3600, "0x" + secrets.token_hex(32)
    )
    granted = pg.ledger.grant_allowance(allowance, sign_digest(owner.key, signing_digest(pg.chain, allowance)))
    expires = pg.clock.now_s() + 300
    ledgers = [pg.reopen() for _ in range(4)]

    results = run_together(
        [partial(ledgers[i % 4].charge, granted.tx_id, UNIT, expires_at_s=expires) for i in range(16)]
    )

    charged = [r for r in results if not isinstance(r, Exception)]
    assert len(charged) == 7, results
    row = pg.ledger.store.allowance(granted.tx_id)
    assert row is not None and row.spent == 7 * UNIT
    assert pg.ledger.balance(owner.address) == Account(owner.address, 93 * UNIT, 7 * UNIT)
    for result in charged[:3]:
        pg.ledger.void(result.tx_id)  # released amounts go back to the allowance
    row = pg.ledger.store.allowance(granted.tx_id)
    assert row is not None and row.spent == 4 * UNIT
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 2 + 7 + 3)


def test_a_write_the_server_aborted_as_a_deadlock_is_retried_whole(pg: LedgerFixture) -> None:
    store = pg.ledger.store
    assert isinstance(store, PostgresStore)
    calls: list[int] = []

    def work(conn: psycopg.Connection[Any]) -> int:
        calls.append(1)
        conn.execute("UPDATE supply SET minted = minted + 1 WHERE id = 1")
        if len(calls) < 3:  # what PostgreSQL raises when it picks this transaction as the victim
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'victim' USING ERRCODE = '40P01'; END $$")
        return len(calls)

    assert store._write(work) == 3
    assert store.supply() == 1  # the two aborted attempts left nothing behind


def test_workers_opening_a_fresh_schema_at_once_all_succeed() -> None:
    for _ in range(3):
        url = new_postgres_url()
        try:
            results = run_together([partial(open_store, url) for _ in range(6)])
            errors = [r for r in results if isinstance(r, Exception)]
            for result in results:
                if isinstance(result, LedgerStore):
                    result.close()
            assert errors == [], errors
            with admin() as conn:
                rows = conn.execute(f"SELECT name FROM {url.split('schema=')[1]}.schema_migrations").fetchall()
            assert sorted(rows) == [(name,) for name, _ in MIGRATIONS]
        finally:
            drop_schema(url)


# ---- processes: the bank test, racing sealers, a sealer killed mid-block ----
# Workers are module-level so a "spawn" child can import them; each builds everything from plain
# values (the URL and hex keys), as a gateway worker on another host would.


def _collect(results: Any, want: int, deadline: float) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    while len(got) < want:
        got.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


def _join_all(children: list[Any]) -> None:
    for child in children:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()


def test_four_processes_spend_exactly_what_is_there_while_two_processes_seal(pg: LedgerFixture) -> None:
    """The bank test on PostgreSQL: 4 processes x 10 transfers of 1 from a wallet holding 15, while
    two more processes seal: exactly 15 succeed, the balance never dips below 0 (watched from
    outside while they race), the chain is whole and the audit finds nothing."""
    processes, attempts, funded = 4, 10, 15
    payer_key = new_private_key()
    payer = address_of(payer_key)
    payee = pg.party("payee").address
    pg.mint(payer, funded * UNIT)
    pg.ledger.seal_all()

    ctx = multiprocessing.get_context("spawn")
    barrier, stop, results = ctx.Barrier(processes + 2), ctx.Event(), ctx.Queue()
    url, sealer_hex = str(pg.path), pg.sealer_key.hex()
    children = [
        ctx.Process(
            target=spend_in_process,
            args=(url, sealer_hex, payer_key.hex(), pg.chain.to_dict(), payee, attempts, barrier, results),
        )
        for _ in range(processes)
    ] + [ctx.Process(target=seal_in_process, args=(url, sealer_hex, 3, barrier, stop, results)) for _ in range(2)]
    for child in children:
        child.start()
    deadline = time.monotonic() + 120
    lowest = funded * UNIT
    try:
        spenders: list[tuple[Any, ...]] = []
        with admin() as watcher:
            watcher.execute(f'SET search_path TO "{schema_of(pg)}"')
            while len(spenders) < processes and time.monotonic() < deadline:
                assert not [c.exitcode for c in children if c.exitcode not in (None, 0)], "a child crashed"
                row = watcher.execute("SELECT available, held FROM accounts WHERE address = %s", [payer]).fetchone()
                assert row is not None
                lowest = min(lowest, row[0], row[1])
                while not results.empty():
                    spenders.append(results.get())
                time.sleep(0.002)
        stop.set()
        done = spenders + _collect(results, len(children) - len(spenders), deadline)
    finally:
        stop.set()
        _join_all(children)

    spent = [m for m in done if m[0] == "spender"]
    sealers = [m for m in done if m[0] == "sealer"]
    assert [m[3] for m in spent if m[3]] == [] and [m[2] for m in sealers if m[2]] == []
    assert sum(m[1] for m in spent) == funded
    assert sum(m[2] for m in spent) == processes * attempts - funded
    assert lowest >= 0
    assert pg.ledger.balance(payer) == Account(payer, 0, 0)
    assert pg.ledger.balance(payee).available == funded * UNIT
    heights = sorted(sealers[0][1] + sealers[1][1])
    assert heights == list(range(2, 2 + len(heights))), "sealers skipped or repeated a height"
    pg.ledger.seal_all()
    assert_chain_well_formed(pg.ledger.store)
    assert_audit_ok(pg.ledger.store, 1 + funded)


def test_two_sealer_processes_at_once_keep_blocks_contiguous(pg: LedgerFixture) -> None:
    payers = [pg.party(f"p{i}") for i in range(3)]
    payee = pg.party("payee")
    for payer in payers:
        pg.mint(payer.address, 100 * UNIT)
    for i in range(60):
        pg.transfer(payers[i % 3], payee.address, UNIT)
    assert pg.ledger.store.unsealed()[0] == 63

    ctx = multiprocessing.get_context("spawn")
    barrier, stop, results = ctx.Barrier(2), ctx.Event(), ctx.Queue()
    stop.set()  # seal until nothing is left, then stop
    children = [
        ctx.Process(target=seal_in_process, args=(str(pg.path), pg.sealer_key.hex(), 2, barrier, stop, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    try:
        done = _collect(results, 2, time.monotonic() + 120)
    finally:
        _join_all(children)

    assert [m[2] for m in done if m[2]] == []
    heights = sorted(done[0][1] + done[1][1])
    assert heights == list(range(1, 33)), heights  # 63 transactions, 2 per block
    assert pg.ledger.store.unsealed() == (0, None)
    assert_chain_well_formed(pg.ledger.store)
    assert_audit_ok(pg.ledger.store, 63)


def _seal_slowly_in_process(url: str, sealer_hex: str, inside: Any, results: Any) -> None:
    """Seal one block, but stop inside the seal transaction (lock held, block being made) for a
    long time: the test kills this process there."""
    try:
        store = open_store(url)
        signer = KeySigner(bytes.fromhex(sealer_hex))

        def make(previous: SignedBlock, leaves: list[bytes], frontier: list[str]) -> tuple[SignedBlock, list[str]]:
            inside.set()
            time.sleep(TIMEOUT)
            return next_block(previous, leaves, frontier, signer, system_now_ms())

        store.seal(make, 5)
        results.put(("slow sealer finished", None))
    except Exception as exc:
        results.put(("slow sealer failed", repr(exc)))


def _autoseal_in_process(url: str, sealer_hex: str, stop: Any, results: Any) -> None:
    try:
        store = open_store(url)
        ledger = Ledger(store, sealer=KeySigner(bytes.fromhex(sealer_hex)), block_max_txs=4)
        sealer = AutoSealer(ledger, interval_ms=20, max_txs=1).start()
        stop.wait(TIMEOUT * 2)
        sealer.stop()
        store.close()
        results.put(("auto sealer stopped", None))
    except Exception as exc:
        results.put(("auto sealer failed", repr(exc)))


def test_a_sealer_killed_mid_block_leaves_nothing_and_another_process_takes_over(pg: LedgerFixture) -> None:
    payer, payee = pg.party("payer"), pg.party("payee")
    pg.mint(payer.address, 100 * UNIT)
    pg.ledger.seal_all()
    for _ in range(6):
        pg.transfer(payer, payee.address, UNIT)

    ctx = multiprocessing.get_context("spawn")
    inside, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    url, sealer_hex = str(pg.path), pg.sealer_key.hex()
    doomed = ctx.Process(target=_seal_slowly_in_process, args=(url, sealer_hex, inside, results))
    doomed.start()
    takeover = None
    try:
        assert inside.wait(TIMEOUT), "the slow sealer never started sealing"
        # It holds the seal lock: nobody else may seal now, and nothing it did is visible.
        assert pg.ledger.seal() is None
        assert pg.ledger.head().header.height == 1 and pg.ledger.store.unsealed()[0] == 6
        takeover = ctx.Process(target=_autoseal_in_process, args=(url, sealer_hex, stop, results))
        takeover.start()
        for _ in range(4):
            pg.transfer(payer, payee.address, UNIT)
        time.sleep(1.0)
        assert pg.ledger.head().header.height == 1, "a second sealer sealed while the first held the lock"

        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)  # mid-block: its transaction dies with it
        doomed.join(TIMEOUT)
        deadline = time.monotonic() + 30
        while pg.ledger.store.unsealed()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pg.ledger.store.unsealed() == (0, None), "nobody took over sealing"
        stop.set()
        takeover.join(TIMEOUT)
        assert results.get(timeout=TIMEOUT) == ("auto sealer stopped", None)
    finally:
        stop.set()
        _join_all([doomed, *([takeover] if takeover else [])])

    assert doomed.exitcode == -signal.SIGKILL
    assert pg.ledger.head().header.height == 1 + 3  # 10 transactions, 4 per block
    assert_chain_well_formed(pg.ledger.store)
    assert_audit_ok(pg.ledger.store, 11)


# ---- the race the store closes, shown on PostgreSQL ----


def _spend_naively(url: str, racers: int, start: int, *, conditional: bool) -> tuple[int, int]:
    """Spend 1 from ``start`` in ``racers`` threads, each on its own connection at READ COMMITTED;
    return (spends recorded, final balance)."""
    schema = url.split("schema=", 1)[1]
    with admin() as setup:
        setup.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        setup.execute(f'DROP TABLE IF EXISTS "{schema}".wallet, "{schema}".spends')
        setup.execute(f'CREATE TABLE "{schema}".wallet (id INT PRIMARY KEY, balance BIGINT NOT NULL)')
        setup.execute(f'CREATE TABLE "{schema}".spends (id SERIAL PRIMARY KEY, racer INT NOT NULL)')
        setup.execute(f'INSERT INTO "{schema}".wallet VALUES (1, %s)', [start])
    connections = [psycopg.connect(POSTGRES_URL, options=f"-csearch_path={schema}") for _ in range(racers)]

    def spend(index: int, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            if conditional:  # the store's way: the database decides, at write time
                cursor = conn.execute("UPDATE wallet SET balance = balance - 1 WHERE id = 1 AND balance >= 1")
                if cursor.rowcount != 1:
                    return
            else:  # read, decide in Python, write back: two statements
                row = conn.execute("SELECT balance FROM wallet WHERE id = 1").fetchone()
                assert row is not None
                if row[0] < 1:
                    return
                time.sleep(0.005)  # widen the window between check and update
                conn.execute("UPDATE wallet SET balance = %s WHERE id = 1", [row[0] - 1])
            conn.execute("INSERT INTO spends (racer) VALUES (%s)", [index])

    try:
        outcome = run_together([partial(spend, i, c) for i, c in enumerate(connections)])
        assert [o for o in outcome if isinstance(o, Exception)] == []
    finally:
        for conn in connections:
            conn.close()
    with admin() as check:
        spends = check.execute(f'SELECT count(*) FROM "{schema}".spends').fetchone()
        final = check.execute(f'SELECT balance FROM "{schema}".wallet').fetchone()
    assert spends is not None and final is not None
    return spends[0], final[0]


def test_read_then_write_at_read_committed_does_overspend_and_a_conditional_update_does_not() -> None:
    """Under READ COMMITTED each racer's SELECT sees 5 (nobody has committed yet); each then
    writes back 4 after the previous writer commits (the UPDATE waits for the row, then
    overwrites it): twenty spends recorded from a balance of five, a lost update every time.
    The conditional UPDATE the store uses re-checks ``balance >= 1`` on the newest committed row
    after waiting, so exactly five succeed."""
    url = new_postgres_url()
    try:
        attempts = []
        for _ in range(5):  # usually the first attempt overspends; retry if the scheduler was kind
            spends, final = _spend_naively(url, racers=20, start=5, conditional=False)
            attempts.append((spends, final))
            if spends > 5:
                break
        assert attempts[-1][0] > 5, f"no overspend in {len(attempts)} attempts: {attempts}"
        assert _spend_naively(url, racers=20, start=5, conditional=True) == (5, 0)
    finally:
        drop_schema(url)


# ---- tampering with PostgreSQL rows is caught by the auditor ----


def _built(pg: LedgerFixture) -> tuple[str, str]:
    alice, bob = pg.party("alice"), pg.party("bob")
    pg.mint(alice.address, 100 * UNIT)
    transfer = pg.transfer(alice, bob.address, 10 * UNIT)
    pg.ledger.seal_all()
    assert_audit_ok(pg.ledger.store, 2)
    return schema_of(pg), transfer.tx_id


def test_an_edited_transaction_row_is_reported(pg: LedgerFixture) -> None:
    schema, tx_id = _built(pg)
    with admin() as conn:
        row = conn.execute(f'SELECT record FROM "{schema}".transactions WHERE tx_id = %s', [tx_id]).fetchone()
        assert row is not None
        changed = json.loads(row[0])
        changed["message"]["value"] = str(90 * UNIT)
        conn.execute(f'UPDATE "{schema}".transactions SET record = %s WHERE tx_id = %s', [json.dumps(changed), tx_id])
    fresh = open_store(str(pg.path))
    try:
        report = audit(fresh)
    finally:
        fresh.close()
    assert report.problems[0].code == "leaf_mismatch" and report.problems[0].tx_id == tx_id


def test_an_edited_balance_and_a_deleted_nonce_are_reported(pg: LedgerFixture) -> None:
    schema, _ = _built(pg)
    with admin() as conn:
        conn.execute(f'UPDATE "{schema}".accounts SET available = available + 1')
        conn.execute(f'DELETE FROM "{schema}".nonces WHERE ctid IN (SELECT ctid FROM "{schema}".nonces LIMIT 1)')
    codes = {p.code for p in audit(pg.ledger.store).problems}
    assert {"balance_mismatch", "nonces_mismatch"} <= codes


# ---- export and import: SQLite -> PostgreSQL -> SQLite ----


def build_everything(lf: LedgerFixture) -> None:
    """Every kind of transaction, open and resolved holds, API keys (one revoked), several
    blocks, and a tail of transactions not sealed yet."""
    alice, bob, carol, gateway = (lf.party(n) for n in ("alice", "bob", "carol", "gateway"))
    ledger, store = lf.ledger, lf.ledger.store
    ledger.block_max_txs = 3
    lf.mint(alice.address, 100 * UNIT)
    lf.mint(bob.address, 50 * UNIT)
    lf.transfer(alice, bob.address, 7 * UNIT)
    settled = ledger.hold(*lf.authorization(alice, carol.address, 5 * UNIT)).tx_id
    voided = ledger.hold(*lf.authorization(bob, carol.address, 3 * UNIT)).tx_id
    ledger.hold(*lf.authorization(bob, carol.address, 2 * UNIT, ttl=60))  # expires below
    ledger.hold(*lf.authorization(alice, carol.address, 1 * UNIT))  # stays open
    ledger.settle(settled, 4 * UNIT)
    ledger.void(voided)
    allowance = Allowance(
        alice.address, gateway.address, 10 * UNIT, lf.clock.now_s() + 7200, "0x" + secrets.token_hex(32)
    )
    granted = ledger.grant_allowance(allowance, sign_digest(alice.key, signing_digest(lf.chain, allowance)))
    charge = ledger.charge(granted.tx_id, 2 * UNIT, expires_at_s=lf.clock.now_s() + 300)
    ledger.settle(charge.tx_id, UNIT)
    ledger.charge(granted.tx_id, UNIT, expires_at_s=lf.clock.now_s() + 300)  # open charge
    for n in range(3):
        store.api_keys.register(f"{n:064x}", f"ipk_key{n}", granted.tx_id, f"key {n}", 1_700_000_000_000 + n)
    store.api_keys.revoke("ipk_key1")
    ledger.seal_all()
    lf.clock.advance(120)
    ledger.expire_holds()
    lf.transfer(carol, alice.address, UNIT)  # the tail: accepted, not sealed
    assert store.unsealed()[0] == 2


def exported(store: LedgerStore) -> str:
    out = io.StringIO()
    export_ledger(store, out)
    return out.getvalue()


def state_of(store: LedgerStore) -> dict[str, Any]:
    """What the ledger says, through the interface only (backend-neutral)."""
    return {
        "chain": store.chain_info(),
        "head": store.head(),
        "supply": store.supply(),
        "unsealed": store.unsealed(),
        "accounts": list(store.accounts()),
        "holds": store.open_holds(),
        "nonces": sorted(store.iter_nonces()),
        "keys": store.api_keys.all(),
        "transactions": list(store.iter_raw_transactions()),
        "blocks": list(store.iter_raw_blocks()),
    }


def test_export_sqlite_import_postgres_and_back_gives_the_same_ledger(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    source = make_ledger(tmp_path / "a", backend="sqlite")
    build_everything(source)
    dump = exported(source.ledger.store)
    assert_audit_ok(source.ledger.store)

    target_url = new_postgres_url()
    middle = open_store(target_url)
    back = open_store(tmp_path / "back.db")
    try:
        result = import_ledger(middle, io.StringIO(dump))
        assert result.head == source.ledger.head()
        assert (result.transactions, result.api_keys) == (15, 3)
        assert_audit_ok(middle, 15)
        assert state_of(middle) == state_of(source.ledger.store)  # balances, holds, nonces rebuilt alike
        assert exported(middle) == dump  # byte for byte

        import_ledger(back, io.StringIO(exported(middle)))
        assert_audit_ok(back, 15)
        assert state_of(back) == state_of(source.ledger.store)
        assert exported(back) == dump
        key = back.api_keys.get(f"{1:064x}")
        assert key is not None and key.revoked and not back.api_keys.get(f"{0:064x}").revoked  # type: ignore[union-attr]
        # The imported ledgers are live ledgers: the waiting tail seals into the same next block.
        for store in (source.ledger.store, middle, back):
            Ledger(store, sealer=KeySigner(source.sealer_key), clock=source.clock).seal_all()
        heads = [store.head().to_dict() for store in (source.ledger.store, middle, back)]
        assert heads[0] == heads[1] == heads[2]
    finally:
        middle.close()
        back.close()
        drop_schema(target_url)
        source.close()


def test_an_edited_or_truncated_dump_is_refused(tmp_path: Path) -> None:
    source = make_ledger(tmp_path, backend="postgres")
    try:
        alice, bob = source.party("alice"), source.party("bob")
        source.mint(alice.address, 10 * UNIT)
        source.transfer(alice, bob.address, UNIT)
        source.ledger.seal_all()
        lines = exported(source.ledger.store).splitlines(keepends=True)
        edited = [line.replace(f'"value":"{UNIT}"', f'"value":"{2 * UNIT}"') for line in lines]
        assert edited != lines
        for bad, says in [(edited, "does not hash to its id"), (lines[:-1], "no end line"), (lines[:3], "no end line")]:
            target = open_store(tmp_path / f"t{secrets.token_hex(4)}.db")
            try:
                with pytest.raises(MalformedRecord, match=says):
                    import_ledger(target, bad)
            finally:
                target.close()
        with pytest.raises(IdempotencyConflict, match="already holds a ledger"):
            import_ledger(source.ledger.store, lines)
    finally:
        source.close()


def test_cli_moves_a_ledger_from_sqlite_to_postgres_and_verify_agrees(tmp_path: Path) -> None:
    from inferpay_cli.main import cli

    url = new_postgres_url()
    runner = CliRunner(env={"INFERPAY_HOME": str(tmp_path / "home"), "INFERPAY_PASSWORD": "pw"})

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result

    try:
        run("init")
        run("wallet", "create", "alice")
        bob = run("wallet", "create", "bob").stdout.strip()
        run("mint", "alice", "100")
        run("transfer", "alice", bob, "30")
        run("export", str(tmp_path / "ledger.jsonl"))
        imported = run("--database", url, "import", str(tmp_path / "ledger.jsonl"))
        assert "imported 2 transactions, 3 blocks" in imported.stdout
        run("--database", url, "import", str(tmp_path / "ledger.jsonl"), code=1)  # not into a full one
        for extra in ([], ["--database", url]):
            assert "chain valid: 3 blocks, 2 transactions" in run(*extra, "verify").stdout
        heads = [json.loads(run(*extra, "info", "--json").stdout)["head"] for extra in ([], ["--database", url])]
        assert heads[0] == heads[1]
        # The PostgreSQL ledger is the live one now: writes go there, with the keys from --home.
        run("--database", url, "transfer", "alice", bob, "5")
        assert run("--database", url, "balance", "alice").stdout.strip() == "65"
        assert run("balance", "alice").stdout.strip() == "70"
    finally:
        drop_schema(url)


def test_cli_init_puts_the_ledger_in_the_database_and_the_gateway_uses_it(tmp_path: Path) -> None:
    from gateway.server.config import parse_config
    from gateway.server.services import Services
    from inferpay_cli.main import cli

    url = new_postgres_url()
    env = {"INFERPAY_HOME": str(tmp_path / "home"), "INFERPAY_PASSWORD": "pw", "INFERPAY_DATABASE": url}
    runner = CliRunner(env=env)
    try:
        result = runner.invoke(cli, ["init"])
        assert result.exit_code == 0, result.output
        assert not (tmp_path / "home" / "ledger.db").exists() and (tmp_path / "home" / "sealer.key").exists()
        again = runner.invoke(cli, ["--home", str(tmp_path / "other"), "init"])
        assert again.exit_code == 1 and "already holds a ledger" in again.stderr
        assert not (tmp_path / "other" / "sealer.key").exists()  # refused before writing any key

        config = parse_config(
            {
                "gateway": {"home": str(tmp_path / "home"), "database": url},
                "routes": [{"path": "/v1/x", "upstream": "http://127.0.0.1:9/v1/x", "price": "0.001"}],
            }
        )
        services = Services.build(config, start_sealer=False)
        try:
            assert isinstance(services.ledger.store, PostgresStore)
            assert services.ledger.chain.sealer == services.sealer.address
        finally:
            services.close()
    finally:
        drop_schema(url)


# ---- the stateful model of the ledger, on PostgreSQL ----


class PostgresLedgerModel(model.LedgerModel):
    """test_ledger_model.py's Hypothesis state machine, its ledger in a PostgreSQL schema."""

    def __init__(self) -> None:
        with using_backend("postgres"):
            super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.lf.close()


PostgresLedgerModel.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPostgresLedgerModel = PostgresLedgerModel.TestCase


def test_snapshot_sees_every_table(pg: LedgerFixture) -> None:
    before = snapshot(pg)
    assert {"accounts", "blocks", "nonces", "transactions", "seq_counter", "schema_migrations"} <= set(before)
    pg.mint(pg.party("alice").address, UNIT)
    after = snapshot(pg)
    assert after != before and len(after["transactions"]) == 1

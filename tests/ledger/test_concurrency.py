"""No interleaving of threads or processes can overspend, double-resolve a hold, or tear the chain.

Every racer gets its own ``Ledger`` and its own SQLite connection (as separate gunicorn workers
would), and all of them are released together by a barrier so their writes really contend. The
naive check-then-update at the bottom shows the race these tests would catch: it does overspend.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import audit
from ledger.crypto import address_of, new_private_key
from ledger.errors import IdempotencyConflict, InsufficientFunds
from ledger.storage.sqlite import SQLiteStore
from ledger.types import Account
from tests.support.ledger import UNIT, LedgerFixture
from tests.support.workers import run_together, seal_in_process, spend_in_process


def all_seqs(path: Path) -> list[tuple[int, int | None]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, block_height FROM transactions ORDER BY seq").fetchall()


def assert_chain_well_formed(lf: LedgerFixture) -> None:
    """Blocks 0..H contiguous and linked; every transaction sealed into exactly one block."""
    store = lf.ledger.store
    head = store.head().header.height
    blocks = store.blocks(0, head + 1)
    assert [b.header.height for b in blocks] == list(range(head + 1))
    for previous, block in zip(blocks, blocks[1:], strict=False):
        assert block.header.prev_hash == previous.block_hash
        assert block.header.tree_size == previous.header.tree_size + block.header.tx_count
    rows = all_seqs(lf.path)
    assert all(height is not None for _, height in rows), "a transaction was left unsealed"
    placed: list[int] = []
    for block in blocks:
        seqs = [t.seq for t in store.block_transactions(block.header.height)]
        assert len(seqs) == block.header.tx_count
        placed.extend(seqs)
    assert sorted(placed) == [seq for seq, _ in rows]  # each once, none missing
    assert blocks[-1].header.tree_size == len(rows)


# ---- threads ----


def test_twenty_threads_spend_a_balance_of_five_exactly_five_times(lf: LedgerFixture) -> None:
    payer, payee = lf.party("payer"), lf.party("payee")
    lf.mint(payer.address, 5 * UNIT)
    signed = [lf.authorization(payer, payee.address, UNIT) for _ in range(20)]
    ledgers = [lf.reopen() for _ in signed]

    results = run_together([partial(ledger.transfer, a, s) for ledger, (a, s) in zip(ledgers, signed, strict=True)])

    errors = [r for r in results if isinstance(r, Exception)]
    assert len(results) - len(errors) == 5
    assert len(errors) == 15
    assert all(isinstance(e, InsufficientFunds) for e in errors), errors
    assert lf.ledger.balance(payer.address).available == 0
    assert lf.ledger.balance(payee.address).available == 5 * UNIT
    assert lf.ledger.store.supply() == 5 * UNIT
    lf.ledger.seal_all()
    report = audit(SQLiteStore(lf.path))
    assert report.ok, report.problems
    assert report.transactions == 6


def test_concurrent_holds_then_racing_settle_void_and_retry_resolve_each_hold_once(
    lf: LedgerFixture,
) -> None:
    payer, payee = lf.party("payer"), lf.party("payee")
    lf.mint(payer.address, 10 * UNIT)
    signed = [lf.authorization(payer, payee.address, UNIT) for _ in range(20)]
    ledgers = [lf.reopen() for _ in signed]

    results = run_together([partial(ledger.hold, a, s) for ledger, (a, s) in zip(ledgers, signed, strict=True)])
    holds = [r for r in results if not isinstance(r, Exception)]
    assert len(holds) == 10
    assert all(isinstance(r, InsufficientFunds) for r in results if isinstance(r, Exception))
    assert lf.ledger.balance(payer.address) == Account(payer.address, 0, 10 * UNIT)

    # Per hold, three racers: a settle, the same settle retried, and a void. Exactly one
    # resolution may take effect; the retry of the winning settle is a harmless duplicate.
    capture = UNIT // 4
    racers: list[Callable[[], Any]] = []
    owners: list[str] = []
    for hold in holds:
        for action in ("settle", "settle", "void"):
            ledger = lf.reopen()
            if action == "settle":
                racers.append(partial(ledger.settle, hold.tx_id, capture))
            else:
                racers.append(partial(ledger.void, hold.tx_id))
            owners.append(hold.tx_id)
    outcomes = run_together(racers)

    settled = 0
    for hold in holds:
        mine = [o for o, owner in zip(outcomes, owners, strict=True) if owner == hold.tx_id]
        settle_a, settle_b, void = mine
        row = lf.ledger.store.hold(hold.tx_id)
        assert row is not None
        if row.status == "settle":
            settled += 1
            assert isinstance(void, IdempotencyConflict), void
            assert not isinstance(settle_a, Exception) and not isinstance(settle_b, Exception)
            assert settle_a.tx_id == settle_b.tx_id == row.resolution_tx
            assert sorted([settle_a.duplicate, settle_b.duplicate]) == [False, True]
            assert row.captured == capture
        else:
            assert row.status == "void", row
            assert not isinstance(void, Exception) and void.tx_id == row.resolution_tx
            assert isinstance(settle_a, IdempotencyConflict) and isinstance(settle_b, IdempotencyConflict)
            assert row.captured == 0

    assert lf.ledger.store.open_holds() == []
    payer_account = lf.ledger.balance(payer.address)
    assert (payer_account.available, payer_account.held) == (10 * UNIT - settled * capture, 0)
    assert lf.ledger.balance(payee.address).available == settled * capture
    lf.ledger.seal_all()
    report = audit(SQLiteStore(lf.path))
    assert report.ok, report.problems
    assert report.transactions == 1 + 10 + 10  # mint, holds, one resolution each


def test_two_sealer_threads_while_transfers_run_keep_the_chain_contiguous(lf: LedgerFixture) -> None:
    payers = [lf.party(f"payer{i}") for i in range(4)]
    payee = lf.party("payee")
    for payer in payers:
        lf.mint(payer.address, 100 * UNIT)
    per_payer = 15
    signed = {p.address: [lf.authorization(p, payee.address, UNIT) for _ in range(per_payer)] for p in payers}
    stop = threading.Event()
    sealed_by: list[list[int]] = [[], []]

    def spender(address: str) -> Callable[[], int]:
        ledger = lf.reopen()

        def work() -> int:
            for auth, sig in signed[address]:
                ledger.transfer(auth, sig)
            return per_payer

        return work

    def sealer(index: int) -> Callable[[], None]:
        ledger = lf.reopen()
        ledger.block_max_txs = 3  # many small blocks: many chances to race on the head

        def work() -> None:
            while True:
                block = ledger.seal()
                if block is not None:
                    sealed_by[index].append(block.header.height)
                elif stop.is_set():
                    return
                else:
                    time.sleep(0.0005)

        return work

    def spenders_then_stop() -> None:
        results = run_together([spender(p.address) for p in payers])
        stop.set()
        for result in results:
            if isinstance(result, Exception):
                raise result

    outcome = run_together([sealer(0), sealer(1), spenders_then_stop])
    assert [o for o in outcome if isinstance(o, Exception)] == []

    lf.ledger.seal_all()  # normally nothing left: the sealers drain before they stop
    assert_chain_well_formed(lf)
    heights = sorted(sealed_by[0] + sealed_by[1])
    assert len(set(heights)) == len(heights), "two sealers produced the same height"
    assert lf.ledger.balance(payee.address).available == len(payers) * per_payer * UNIT
    report = audit(SQLiteStore(lf.path))
    assert report.ok, report.problems
    assert report.transactions == len(payers) * (1 + per_payer)


def test_workers_expiring_the_same_holds_at_once_release_each_exactly_once(lf: LedgerFixture) -> None:
    payer, payee = lf.party("payer"), lf.party("payee")
    lf.mint(payer.address, 10 * UNIT)
    for _ in range(10):
        lf.ledger.hold(*lf.authorization(payer, payee.address, UNIT, ttl=60))
    lf.clock.advance(120)
    ledgers = [lf.reopen() for _ in range(4)]

    results = run_together([ledger.expire_holds for ledger in ledgers])

    assert [r for r in results if isinstance(r, Exception)] == []
    fresh = [r for batch in results for r in batch if not r.duplicate]
    assert len(fresh) == 10  # retries of an expiry are duplicates of it, never second releases
    assert lf.ledger.store.open_holds() == []
    assert lf.ledger.balance(payer.address) == Account(payer.address, 10 * UNIT, 0)
    assert lf.ledger.balance(payee.address).available == 0
    lf.ledger.seal_all()
    report = audit(SQLiteStore(lf.path))
    assert report.ok, report.problems
    assert report.transactions == 1 + 10 + 10


def test_workers_opening_a_fresh_ledger_file_at_once_all_succeed(tmp_path: Path) -> None:
    for attempt in range(5):
        path = tmp_path / f"fresh{attempt}.db"
        results = run_together([partial(SQLiteStore, path) for _ in range(6)])
        errors = [r for r in results if isinstance(r, Exception)]
        for result in results:
            if isinstance(result, SQLiteStore):
                result.close()
        assert errors == [], errors


# ---- processes ----
# Workers are module-level so a "spawn" child can import them; each builds everything it uses
# from plain values (paths and hex keys), as an independent worker process would.


def test_four_processes_and_two_sealer_processes_spend_exactly_what_is_there(lf: LedgerFixture) -> None:
    """M=4 processes x N=10 transfers of 1 from a wallet holding 15, while two other processes
    seal concurrently: exactly 15 succeed, the balance is never negative, the chain is whole."""
    processes, attempts, funded = 4, 10, 15
    payer_key = new_private_key()
    payer = address_of(payer_key)
    payee = lf.party("payee").address
    lf.mint(payer, funded * UNIT)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 2)
    stop = ctx.Event()
    results = ctx.Queue()
    spender_args = (str(lf.path), lf.sealer_key.hex(), payer_key.hex(), lf.chain.to_dict(), payee, attempts)
    children = [
        ctx.Process(target=spend_in_process, args=(*spender_args, barrier, results)) for _ in range(processes)
    ] + [
        ctx.Process(target=seal_in_process, args=(str(lf.path), lf.sealer_key.hex(), 4, barrier, stop, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    try:
        # Watch the balance from the outside while the children race: it must never dip below 0.
        lowest = funded * UNIT
        spenders_done: list[tuple[Any, ...]] = []
        sealers_done: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 120
        with sqlite3.connect(lf.path) as watcher:
            while len(spenders_done) < processes and time.monotonic() < deadline:
                crashed = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                assert not crashed, f"a child process crashed: exit codes {crashed}"
                row = watcher.execute("SELECT available FROM accounts WHERE address = ?", [payer]).fetchone()
                lowest = min(lowest, row[0])
                while not results.empty():
                    message = results.get()
                    (spenders_done if message[0] == "spender" else sealers_done).append(message)
                time.sleep(0.002)
        watcher.close()
        stop.set()
        while len(spenders_done) + len(sealers_done) < len(children) and time.monotonic() < deadline:
            message = results.get(timeout=max(0.1, deadline - time.monotonic()))
            (spenders_done if message[0] == "spender" else sealers_done).append(message)
    finally:
        stop.set()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.terminate()
                child.join()

    assert [m[3] for m in spenders_done if m[3]] == []
    assert [m[2] for m in sealers_done if m[2]] == []
    assert len(spenders_done) == processes and len(sealers_done) == 2
    assert sum(m[1] for m in spenders_done) == funded
    assert sum(m[2] for m in spenders_done) == processes * attempts - funded
    assert all(c.exitcode == 0 for c in children)
    assert lowest >= 0
    assert lf.ledger.balance(payer).available == 0
    assert lf.ledger.balance(payee).available == funded * UNIT

    sealed = sorted(sealers_done[0][1] + sealers_done[1][1])
    assert len(set(sealed)) == len(sealed), "two sealer processes produced the same height"
    lf.ledger.seal_all()
    assert_chain_well_formed(lf)
    report = audit(SQLiteStore(lf.path))
    assert report.ok, report.problems
    assert report.transactions == 1 + funded


# ---- the counter-example ----


def _naive_spend_race(path: Path, racers: int, start_balance: int) -> tuple[int, int]:
    """Spend 1 from ``start_balance`` in ``racers`` threads with a plain check-then-update;
    return (spends recorded, final balance)."""
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("DROP TABLE IF EXISTS wallet")
        setup.execute("DROP TABLE IF EXISTS spends")
        setup.execute("CREATE TABLE wallet (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        setup.execute("CREATE TABLE spends (id INTEGER PRIMARY KEY, racer INTEGER NOT NULL)")
        setup.execute("INSERT INTO wallet (id, balance) VALUES (1, ?)", [start_balance])
    setup.close()
    connections = [sqlite3.connect(path, timeout=30, check_same_thread=False) for _ in range(racers)]

    def spend(index: int, conn: sqlite3.Connection) -> None:
        # Python's default (legacy, deferred) isolation: the SELECT runs outside any
        # transaction, so nothing stops another racer from reading the same balance.
        (balance,) = conn.execute("SELECT balance FROM wallet WHERE id = 1").fetchone()
        if balance >= 1:
            time.sleep(0.001)  # widen the window between check and update
            conn.execute("UPDATE wallet SET balance = ? WHERE id = 1", [balance - 1])
            conn.execute("INSERT INTO spends (racer) VALUES (?)", [index])
            conn.commit()

    try:
        outcome = run_together([partial(spend, i, c) for i, c in enumerate(connections)])
        assert [o for o in outcome if isinstance(o, Exception)] == []
    finally:
        for conn in connections:
            conn.close()
    with sqlite3.connect(path) as check:
        spends = check.execute("SELECT count(*) FROM spends").fetchone()[0]
        final = check.execute("SELECT balance FROM wallet WHERE id = 1").fetchone()[0]
    check.close()
    return spends, final


@pytest.mark.control
def test_naive_check_then_update_does_overspend(tmp_path: Path) -> None:
    """A control experiment, not a test of the ledger: it shows the failure the ledger prevents,
    and asserts that the naive approach DOES overspend (it passes when the bug shows). It is the
    race the ledger's store is built to close, reproduced with plain ``sqlite3``.

    Each racer reads the balance (SELECT), decides it is enough, and writes back ``balance - 1``
    (UPDATE) as a second statement. In WAL mode readers never block, so many racers read 5
    before any of them writes; they then queue for the write lock one after another and each
    writes 4, recording a spend every time: more than 5 spends from a balance of 5, and a final
    balance that does not add up. (Even ``balance = balance - 1`` would only move the bug: the
    check was still made on a stale read, so the balance would go negative.)

    ``SQLiteStore`` cannot do this: every write runs in ``BEGIN IMMEDIATE``, which takes the one
    write lock before reading anything, so no other writer can change the row between the check
    and the debit; the debit itself is a conditional ``UPDATE ... SET available = available - ?
    WHERE available >= ?`` whose row count says whether the money was there, decided by the
    database at write time rather than by Python on an earlier read; and the accounts table's
    ``CHECK (available >= 0)`` refuses any write that would still go below zero.
    """
    attempts = []
    for _ in range(10):  # usually the first attempt overspends; retry if the scheduler was kind
        spends, final = _naive_spend_race(tmp_path / "naive.db", racers=20, start_balance=5)
        attempts.append((spends, final))
        if spends > 5 or final != 5 - spends:
            break
    spends, final = attempts[-1]
    assert spends > 5 or final != 5 - spends, f"no overspend in {len(attempts)} attempts: {attempts}"


def test_the_workers_of_one_host_elect_one_auto_sealer_and_the_next_takes_over(
    lf: LedgerFixture, tmp_path: Path
) -> None:
    """Gunicorn workers each start an auto-sealer; with the home's lock file only one of them
    seals (the others stand by), and when it stops or dies another takes over on its next tick."""
    from ledger.sealer import AutoSealer

    lock = tmp_path / "auto-sealer.lock"
    first = AutoSealer(lf.ledger, max_txs=1, lock_path=lock)
    second = AutoSealer(lf.ledger, max_txs=1, lock_path=lock)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, UNIT)
    lf.transfer(alice, bob.address, 1)
    assert first.elected()  # the first worker to ask holds the lock for its life
    second.tick()  # not elected: seals nothing
    assert lf.ledger.store.unsealed()[0] == 2
    first.tick()
    assert lf.ledger.store.unsealed()[0] == 0 and first.elected() and not second.elected()
    first.stop()  # as a worker exiting (the kernel does the same for one that dies)
    lf.transfer(alice, bob.address, 1)
    second.tick()
    assert second.elected() and lf.ledger.store.unsealed()[0] == 0
    second.stop()

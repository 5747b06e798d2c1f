"""Group commit: concurrent writers share durable commits, and each keeps its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import audit
from ledger.crypto import KeySigner
from ledger.errors import InsufficientFunds, NonceReused
from ledger.ledger import Ledger
from ledger.storage.sqlite import SQLiteStore
from tests.support.ledger import UNIT, FakeClock, make_ledger


def after_each_batch(store: SQLiteStore, note: Callable[[list[Any]], object]) -> None:
    """Call ``note(items)`` in the committing thread after each ``append_many`` the store runs."""
    real_append_many = store.append_many

    def observed(items, *, durable=True):  # type: ignore[no-untyped-def]
        outcomes = real_append_many(items, durable=durable)
        note(items)
        return outcomes

    store.append_many = observed  # type: ignore[method-assign]


def test_concurrent_writers_share_commits_and_never_overspend(tmp_path: Path) -> None:
    lf = make_ledger(tmp_path, FakeClock())
    store = SQLiteStore(lf.path)
    batches: list[int] = []
    after_each_batch(store, lambda items: batches.append(len(items)))
    ledger = Ledger(store, sealer=KeySigner(lf.sealer_key), clock=lf.clock, group_commit=True)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 25 * UNIT)
    payments = [lf.authorization(alice, bob.address, UNIT) for _ in range(40)]
    outcomes: list[object] = []
    start = threading.Barrier(len(payments))

    def pay(auth, signature) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            outcomes.append(ledger.transfer(auth, signature))
        except InsufficientFunds as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=pay, args=p) for p in payments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(accepted) == 25 and len(outcomes) == 40
    assert sum(batches) == 40 and len(batches) < 40, batches  # some commits were shared
    # Durable and visible to anyone once acknowledged: a fresh connection sees every one.
    fresh = SQLiteStore(lf.path)
    assert fresh.account(alice.address).available == 0 and fresh.account(bob.address).available == 25 * UNIT
    assert audit(fresh).ok


def test_a_refused_transaction_fails_alone_in_its_batch(tmp_path: Path) -> None:
    lf = make_ledger(tmp_path, FakeClock())
    store = SQLiteStore(lf.path)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 3 * UNIT)
    good = [lf.authorization(alice, bob.address, UNIT) for _ in range(2)]
    reused = lf.authorization(alice, bob.address, 2 * UNIT, nonce=good[0][0].nonce)
    too_much = lf.authorization(alice, bob.address, 5 * UNIT)
    from ledger.encoding import leaf_hash, transaction_id
    from ledger.types import Transaction

    items = []
    for auth, signature in [good[0], reused, too_much, good[1]]:
        tx = Transaction("transfer", auth, auth.from_, signature, lf.clock())
        items.append((tx, transaction_id(tx), leaf_hash(tx)))
    outcomes = store.append_many(items)
    assert isinstance(outcomes[1], NonceReused) and isinstance(outcomes[2], InsufficientFunds)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[3], Exception)
    assert store.account(alice.address).available == UNIT and store.account(bob.address).available == 2 * UNIT


def test_a_single_writer_through_the_committer_behaves_like_a_direct_append(tmp_path: Path) -> None:
    lf = make_ledger(tmp_path, FakeClock())
    ledger = Ledger(SQLiteStore(lf.path), sealer=KeySigner(lf.sealer_key), clock=lf.clock, group_commit=True)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, UNIT)
    auth, signature = lf.authorization(alice, bob.address, UNIT)
    first = ledger.transfer(auth, signature)
    again = ledger.transfer(auth, signature)
    assert again.duplicate and again.tx_id == first.tx_id
    with pytest.raises(InsufficientFunds):
        ledger.transfer(*lf.authorization(alice, bob.address, 1))


def test_holds_skip_the_fsync_and_what_acknowledges_them_does_not(tmp_path: Path) -> None:
    """A hold acknowledges nothing, so its commit skips the fsync; the settle that follows commits
    with synchronous=FULL, which makes the hold durable with it (WAL frames are in order)."""
    lf = make_ledger(tmp_path, FakeClock())
    store = SQLiteStore(lf.path)
    modes: list[int] = []
    after_each_batch(store, lambda _: modes.append(store._db().execute("PRAGMA synchronous").fetchone()[0]))
    ledger = Ledger(store, sealer=KeySigner(lf.sealer_key), clock=lf.clock)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, UNIT)
    hold = ledger.hold(*lf.authorization(alice, bob.address, UNIT))
    ledger.settle(hold.tx_id, UNIT // 2)
    assert modes == [1, 2]  # NORMAL for the hold, FULL for the settle


def test_a_lone_writer_commits_in_its_own_thread(tmp_path: Path) -> None:
    """No handoff to a writer thread when nobody else is writing: the caller leads its own commit."""
    lf = make_ledger(tmp_path, FakeClock())
    store = SQLiteStore(lf.path)
    threads: list[str] = []
    after_each_batch(store, lambda _: threads.append(threading.current_thread().name))
    ledger = Ledger(store, sealer=KeySigner(lf.sealer_key), clock=lf.clock, group_commit=True)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 2 * UNIT)
    ledger.transfer(*lf.authorization(alice, bob.address, UNIT))
    hold = ledger.hold(*lf.authorization(alice, bob.address, UNIT))
    ledger.settle(hold.tx_id, UNIT)
    assert threads == [threading.current_thread().name] * 3


def test_a_failing_commit_fails_every_caller_in_its_batch_and_the_next_batch_still_commits(tmp_path: Path) -> None:
    lf = make_ledger(tmp_path, FakeClock())
    store = SQLiteStore(lf.path)
    real_append_many = store.append_many
    calls = 0
    entered, release = threading.Event(), threading.Event()

    def flaky(items, *, durable=True):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:  # the first batch: hold the lead until the others have queued, then fail
            entered.set()
            release.wait(10)
            raise OSError("disk gone")
        return real_append_many(items, durable=durable)

    store.append_many = flaky  # type: ignore[method-assign]
    ledger = Ledger(store, sealer=KeySigner(lf.sealer_key), clock=lf.clock, group_commit=True)
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 10 * UNIT)
    payments = [lf.authorization(alice, bob.address, UNIT) for _ in range(5)]
    outcomes: dict[int, object] = {}

    def pay(i: int) -> None:
        try:
            outcomes[i] = ledger.transfer(*payments[i])
        except Exception as exc:
            outcomes[i] = exc

    first = threading.Thread(target=pay, args=(0,))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=pay, args=(i,)) for i in range(1, 5)]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # they queue behind the leader
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    from ledger.errors import StorageUnavailable

    assert isinstance(outcomes[0], StorageUnavailable)  # the failed batch: not acknowledged
    assert all(not isinstance(outcomes[i], Exception) for i in range(1, 5))  # the next leader committed them
    assert store.account(bob.address).available == 4 * UNIT
    assert audit(SQLiteStore(lf.path)).ok

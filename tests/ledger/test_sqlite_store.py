"""The SQLite store's own machinery: the writers' lock file and schema migrations."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.storage.sqlite import SQLiteStore
from tests.support.ledger import UNIT, FakeClock, make_ledger


def test_a_writer_killed_while_it_holds_the_write_lock_does_not_block_the_others(tmp_path: Path) -> None:
    """Writers queue on a lock file (flock) before SQLite's own lock, so a waiting writer wakes the
    moment the holder lets go instead of sleeping in SQLite's busy handler. The kernel releases
    that lock when its holder dies: a gateway worker SIGKILLed mid-write strands nobody."""
    path = tmp_path / "ledger.db"
    store = SQLiteStore(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        written = threading.Event()

        def write() -> None:
            with store._write() as db:
                db.execute("INSERT INTO meta (key, value) VALUES ('probe', 'x')")
            written.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not written.wait(0.5)  # queued behind the holder, not failing
        probe = os.open(store.lock_path, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # the queue is the lock file, held by the child
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
        os.kill(holder.pid, signal.SIGKILL)
        assert written.wait(10)  # the kernel dropped the dead holder's lock; SQLite rolled it back
        writer.join()
    finally:
        holder.kill()
        holder.communicate()  # reaps the child and closes its stdout pipe
    assert store._db().execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == ("x",)
    assert store._db().execute("SELECT value FROM meta WHERE key = 'held'").fetchone() is None
    store.close()


HOLD_THE_WRITE_LOCK = """
import sys, time
from ledger.storage.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
with store._write() as db:
    db.execute("INSERT INTO meta (key, value) VALUES ('held', 'uncommitted')")
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_ledger_made_before_the_accounts_table_lost_its_rowid_is_migrated_intact(tmp_path: Path) -> None:
    """m003 rebuilds ``accounts`` keyed by address alone (WITHOUT ROWID, for flat balance lookups);
    a ledger written by the earlier schema opens, migrates once, and keeps every balance."""
    lf = make_ledger(tmp_path, FakeClock())
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 5 * UNIT)
    lf.ledger.transfer(*lf.authorization(alice, bob.address, 2 * UNIT))
    lf.ledger.seal_all()
    lf.ledger.store.close()
    with sqlite3.connect(lf.path) as conn:  # put the ledger back as the old schema left it
        conn.executescript(
            """
            CREATE TABLE old_accounts (
                address TEXT PRIMARY KEY,
                available INTEGER NOT NULL DEFAULT 0 CHECK (available >= 0),
                held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0)
            ) STRICT;
            INSERT INTO old_accounts SELECT * FROM accounts;
            DROP TABLE accounts;
            ALTER TABLE old_accounts RENAME TO accounts;
            DELETE FROM _sqlite_migrations WHERE name = 'm003_accounts_without_rowid';
            """
        )
    reopened = SQLiteStore(lf.path)
    schema = reopened._db().execute("SELECT sql FROM sqlite_master WHERE name = 'accounts'").fetchone()[0]
    assert "WITHOUT ROWID" in schema
    assert reopened.account(alice.address).available == 3 * UNIT
    assert reopened.account(bob.address).available == 2 * UNIT
    assert audit(reopened).ok


# ---- driver errors never leave the store ----


def test_a_file_that_is_not_a_database_is_storage_unavailable_not_a_sqlite3_error(tmp_path: Path) -> None:
    from ledger.errors import StorageUnavailable

    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 200)
    with pytest.raises(StorageUnavailable, match="not a database"):
        SQLiteStore(path)


def test_a_ledger_whose_tables_are_damaged_fails_reads_and_writes_with_ledger_errors(tmp_path: Path) -> None:
    """Reads and writes alike: a caller (the CLI, the gateway) only ever sees ``InferpayError``."""
    from ledger.errors import InferpayError, StorageUnavailable

    lf = make_ledger(tmp_path, clock=FakeClock())
    alice = lf.party("alice")
    lf.mint(alice.address, 5 * UNIT)
    store = lf.ledger.store
    assert isinstance(store, SQLiteStore)
    store._db().execute("DROP TABLE accounts")  # what a damaged or foreign file looks like to the store
    with pytest.raises(StorageUnavailable, match="no such table"):
        store.account(alice.address)
    with pytest.raises(InferpayError) as raised:
        lf.mint(alice.address, UNIT)
    assert isinstance(raised.value.__cause__, sqlite3.Error)  # translated, the driver's error kept as cause
    lf.close()

"""A SQLite ledger on a disk that fills up (``reliability.diskfull``' building blocks, on a real
tmpfs): the write is refused with ``StorageUnavailable`` saying the disk is full, nothing
acknowledged is lost, the file stays sound, and writes succeed again once space returns."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from ledger.errors import StorageUnavailable
from reliability.diskfull import Tmpfs, unavailable
from tests.support.ledger import LedgerFixture, make_ledger

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"cannot mount a tmpfs here: {unavailable()}")


@pytest.fixture
def disk() -> Iterator[Tmpfs]:
    with Tmpfs("4m") as mounted:
        yield mounted


@pytest.fixture
def lf(disk: Tmpfs) -> Iterator[LedgerFixture]:
    fixture = make_ledger(disk.path, backend="sqlite")
    yield fixture
    fixture.close()


def test_a_full_disk_refuses_writes_clearly_and_recovers(disk: Tmpfs, lf: LedgerFixture) -> None:
    payer = lf.party("payer")
    acknowledged = [lf.mint(payer.address, 10).tx_id for _ in range(3)]
    disk.fill()
    with pytest.raises(StorageUnavailable, match="full"):
        for _ in range(200):  # the WAL may still have room for a few: the disk must refuse one
            acknowledged.append(lf.mint(payer.address, 10).tx_id)
    disk.release()
    acknowledged.append(lf.mint(payer.address, 10).tx_id)
    stored = {raw.tx_id for raw in lf.ledger.store.iter_raw_transactions()}
    assert set(acknowledged) <= stored
    assert lf.ledger.balance(payer.address).available == 10 * len(acknowledged)
    with sqlite3.connect(lf.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

"""A PostgreSQL ledger whose server is killed or whose connection is cut (``reliability.pgfaults``'
building blocks, on a real cluster of the test's own): every failure is ``StorageUnavailable``,
nothing acknowledged is lost, and the same store works again once the database is back."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.crypto import KeySigner, new_private_key, sign_digest
from ledger.encoding import signing_digest
from ledger.errors import CommitOutcomeUnknown, StorageUnavailable
from ledger.ledger import Ledger
from ledger.storage import open_store
from ledger.storage.base import LedgerStore
from ledger.types import Mint
from reliability.pgcluster import PgCluster, unavailable
from reliability.tcpproxy import FaultyProxy
from tests.support.ledger import FakeClock, Party

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"no PostgreSQL cluster here: {unavailable()}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with PgCluster() as made:
        yield made


@pytest.fixture
def proxy(cluster: PgCluster) -> Iterator[FaultyProxy]:
    cluster.start()
    made = FaultyProxy(cluster.port)
    yield made
    made.close()


class Ledgered:
    """A ledger on the cluster, reached through the proxy, with an operator to mint."""

    def __init__(self, cluster: PgCluster, proxy: FaultyProxy) -> None:
        schema = "t" + secrets.token_hex(4)
        self.url = (
            f"postgresql://postgres@127.0.0.1:{proxy.port}/{cluster.database}?schema={schema}"
            "&pool_timeout=2&connect_timeout=2"
        )
        self.operator = Party.new()
        self.store: LedgerStore = open_store(self.url)
        self.ledger = Ledger.create(
            self.store,
            operator=self.operator.address,
            sealer=KeySigner(new_private_key()),
            chain_id=7,
            clock=FakeClock(),
        )

    def mint(self, value: int = 5) -> str:
        message = Mint(self.operator.address, value, "0x" + secrets.token_hex(32))
        return self.ledger.mint(
            message, sign_digest(self.operator.key, signing_digest(self.ledger.chain, message))
        ).tx_id

    def minted(self) -> set[str]:
        return {raw.tx_id for raw in self.store.iter_raw_transactions()}


@pytest.fixture
def led(cluster: PgCluster, proxy: FaultyProxy) -> Iterator[Ledgered]:
    made = Ledgered(cluster, proxy)
    yield made
    made.store.close()


def test_a_dropped_connection_is_storage_unavailable_then_recovers(led: Ledgered, proxy: FaultyProxy) -> None:
    before = led.mint()
    proxy.drop(30)
    with pytest.raises(StorageUnavailable):
        led.mint()
    proxy.drop(0)  # the database is reachable again
    after = led.mint()
    assert {before, after} <= led.minted()


def test_a_reset_connection_costs_at_most_one_storage_unavailable(led: Ledgered, proxy: FaultyProxy) -> None:
    before = led.mint()
    proxy.reset()
    results = []
    for _ in range(2):
        try:
            results.append(led.mint())
        except StorageUnavailable:
            results.append(None)
    assert results[-1] is not None  # the pool has replaced the broken connection
    assert {before, *filter(None, results)} <= led.minted()


def test_a_killed_server_loses_nothing_acknowledged(led: Ledgered, cluster: PgCluster) -> None:
    acknowledged = [led.mint() for _ in range(5)]
    cluster.kill()  # no shutdown, no checkpoint: recovery from the WAL on the next start
    with pytest.raises(StorageUnavailable):
        led.mint()
    cluster.start()
    acknowledged.append(led.mint())
    assert set(acknowledged) <= led.minted()


def test_a_commit_whose_acknowledgement_is_lost_is_applied_once_and_acknowledged(
    led: Ledgered, proxy: FaultyProxy
) -> None:
    """The server commits, the connection breaks before its answer arrives (the pg-faults phase:
    PostgreSQL SIGKILLed just after a settle's commit; the caller was told 503 and charged).
    The store tries the same transaction again: it finds it, and answers it as applied."""
    led.mint()
    before = len(led.minted())
    proxy.lose_reply_to(b"COMMIT")
    minted = led.mint()
    assert proxy.replies_lost == 1
    stored = [raw.tx_id for raw in led.store.iter_raw_transactions()]
    assert stored.count(minted) == 1 and len(stored) == before + 1


def test_a_lost_commit_acknowledgement_is_found_after_an_outage_longer_than_the_pool_timeout(
    led: Ledgered, proxy: FaultyProxy
) -> None:
    """A full pg-faults run (seed 83723): 3 paid calls answered 503 ``storage_unavailable`` and
    charged. PostgreSQL was SIGKILLed just after a settle committed and stayed away 5 to 6 s
    (crash recovery on a loaded machine), longer than the gateways' 3 s ``pool_timeout``, so the
    one retry timed out and the gateway reported a commit that had landed as not done. Until
    the database answers, a commit's fate is unknown: the store keeps asking for a while."""
    led.mint()
    before = len(led.minted())
    proxy.lose_reply_to(b"COMMIT", then_away_s=3.0)  # pool_timeout is 2 s here
    minted = led.mint()
    assert proxy.replies_lost == 1
    stored = [raw.tx_id for raw in led.store.iter_raw_transactions()]
    assert stored.count(minted) == 1 and len(stored) == before + 1


def test_a_commit_whose_database_stays_away_is_reported_as_of_unknown_outcome(
    led: Ledgered, proxy: FaultyProxy
) -> None:
    """Defect 13's first half (pg-faults, seed 85971): a transfer applied, and answered 503
    ``storage_unavailable`` (which says "not done") after the database was away 6.4 s. Past the
    store's bound nobody can know whether the commit landed: the answer says exactly that
    (``CommitOutcomeUnknown``, a ``StorageUnavailable``), with the transaction's id to look up."""
    led.mint()
    before = len(led.minted())
    message = Mint(led.operator.address, 5, "0x" + secrets.token_hex(32))
    signature = sign_digest(led.operator.key, signing_digest(led.ledger.chain, message))
    proxy.lose_reply_to(b"COMMIT", then_away_s=7.0)  # longer than max(5 s, 2 x the 2 s pool_timeout)
    started = time.monotonic()
    with pytest.raises(CommitOutcomeUnknown) as raised:
        led.ledger.mint(message, signature)
    assert isinstance(raised.value, StorageUnavailable) and raised.value.code == "commit_outcome_unknown"
    assert proxy.replies_lost == 1
    time.sleep(max(0.0, started + 7.5 - time.monotonic()))  # the database is back after its 7 s
    # Whether or not the first commit landed, the same signed mint sent again is recorded once.
    again = led.ledger.mint(message, signature)
    assert again.tx_id == raised.value.details["txId"]
    stored = [raw.tx_id for raw in led.store.iter_raw_transactions()]
    assert stored.count(again.tx_id) == 1 and len(stored) == before + 1


def test_a_read_cut_off_mid_answer_is_asked_again(led: Ledgered, proxy: FaultyProxy) -> None:
    led.mint(7)
    proxy.lose_reply_to(b"available")  # the balance query
    assert led.ledger.balance(led.operator.address).available == 7
    assert proxy.replies_lost == 1


def test_a_gateway_worker_started_while_the_database_is_down_waits_for_it(tmp_path: Path) -> None:
    """pg-faults saw a gateway vanish for good: a gunicorn worker (re)started while PostgreSQL
    was down failed to build its app, and gunicorn stops the whole server on a worker that fails
    to boot. The worker must wait for the database instead, and the gateway serve once it is back."""
    import os
    import signal
    import time

    import requests

    from reliability.clock import ClockControl
    from reliability.pg import PgDeployment
    from reliability.pgcluster import _children

    with PgCluster() as own:
        dep = PgDeployment(tmp_path, ClockControl(tmp_path), f"{own.url}?schema=ledger", gateways=1)
        try:
            dep.create({})
            master = dep.servers["gateway"].process.pid  # type: ignore[union-attr]
            own.kill()
            os.kill(_children(master)[0], signal.SIGKILL)  # gunicorn starts another worker, now
            time.sleep(3)  # the new worker's boot, against a dead database
            assert dep.up("gateway"), dep.gateway_log()[-2000:]
            own.start()
            address = dep.env.wallets["operator"].address
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{dep.url}/ledger/accounts/{address}", timeout=5).status_code == 200:
                        break
                time.sleep(0.2)
            else:
                pytest.fail("the gateway did not serve once the database was back")
        finally:
            dep.stop()

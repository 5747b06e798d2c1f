"""Racers for the concurrency tests, on either backend: ``run_together`` for threads, and the
worker functions for the multi-process bank tests.

The worker functions are module-level so a "spawn" child can import them; each builds
everything from plain values (a SQLite path or a PostgreSQL URL, hex keys), as an independent
gateway worker would.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ledger.crypto import KeySigner, address_of, sign_digest
from ledger.encoding import signing_digest
from ledger.errors import InsufficientFunds
from ledger.ledger import Ledger
from ledger.storage import open_store
from ledger.types import Authorization, ChainInfo
from tests.support.ledger import UNIT

TIMEOUT = 60  # seconds: a racer that never arrives fails the test instead of hanging it


def run_together(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run each worker in its own thread, all released at once; return each result or exception."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(index: int, work: Callable[[], Any]) -> None:
        barrier.wait(TIMEOUT)
        try:
            results[index] = work()
        except Exception as exc:  # the caller inspects which error each racer got
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
        assert not thread.is_alive(), "a racer hung"
    return results


def signed_transfers(
    chain: ChainInfo, payer_key: bytes, payee: str, value: int, count: int
) -> list[tuple[Authorization, str]]:
    now = int(time.time())
    out = []
    for _ in range(count):
        auth = Authorization(address_of(payer_key), payee, value, now - 5, now + 600, "0x" + secrets.token_hex(32))
        out.append((auth, sign_digest(payer_key, signing_digest(chain, auth))))
    return out


def spend_in_process(
    target: str,
    sealer_hex: str,
    payer_hex: str,
    chain_info: dict[str, Any],
    payee: str,
    attempts: int,
    barrier: Any,
    results: Any,
) -> None:
    ok = refused = 0
    other: list[str] = []
    try:
        store = open_store(target)
        ledger = Ledger(store, sealer=KeySigner(bytes.fromhex(sealer_hex)))
        chain = ChainInfo.from_dict(chain_info)
        if ledger.chain != chain:
            other.append("chain info in the database differs from the one passed in")
        signed = signed_transfers(chain, bytes.fromhex(payer_hex), payee, UNIT, attempts)
        barrier.wait(TIMEOUT)
        for auth, sig in signed:
            try:
                ledger.transfer(auth, sig)
                ok += 1
            except InsufficientFunds:
                refused += 1
        store.close()
    except Exception as exc:
        other.append(repr(exc))
    results.put(("spender", ok, refused, other))


def seal_in_process(target: str, sealer_hex: str, max_txs: int, barrier: Any, stop: Any, results: Any) -> None:
    """Seal until told to stop and nothing is left waiting."""
    heights: list[int] = []
    other: list[str] = []
    try:
        store = open_store(target)
        ledger = Ledger(store, sealer=KeySigner(bytes.fromhex(sealer_hex)), block_max_txs=max_txs)
        barrier.wait(TIMEOUT)
        while True:
            block = ledger.seal()
            if block is not None:
                heights.append(block.header.height)
            elif stop.is_set() and store.unsealed()[0] == 0:
                break
            else:
                time.sleep(0.001)
        store.close()
    except Exception as exc:
        other.append(repr(exc))
    results.put(("sealer", heights, other))

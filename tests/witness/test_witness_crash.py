"""SIGKILL in the middle of a storm of add-checkpoints: the witness must never have cosigned two
checkpoints that disagree, and must hold, after a restart, at least everything it cosigned.

Two forks of one log (same key, the same first SHARED entries, then different ones) are pushed
by many threads at once against a two-worker witness, each thread on a random fork from
whatever size it last heard the witness hold. The whole process group is SIGKILLed while
requests are in flight, twice. Every cosignature the witness returned is recorded, and then:
each verifies; no size has two roots; all of them lie on one fork and are consistent with each
other (checked with consistency proofs along the chain); the state on disk is on that fork and
no smaller than the largest size cosigned (persisted before answering); and the restarted
witness carries on from it.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ledger import merkle
from ledger.errors import InconsistentCheckpoints, InferpayError, InvalidProof, OldSizeMismatch, WitnessUnavailable
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import NoteSignature
from tests.ledger.tlog_support import MemoryLog
from tests.witness.support import start_witness, write_config
from witness.client import add_checkpoint
from witness.config import load_witness_config

pytestmark = pytest.mark.timeout(240)

SHARED, LENGTH, THREADS, ROUNDS = 24, 400, 8, 2


@dataclass(frozen=True, eq=False)  # hashed by identity: the caches below key on it
class Fork:
    name: str
    log: MemoryLog

    @functools.cached_property
    def leaves(self) -> list[bytes]:
        return self.log.leaves

    @functools.cache  # noqa: B019  (a test's two forks, kept for the test's life)
    def root(self, size: int) -> bytes:
        return merkle.merkle_root(self.leaves[:size])

    @functools.cache  # noqa: B019
    def signed(self, size: int) -> bytes:
        return self.log.signed(size)


def make_forks() -> tuple[Fork, Fork]:
    shared = [b"shared %d" % i for i in range(SHARED)]
    a, b = MemoryLog(), MemoryLog()
    a.append(*shared, *(b"fork a %d" % i for i in range(LENGTH - SHARED)))
    b.append(*shared, *(b"fork b %d" % i for i in range(LENGTH - SHARED)))
    b.signer = a.signer
    return Fork("a", a), Fork("b", b)


@dataclass(frozen=True)
class Cosigned:
    fork: str
    size: int
    root: bytes
    signature: NoteSignature


def storm(
    url: str, forks: tuple[Fork, Fork], stop: threading.Event, seen: list[Cosigned], outcomes: Counter[str]
) -> None:
    rng = random.Random(threading.get_ident())
    known = 0
    session = requests.Session()
    lock = threading.Lock()
    while not stop.is_set():
        fork = rng.choice(forks)
        size = min(LENGTH, known + rng.randint(0, 12))
        proof = merkle.consistency_proof(fork.leaves[:size], known) if 0 < known < size else []
        try:
            sigs = add_checkpoint(url, known, proof, fork.signed(size), 5, session=session)
        except OldSizeMismatch as exc:
            known, outcome = int(exc.details["size"]), "409 size"
        except (InconsistentCheckpoints, InvalidProof) as exc:
            outcome = exc.code
        except WitnessUnavailable:
            outcomes["unavailable (in flight at the kill)" if stop.is_set() else "unavailable"] += 1
            if stop.wait(0.05):
                break
            continue
        except InferpayError as exc:
            outcome = exc.code
        else:
            outcome = "200"
            with lock:
                seen.extend(Cosigned(fork.name, size, fork.root(size), sig) for sig in sigs)
            known = size
        outcomes[outcome] += 1


def held_on_disk(db_path: Path, origin: str) -> tuple[int, bytes]:
    with sqlite3.connect(db_path) as conn:
        size, root = conn.execute("SELECT size, root FROM logs WHERE origin = ?", [origin]).fetchone()
    return int(size), bytes(root)


def test_sigkill_mid_stream_never_yields_two_disagreeing_cosignatures(tmp_path: Path) -> None:
    forks = make_forks()
    by_name = {fork.name: fork for fork in forks}
    config_path = write_config(tmp_path, [forks[0].log.signer], workers=2, threads=8)
    config = load_witness_config(config_path)
    seen: list[Cosigned] = []
    outcomes: Counter[str] = Counter()
    vkeys = set()
    for _round in range(ROUNDS):
        server = start_witness(config_path)
        try:
            vkeys.add(requests.get(server.url + "/health", timeout=10).json()["vkey"])
            stop = threading.Event()
            before = outcomes["200"]
            threads = [
                threading.Thread(target=storm, args=(server.url, forks, stop, seen, outcomes)) for _ in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while outcomes["200"] - before < 40 and time.monotonic() < deadline:
                time.sleep(0.02)
            stop.set()  # set first: a request failing from here on was in flight at the kill
            os.killpg(server.process.pid, signal.SIGKILL)  # master and workers, mid-request
            for thread in threads:
                thread.join(30)
        finally:
            server.stop()
    assert len(vkeys) == 1, "the witness key changed across restarts"
    witness_key = CosignatureVerifier.from_vkey(vkeys.pop())
    print(f"\nwitness storm: {len(seen)} cosignatures; outcomes {dict(outcomes)}")
    assert outcomes["200"] >= 40 * ROUNDS

    # Every cosignature it returned is its own and valid for the checkpoint it was asked for.
    for c in seen:
        assert witness_key.verify(by_name[c.fork].log.checkpoint(c.size).body(), c.signature) is not None
    # No size with two roots; everything past the shared prefix on one fork.
    roots_by_size: dict[int, set[bytes]] = {}
    for c in seen:
        roots_by_size.setdefault(c.size, set()).add(c.root)
    assert all(len(roots) == 1 for roots in roots_by_size.values())
    forks_past_prefix = {c.fork for c in seen if c.size > SHARED}
    assert len(forks_past_prefix) <= 1
    winner = by_name[forks_past_prefix.pop()] if forks_past_prefix else forks[0]
    # And consistent along the chain, by proof: each cosigned tree extends the previous one.
    chain = sorted({(c.size, c.root) for c in seen})
    for (old_size, old_root), (new_size, new_root) in zip(chain, chain[1:], strict=False):
        proof = merkle.consistency_proof(winner.leaves[:new_size], old_size)
        assert merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)

    # What is on disk: on that fork, and never behind a cosignature already given.
    size, root = held_on_disk(config.db_path, winner.log.origin)
    assert size >= max(c.size for c in seen)
    assert root == winner.root(size)

    # The witness comes back and carries on from there, and still refuses the other fork.
    with start_witness(config_path) as server:
        nxt = min(LENGTH, size + 5)
        proof = merkle.consistency_proof(winner.leaves[:nxt], size) if 0 < size < nxt else []
        sigs = add_checkpoint(server.url, size, proof, winner.signed(nxt), 10, verifier=witness_key)
        assert sigs and witness_key.verify(winner.log.checkpoint(nxt).body(), sigs[0]) is not None
        loser = forks[1] if winner is forks[0] else forks[0]
        with pytest.raises((InconsistentCheckpoints, InvalidProof)):
            add_checkpoint(server.url, nxt, [], loser.signed(nxt), 10)

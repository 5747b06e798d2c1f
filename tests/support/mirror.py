"""Helpers for the mirror tests (tests/gateway/test_mirror.py): paid load on a test gateway,
``inferpay mirror`` as a real process, and the checks that a mirror's own ledger is the
gateway's."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import requests

from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from ledger.audit import audit
from ledger.storage.sqlite import SQLiteStore
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import NoteVerifier, open_note
from tests.support.gateway import FLAT, GatewayEnv
from tests.support.servers import ROOT

MIRROR_TIMEOUT_S = 120


def pay(env: GatewayEnv, calls: int, threads: int = 1) -> None:
    """``calls`` paid calls on each of ``threads`` threads, all of which must succeed."""
    failures: list[str] = []

    def work() -> None:
        session = requests.Session()
        for _ in range(calls):
            header, _ = env.payment(env.alice)
            answer = session.post(env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
            if answer.status_code != 200:
                failures.append(answer.text[:200])

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []


def mirror_argv(url: str, home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "inferpay_cli", "mirror", url, "--home", str(home), *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_mirror(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mirror_argv(url, home, "--once", *args),
        capture_output=True,
        text=True,
        timeout=MIRROR_TIMEOUT_S,
        env=child_env(),
        cwd=ROOT,
    )


def published(env: GatewayEnv) -> tuple[bytes, Checkpoint]:
    """The gateway's checkpoint once the ledger is quiet and it covers the whole head."""
    env.wait_quiet()
    note = requests.get(env.ledger_url + "/checkpoint", timeout=10).content
    checkpoint = parse_checkpoint(open_note(note, [NoteVerifier.from_vkey(vkey_of(env))]).text)
    assert checkpoint.size == env.ledger.head().header.tree_size
    return note, checkpoint


def vkey_of(env: GatewayEnv) -> str:
    vkey: str = json.loads(env.cli("info", "--json").stdout)["checkpointKey"]
    return vkey


def mirror_head_size(home: Path) -> int:
    """The mirror's sealed log size, read with plain sqlite3 (read-only) while it runs."""
    row = _read(home, "SELECT record FROM blocks ORDER BY height DESC LIMIT 1")
    return 0 if row is None else int(json.loads(str(row[0]))["header"]["treeSize"])


def mirror_checkpoint_size(home: Path) -> int:
    """The size of the newest checkpoint the mirror verified and stored (0 before the first)."""
    row = _read(home, "SELECT MAX(tree_size) FROM checkpoints")
    return 0 if row is None or row[0] is None else int(str(row[0]))


def _read(home: Path, sql: str) -> tuple[object, ...] | None:
    path = home / "ledger.db"
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            row: tuple[object, ...] | None = conn.execute(sql).fetchone()
            return row
    except sqlite3.OperationalError:
        return None  # created, not migrated yet


def assert_same_ledger(env: GatewayEnv, home: Path) -> None:
    """The mirror's own ledger: the gateway's head and checkpoint, and an audit that agrees."""
    note, checkpoint = published(env)
    store = SQLiteStore(home / "ledger.db")
    try:
        assert store.head().to_dict() == env.ledger.head().to_dict()
        assert store.checkpoints.latest() == (checkpoint.size, note)
        report = audit(store, workers=1)
        assert report.ok, [str(p) for p in report.problems]
        assert report.transactions == checkpoint.size
        assert store.supply() == env.store.supply()
        assert sorted(store.accounts(), key=str) == sorted(env.store.accounts(), key=str)
        assert store.open_holds() == env.store.open_holds() == []
    finally:
        store.close()


def stderr_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]

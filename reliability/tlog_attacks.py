"""Phase ``tlog``: mirrors and witnesses under attack.

- **a lying source**: ``inferpay mirror --once`` (the real command, a process) follows the
  deployment's gateway through ``LyingLedger``, a proxy that forwards the ledger API and, while
  a lie is switched on, alters what it serves: level-0 tiles truncated or with a byte flipped,
  tiles of the upper levels altered, entry bundles truncated or with an entry changed, a
  checkpoint of another history signed with the log's own key, one signed by another key,
  block headers that do not link. Before each lie the gateway takes a few paid calls, so the
  mirror has new entries to fetch. The mirror must refuse each lie it was shown (exit 1, one
  line on stderr naming the error's code) and keep nothing of it: with the lie switched off the
  same mirror carries on to the gateway's head. A lie the mirror never asked for (it did not
  fetch that resource) is counted apart, as not exercised.
- **a witness killed mid-update**: the storm of ``tests/witness/test_witness_crash.py`` (two
  forks of one log pushed by many threads at a two-worker ``inferpay witness``, SIGKILLed
  mid-request, restarted): no two cosignatures for one size with different roots, all of them
  on one fork and consistent by proof, the state on disk never behind a cosignature given.
- **a split view from a restored backup** (``reliability.split_view``): a gateway restored from
  an old copy of its home and fed new payments is refused by both witnesses and by a client
  that saw the newer checkpoint, which keeps both notes as evidence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ledger import merkle
from ledger.errors import InconsistentCheckpoints, InvalidProof
from ledger.storage.sqlite import SQLiteStore
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import Note, NoteSigner, format_note
from ledger.tlog.tiles import TILE_WIDTH
from reliability.checks import Finding
from reliability.deploy import Deployment
from tests.support.mirror import pay, published, run_mirror
from tests.witness.support import start_witness, write_config
from tests.witness.test_witness_crash import SHARED, Cosigned, held_on_disk, make_forks, storm
from witness.client import add_checkpoint
from witness.config import load_witness_config

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}
_LEVEL0 = re.compile(r"^/ledger/tile/0/")
_UPPER = re.compile(r"^/ledger/tile/[1-9][0-9]*/")
_ENTRIES = re.compile(r"^/ledger/tile/entries/")
LIES = (
    "tile_truncated",
    "tile_altered",
    "upper_tile_altered",
    "entries_truncated",
    "entry_altered",
    "checkpoint_other_history",
    "checkpoint_other_key",
    "blocks_relinked",
)


class LyingLedger:
    """A proxy for a gateway's ledger API that lies, while ``lie`` is set, about one kind of thing."""

    def __init__(self, upstream: str, log_key: NoteSigner) -> None:
        self.upstream = upstream.rstrip("/")
        self.log_key = log_key
        self.other_key = NoteSigner.generate(log_key.name)
        self.lie: str | None = None
        self.told: Counter[str] = Counter()  # responses altered, by lie
        self.session = requests.Session()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="lying-ledger", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        target = environ.get("RAW_URI") or request.full_path.rstrip("?")
        real = self.session.get(self.upstream + target, timeout=30)
        body = real.content
        headers = {k: v for k, v in real.headers.items() if k.lower() not in _HOP}
        if self.lie is not None and real.status_code == 200:
            altered = self._alter(self.lie, request.path, body)
            if altered is not None and altered != body:
                self.told[self.lie] += 1
                body = altered
        return Response(body, real.status_code, list(headers.items()))(environ, start_response)

    def _alter(self, lie: str, path: str, body: bytes) -> bytes | None:
        if lie == "tile_truncated" and _LEVEL0.match(path):
            return body[:-7]
        if lie == "tile_altered" and _LEVEL0.match(path):
            return _flip(body, len(body) - 1)
        if lie == "upper_tile_altered" and _UPPER.match(path):
            return _flip(body, 0)
        if lie == "entries_truncated" and _ENTRIES.match(path):
            return body[:-3]
        if lie == "entry_altered" and _ENTRIES.match(path):
            return _flip(body, len(body) - 2)  # inside the last entry: the bundle still decodes
        if lie in ("checkpoint_other_history", "checkpoint_other_key") and path == "/ledger/checkpoint":
            size = int(body.split(b"\n")[1])
            forged = Checkpoint(self.log_key.name, size, bytes(32)).body()
            signer = self.log_key if lie == "checkpoint_other_history" else self.other_key
            return format_note(Note(forged, (signer.sign(forged),)))
        if lie == "blocks_relinked" and path == "/ledger/blocks":
            page = json.loads(body)
            relinked = [b for b in page.get("blocks", []) if b["header"]["height"] > 0]  # genesis links to the chain
            for block in relinked:
                block["header"]["prevHash"] = "0x" + "11" * 32
            return json.dumps(page).encode() if relinked else None
        return None


def _flip(data: bytes, index: int) -> bytes:
    if not data:
        return data
    index = max(0, min(index, len(data) - 1))
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def run_lying_source(dep: Deployment, rounds: int) -> tuple[dict[str, Any], list[Finding]]:
    env = dep.env
    if "alice" not in env.wallets:  # tests.support.mirror.pay pays as alice
        env.new_wallet("alice", "100")
    size = env.ledger.head().header.tree_size
    if size < 2 * TILE_WIDTH:  # a log with a level-1 tile, so the upper-tile lie has something to alter
        pay(env, (2 * TILE_WIDTH - size) // 8 + 1, threads=4)
    log_key = NoteSigner.from_skey((dep.home / "checkpoint.key").read_text().strip())
    liar = LyingLedger(dep.url, log_key)
    home = dep.root / "tlog-mirror"
    findings: list[Finding] = []
    results: dict[str, Counter[str]] = {lie: Counter() for lie in LIES}
    try:
        first = run_mirror(liar.url, home)
        if first.returncode != 0:
            findings.append(Finding("mirror_follows_an_honest_source", first.stderr.strip()[-300:]))
            return {"lies": {}}, findings
        for _ in range(rounds):
            for lie in LIES:
                pay(env, 3)
                published(env)
                told = liar.told[lie]
                liar.lie = lie
                try:
                    lied = run_mirror(liar.url, home)
                finally:
                    liar.lie = None
                shown = liar.told[lie] > told
                tally = results[lie]
                if not shown:
                    tally["notExercised"] += 1
                elif lied.returncode == 1 and len(lied.stderr.strip().splitlines()) == 1:
                    code = re.search(r"\[([a-z_]+)\]\s*$", lied.stderr.strip())
                    tally["detected"] += 1
                    tally[f"code:{code.group(1) if code else 'none'}"] += 1
                else:
                    tally["accepted"] += 1
                    findings.append(
                        Finding(
                            "mirror_detects_a_lying_source",
                            f"{lie}: the mirror exited {lied.returncode}: {lied.stderr.strip()[-300:]}",
                        )
                    )
                honest = run_mirror(liar.url, home)  # the lie off: the same mirror carries on
                if honest.returncode != 0 or not _same_head(dep, home):
                    tally["notRecovered"] += 1
                    findings.append(
                        Finding("mirror_recovers", f"after {lie}: exit {honest.returncode}: {honest.stderr[-300:]}")
                    )
                else:
                    tally["recovered"] += 1
    finally:
        liar.close()
    lies = {lie: dict(tally) for lie, tally in results.items()}
    return {
        "lies": lies,
        # Mirror runs that were shown a lie (one run may be served several altered answers:
        # ``responsesAltered`` counts those), so that told = detected + accepted.
        "liesTold": sum(t["detected"] + t["accepted"] for t in results.values()),
        "responsesAltered": sum(liar.told.values()),
        "detected": sum(t["detected"] for t in results.values()),
        "accepted": sum(t["accepted"] for t in results.values()),
        "notExercised": sum(t["notExercised"] for t in results.values()),
    }, findings


def _same_head(dep: Deployment, home: Path) -> bool:
    store = SQLiteStore(home / "ledger.db")
    try:
        return store.head().to_dict() == dep.env.ledger.head().to_dict()
    finally:
        store.close()


# ---- the witness ----


def run_witness_kills(root: Path, kills: int, per_round: int = 40) -> tuple[dict[str, Any], list[Finding]]:
    forks = make_forks()
    by_name = {fork.name: fork for fork in forks}
    config_path = write_config(root / "tlog-witness", [forks[0].log.signer], workers=2, threads=8)
    config = load_witness_config(config_path)
    seen: list[Cosigned] = []
    outcomes: Counter[str] = Counter()
    vkeys = set()
    findings: list[Finding] = []
    for _ in range(kills):
        server = start_witness(config_path)
        try:
            vkeys.add(requests.get(server.url + "/health", timeout=10).json()["vkey"])
            stop = threading.Event()
            before = outcomes["200"]
            threads = [
                threading.Thread(target=storm, args=(server.url, forks, stop, seen, outcomes), daemon=True)
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while outcomes["200"] - before < per_round and time.monotonic() < deadline:
                time.sleep(0.02)
            stop.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)  # master and workers, mid-request
            for thread in threads:
                thread.join(30)
        finally:
            server.stop()
    key = CosignatureVerifier.from_vkey(vkeys.pop()) if len(vkeys) == 1 else None
    if key is None:
        findings.append(Finding("witness_key_kept", f"the witness answered {len(vkeys)} keys across restarts"))
        return {"kills": kills}, findings
    bad = [c for c in seen if key.verify(by_name[c.fork].log.checkpoint(c.size).body(), c.signature) is None]
    roots: dict[int, set[bytes]] = {}
    for c in seen:
        roots.setdefault(c.size, set()).add(c.root)
    split = {size: len(r) for size, r in roots.items() if len(r) > 1}
    past = {c.fork for c in seen if c.size > SHARED}
    inconsistent = 0
    if len(past) <= 1:
        winner = by_name[past.pop()] if past else forks[0]
        chain = sorted({(c.size, c.root) for c in seen})
        for (old_size, old_root), (new_size, new_root) in zip(chain, chain[1:], strict=False):
            proof = merkle.consistency_proof(winner.leaves[:new_size], old_size)
            if not merkle.verify_consistency(old_size, new_size, old_root, new_root, proof):
                inconsistent += 1
        size, held_root = held_on_disk(config.db_path, winner.log.origin)
        behind = size < max((c.size for c in seen), default=0) or held_root != winner.root(size)
        # It comes back and still refuses the other fork.
        refused_other = False
        with start_witness(config_path) as server:
            loser = forks[1] if winner is forks[0] else forks[0]
            nxt = min(len(winner.leaves), size + 5)
            try:
                add_checkpoint(server.url, nxt, [], loser.signed(nxt), 10)
            except (InconsistentCheckpoints, InvalidProof):
                refused_other = True
            except Exception:  # noqa: BLE001  # any other answer is reported below
                refused_other = size < SHARED  # before the forks part, the other fork is no lie yet
    else:
        behind, size, refused_other = True, -1, False
    for check, ok, message in (
        ("witness_cosignatures_verify", not bad, f"{len(bad)} cosignatures do not verify"),
        ("witness_never_splits", not split, f"sizes cosigned with two roots: {split}"),
        ("witness_on_one_fork", len(past) <= 1, f"cosignatures on both forks past entry {SHARED}"),
        ("witness_consistent", inconsistent == 0, f"{inconsistent} consecutive cosigned trees not consistent"),
        ("witness_state_kept", not behind, f"the state on disk (size {size}) is behind a cosignature given"),
        ("witness_refuses_the_other_fork", refused_other, "after the restart the other fork was not refused"),
    ):
        if not ok:
            findings.append(Finding(check, message))
    with contextlib.closing(sqlite3.connect(config.db_path)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        findings.append(Finding("integrity_check", f"witness.db after the kills: {integrity}"))
    return {
        "kills": kills,
        "cosignatures": len(seen),
        "outcomes": dict(outcomes),
        "sizesWithTwoRoots": len(split),
        "largestCosigned": max((c.size for c in seen), default=0),
        "heldOnDisk": size,
        "integrityCheck": integrity,
    }, findings


def run_tlog(dep: Deployment, rounds: int, kills: int, split_views: int = 1) -> tuple[dict[str, Any], list[Finding]]:
    from reliability.split_view import run_split_views

    started = time.monotonic()
    mirror, findings = run_lying_source(dep, rounds)
    witness, witness_findings = run_witness_kills(dep.root, kills)
    split, split_findings = run_split_views(dep.root, split_views)
    return {
        "mirror": mirror,
        "witness": witness,
        "splitView": split,
        "durationSeconds": round(time.monotonic() - started, 1),
        "findings": len(findings) + len(witness_findings) + len(split_findings),
    }, findings + witness_findings + split_findings

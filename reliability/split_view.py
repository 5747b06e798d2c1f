"""Part of phase ``tlog``: the split view from a restored backup.

An operator who restores a gateway from an old copy of its home and feeds it new payments
holds two histories under one checkpoint key: the one the world saw, and a fork. Its own
deployment (``tests.support.gateway.start_gateway_env``, a 2-worker gateway) with two real
``inferpay witness`` servers; each round:

1. the live gateway's whole home is copied (keys and wallets, the ledger through SQLite's
   backup API: a consistent snapshot);
2. the live gateway takes more payments, both witnesses cosign its new checkpoint, and a client
   (``gateway.client.checkpoints.CheckpointTracker``) observes it;
3. a second gateway is started from the copy and fed other payments, past the live size: a
   second history under the same key, which it pushes to the same witnesses.

Expected: no witness ever cosigns the fork (the restored gateway's own pushes are refused, and
so are the suite's direct ``add-checkpoint`` pushes: 409 from the size the fork grew from, 422
from the size the witness holds, whose proof cannot hold); the client that saw the newer
checkpoint refuses the fork (``InconsistentCheckpoints``) and keeps both notes as evidence.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from gateway.client.checkpoints import CheckpointTracker
from gateway.client.ledger_api import LedgerApiClient
from ledger.errors import InconsistentCheckpoints
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import NoteSigner, NoteVerifier, parse_note
from ledger.tlog.witness_protocol import SIZE_CONTENT_TYPE, format_add_checkpoint, parse_size_body
from reliability.checks import Finding
from tests.gateway.test_witnessed_checkpoints import NAMES, cosigned_by, metric, pay
from tests.support.gateway import _LAUNCHER as LAUNCHER
from tests.support.gateway import PASSWORD, SCRYPT_N, GatewayEnv, start_gateway_env
from tests.support.servers import ServerHandle, run_server_command
from tests.witness.support import start_witness, witness_vkey, write_config


def run_split_views(root: Path, rounds: int) -> tuple[dict[str, Any], list[Finding]]:
    directory = root / "split-view"
    directory.mkdir(parents=True, exist_ok=True)
    witnesses: list[ServerHandle] = []

    def configure(home: Path) -> str:
        log = NoteSigner.from_skey((home / "checkpoint.key").read_text().strip())
        extra = ""
        for index, name in enumerate(NAMES):
            config = write_config(directory / f"witness{index}", [log], name=name)
            subprocess.run(
                [sys.executable, "-m", "inferpay_cli", "witness", "init", "--config", str(config)],
                check=True,
                capture_output=True,
            )
            handle = start_witness(config).__enter__()
            witnesses.append(handle)
            extra += f'\n[[checkpoints.witnesses]]\nurl = "{handle.url}"\nvkey = "{witness_vkey(config)}"\n'
        return extra

    findings: list[Finding] = []
    tally: Counter[str] = Counter()
    started = time.monotonic()
    try:
        with start_gateway_env(directory, configure=configure) as env:
            log_vkey = NoteSigner.from_skey((env.home / "checkpoint.key").read_text().strip()).vkey
            for index in range(rounds):
                _one_split_view(env, witnesses, log_vkey, directory / f"round{index}", tally, findings)
    finally:
        for handle in witnesses:
            handle.__exit__(None, None, None)
    return {
        "attempted": tally["attempted"],
        "refusedByWitnesses": tally["refusedByWitnesses"],
        "refusedByClients": tally["refusedByClients"],
        "evidenceKept": tally["evidenceKept"],
        "forkCosigned": tally["forkCosigned"],
        "directPushes": {k[len("push:") :]: v for k, v in sorted(tally.items()) if k.startswith("push:")},
        "restoredGatewayPushesRefused": tally["gatewayPushesRefused"],
        "durationSeconds": round(time.monotonic() - started, 1),
    }, findings


def _checkpoint(url: str) -> bytes:
    return requests.get(url + "/ledger/checkpoint", timeout=10).content


def _size(note: bytes) -> int:
    return parse_checkpoint(parse_note(note).text).size


def _one_split_view(
    env: GatewayEnv,
    witnesses: list[ServerHandle],
    log_vkey: str,
    directory: Path,
    tally: Counter[str],
    findings: list[Finding],
) -> None:
    env.wait_quiet()
    backup = directory / "backup-home"
    shutil.copytree(env.home, backup, ignore=shutil.ignore_patterns("ledger.db*", "*.lock"))
    with (
        contextlib.closing(sqlite3.connect(env.home / "ledger.db")) as source,
        contextlib.closing(sqlite3.connect(backup / "ledger.db")) as target,
    ):
        source.backup(target)
    old_size = env.ledger.head().header.tree_size

    # The live gateway moves on; both witnesses cosign it and a client sees it.
    pay(env, calls=2)
    env.wait_quiet()
    live_size = env.ledger.head().header.tree_size
    seen: list[bytes] = []

    def cosigned() -> bool:
        note = _checkpoint(env.url)
        seen[:] = [note]
        return _size(note) == live_size and set(NAMES) <= cosigned_by(
            note, parse_checkpoint(parse_note(note).text).origin
        )

    env.wait_for(cosigned, timeout=30, what="the live checkpoint cosigned by both witnesses")
    tracker = CheckpointTracker(NoteVerifier.from_vkey(log_vkey), directory=directory / "client")
    tracker.observe(seen[0], LedgerApiClient(env.ledger_url).checkpoint_consistency)

    restored_config = directory / "restored.toml"
    argv = [
        sys.executable,
        "-c",
        LAUNCHER,
        str(env.directory / "gateway.toml.in"),  # the live gateway's config, its witnesses included
        str(restored_config),
        "{port}",
        "--home",
        str(backup),
        "gateway",
        "--config",
        str(restored_config),
    ]
    runner_env = {"INFERPAY_HOME": str(backup), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    tally["attempted"] += 1
    with run_server_command(argv, ready_path="/health", env=runner_env) as restored:
        pay(env, url=restored.url, calls=4)  # other payments: a second history under the same key
        env.wait_for(lambda: _size(_checkpoint(restored.url)) > live_size, timeout=30, what="the fork's checkpoint")
        forked = _checkpoint(restored.url)
        fork_size = _size(forked)
        fork_ledger = LedgerApiClient(restored.url + "/ledger")

        # The suite pushes the fork to each witness itself, as the tlog-witness protocol allows
        # anyone to: from the size it grew from, then from the size the witness holds.
        refused_by_all = True
        for handle in witnesses:
            refused = True
            held = old_size
            for _ in range(2):
                proof = fork_ledger.checkpoint_consistency(held, fork_size) if 0 < held < fork_size else []
                answer = requests.post(
                    handle.url + "/add-checkpoint", data=format_add_checkpoint(held, proof, forked), timeout=10
                )
                tally[f"push:{answer.status_code}"] += 1
                if answer.status_code == 200:
                    refused = False
                    findings.append(Finding("witnesses_refuse_a_split_view", f"{handle.url} cosigned the fork"))
                    break
                media = answer.headers.get("Content-Type", "").split(";")[0].strip()
                if answer.status_code != 409 or media != SIZE_CONTENT_TYPE:
                    break
                held = parse_size_body(answer.content)  # the witness's own size: push from there
            refused_by_all &= refused

        def gateway_refused() -> bool:
            scraped = requests.get(restored.url + "/metrics", timeout=10).text
            return all(
                metric(scraped, "inferpay_witness_pushes_total", witness=n, outcome="refused") >= 1 for n in NAMES
            )

        try:
            env.wait_for(gateway_refused, timeout=30, what="the restored gateway's pushes refused by both witnesses")
            tally["gatewayPushesRefused"] += 1
        except AssertionError as exc:
            refused_by_all = False
            findings.append(Finding("witnesses_refuse_a_split_view", str(exc)[:300]))
        forked = _checkpoint(restored.url)
        if cosigned_by(forked, parse_checkpoint(parse_note(forked).text).origin) & set(NAMES):
            tally["forkCosigned"] += 1
            refused_by_all = False
            findings.append(Finding("witnesses_refuse_a_split_view", "the fork's checkpoint carries a cosignature"))
        tally["refusedByWitnesses"] += refused_by_all

        try:
            tracker.observe(forked, fork_ledger.checkpoint_consistency)
        except InconsistentCheckpoints:
            tally["refusedByClients"] += 1
            evidence = list((directory / "client").glob("evidence-*.txt"))
            if any(forked in path.read_bytes() and seen[0] in path.read_bytes() for path in evidence):
                tally["evidenceKept"] += 1
            else:
                findings.append(Finding("client_keeps_evidence", f"no evidence file holds both notes: {evidence}"))
        else:
            findings.append(Finding("client_refuses_a_split_view", f"the client accepted the fork of size {fork_size}"))

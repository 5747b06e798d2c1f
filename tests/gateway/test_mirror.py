"""``inferpay mirror``: a real gateway process under paid load, and mirrors of it as real
processes (``python -m inferpay_cli mirror``), each in a home of its own.

A mirror ends at the gateway's checkpoint and head, its own ledger audits clean with the same
supply and balances, it resumes after SIGKILL, it stops with evidence (exit 1, one line on
stderr, a file in its home) when the source serves an edited entry or a checkpoint of another
history, and ``--serve`` answers ``inferpay verify --node`` with the same head.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from ledger import open_store
from ledger.audit import audit
from ledger.storage.sqlite import SQLiteStore
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.note import Note, NoteSigner, NoteVerifier, format_note
from ledger.tlog.proof import parse_tlog_proof, verify_tlog_proof
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.ledger import drop_schema, new_postgres_url, postgres_unavailable
from tests.support.mirror import (
    assert_same_ledger,
    child_env,
    mirror_argv,
    mirror_checkpoint_size,
    mirror_head_size,
    pay,
    published,
    run_mirror,
    stderr_line,
    vkey_of,
)
from tests.support.servers import ROOT, run_server_command, run_wsgi_in_process

THREADS = 4
CALLS_PER_THREAD = 30


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-mirror"))) as started:
        pay(started, 6)
        started.wait_quiet()
        yield started


# ---- following ----


def test_a_mirror_follows_a_gateway_under_paid_load(env: GatewayEnv, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    log = open(tmp_path / "mirror.log", "w+")  # noqa: SIM115 - closed below, read after the process ends
    process = subprocess.Popen(
        mirror_argv(env.url, home, "--interval", "0.1"), stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
    )
    try:
        started = time.monotonic()
        pay(env, CALLS_PER_THREAD, THREADS)
        _, checkpoint = published(env)
        assert checkpoint.size >= 2 * THREADS * CALLS_PER_THREAD  # a hold and a settle per call
        env.wait_for(
            lambda: mirror_checkpoint_size(home) == checkpoint.size,
            timeout=60,
            what="the mirror to verify the gateway's checkpoint",
        )
        elapsed_s = time.monotonic() - started
        assert process.poll() is None, "the mirror stopped while following"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        log.seek(0)
        output = log.read()
        log.close()
    assert "error" not in output, output
    assert "trusting the source's checkpoint key on first use" in output
    assert_same_ledger(env, home)
    print(f"followed {checkpoint.size} entries under load in {elapsed_s:.1f} s")
    # The mirror's home, opened by the CLI as any ledger: it verifies.
    verified = env.cli("--home", str(home), "verify", "--json")
    assert json.loads(verified.stdout)["head"] == env.ledger.head().to_dict()


def test_a_mirror_killed_mid_sync_resumes_and_finishes_consistent(env: GatewayEnv, tmp_path: Path) -> None:
    _, checkpoint = published(env)
    home = tmp_path / "mirror"
    killed_at = 0
    for attempt in range(5):  # the first replays may finish before the kill lands; then start over
        if home.exists():
            for path in sorted(home.iterdir()):
                path.unlink()
        process = subprocess.Popen(
            mirror_argv(env.url, home, "--once"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            cwd=ROOT,
        )
        wanted = checkpoint.size // (3 + attempt)  # a point well inside the replay
        while process.poll() is None and mirror_head_size(home) < wanted:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = mirror_head_size(home)
        if process.returncode == -signal.SIGKILL and 0 < killed_at < checkpoint.size:
            break
    assert 0 < killed_at < checkpoint.size, "never caught the mirror mid-sync"
    resumed = run_mirror(env.url, home)
    assert resumed.returncode == 0, resumed.stderr
    assert "first use" not in resumed.stderr  # the key was pinned by the first run, and kept
    assert_same_ledger(env, home)


def test_a_mirror_stopped_between_applying_and_attaching_a_block_resumes(
    env: GatewayEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrowest window, made on purpose in-process: a block's transactions are in the
    mirror's store, unsealed, when it stops; the next pass takes them as applied."""
    from gateway.client.ledger_api import LedgerApiClient
    from gateway.mirror import Mirror, Source, follow

    home = tmp_path / "mirror"
    home.mkdir()
    real_attach, attached = follow.attach_block, []

    def dies_on_the_third(store: Any, block: Any, leaves: Any) -> None:
        if len(attached) == 2:
            raise KeyboardInterrupt  # as a process stopped right there would
        attached.append(block)
        real_attach(store, block, leaves)

    monkeypatch.setattr(follow, "attach_block", dies_on_the_third)
    with LedgerApiClient.for_node(env.url) as api:
        store = SQLiteStore(home / "ledger.db")
        try:
            mirror = Mirror(home, store, Source(api), vkey_of(env))
            with pytest.raises(KeyboardInterrupt):
                mirror.sync_to(*mirror.observe())
            assert store.unsealed()[0] > 0 and store.head().header.height == 2
        finally:
            store.close()
        monkeypatch.setattr(follow, "attach_block", real_attach)
        store = SQLiteStore(home / "ledger.db")
        try:
            mirror = Mirror(home, store, Source(api), vkey_of(env))
            result = mirror.sync_to(*mirror.observe())
            assert result.head.to_dict() == env.ledger.head().to_dict()
        finally:
            store.close()
    assert_same_ledger(env, home)


# ---- a source that rewrites history ----


def test_an_edited_sealed_entry_stops_the_mirror_with_evidence(env: GatewayEnv, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    assert run_mirror(env.url, home).returncode == 0
    pay(env, 3)
    _, checkpoint = published(env)
    seq = checkpoint.size - 1  # a sealed entry the mirror has not seen yet (index seq - 1)
    with closing(sqlite3.connect(env.home / "ledger.db")) as conn, conn:
        original = conn.execute("SELECT record FROM transactions WHERE seq = ?", [seq]).fetchone()[0]
        record = json.loads(original)
        record["acceptedAt"] = str(int(record["acceptedAt"]) + 1)
        conn.execute("UPDATE transactions SET record = ? WHERE seq = ?", [json.dumps(record), seq])
    try:
        before = mirror_head_size(home)
        refused = run_mirror(env.url, home)
        assert refused.returncode == 1, refused.stderr
        line = stderr_line(refused)
        assert line.startswith("error: ") and line.endswith("[history_rewritten]"), line
        assert f"entry {seq - 1} " in line and "evidence: " in line, line
        evidence = json.loads(Path(line.split("evidence: ")[1].split(")")[0]).read_text())
        assert evidence["kind"] == "inferpay-mirror-evidence" and evidence["vkey"] == vkey_of(env)
        assert evidence["entries"][0]["index"] == seq - 1
        assert base64.b64decode(evidence["entries"][0]["served"]).endswith(b"}")
        assert evidence["checkpoint"].startswith(checkpoint.origin + "\n")
        assert before <= mirror_head_size(home) <= seq - 1  # the bad entry was never attached
    finally:
        with closing(sqlite3.connect(env.home / "ledger.db")) as conn, conn:
            conn.execute("UPDATE transactions SET record = ? WHERE seq = ?", [original, seq])
    # Nothing of the refused block was kept: with the row restored, the same mirror carries on.
    assert run_mirror(env.url, home).returncode == 0
    assert_same_ledger(env, home)


def test_an_entry_changed_after_it_was_mirrored_stops_the_mirror(env: GatewayEnv, tmp_path: Path) -> None:
    """The start of a bundle the mirror holds comes again with the next entries: it must not
    have changed (an edit the source's own consistency proofs would not show: they are
    computed from leaf hashes, and the mirror has the original)."""
    home = tmp_path / "mirror"
    _, checkpoint = published(env)
    if checkpoint.size % 256 == 0:
        pay(env, 1)
        _, checkpoint = published(env)
    assert run_mirror(env.url, home).returncode == 0
    seq = checkpoint.size  # the last entry the mirror holds (index seq - 1), in a partial bundle
    with closing(sqlite3.connect(env.home / "ledger.db")) as conn, conn:
        original = conn.execute("SELECT record FROM transactions WHERE seq = ?", [seq]).fetchone()[0]
        record = json.loads(original)
        record["acceptedAt"] = str(int(record["acceptedAt"]) + 1)
        conn.execute("UPDATE transactions SET record = ? WHERE seq = ?", [json.dumps(record), seq])
    try:
        pay(env, 1)
        published(env)
        refused = run_mirror(env.url, home)
        assert refused.returncode == 1, refused.stderr
        line = stderr_line(refused)
        assert f"entry {seq - 1} changed since it was mirrored" in line and line.endswith("[history_rewritten]")
        evidence = json.loads(Path(line.split("evidence: ")[1].split(")")[0]).read_text())
        assert evidence["entries"][0]["expectedFrom"] == "mirror"
    finally:
        with closing(sqlite3.connect(env.home / "ledger.db")) as conn, conn:
            conn.execute("UPDATE transactions SET record = ? WHERE seq = ?", [original, seq])
    assert run_mirror(env.url, home).returncode == 0
    assert_same_ledger(env, home)


@pytest.fixture
def proxy(env: GatewayEnv, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A dishonest front for the gateway (tests.support.forging_proxy) and its switches."""
    switches = tmp_path / "lies"
    switches.mkdir()
    with run_wsgi_in_process("tests.support.forging_proxy:create_forging_proxy", env.url, str(switches)) as server:
        yield server.url, switches


def test_a_checkpoint_of_another_history_is_refused_with_both_notes(
    env: GatewayEnv, tmp_path: Path, proxy: tuple[str, Path]
) -> None:
    url, lies = proxy
    home = tmp_path / "mirror"
    assert run_mirror(url, home).returncode == 0
    note, checkpoint = published(env)
    # The log's own key signs a tree of the same size with another root: a second history.
    signer = NoteSigner.from_skey((env.home / "checkpoint.key").read_text().strip())
    body = Checkpoint(checkpoint.origin, checkpoint.size, bytes(32)).body()
    forged = format_note(Note(body, (signer.sign(body),)))
    (lies / "checkpoint").write_bytes(forged)
    refused = run_mirror(url, home)
    assert refused.returncode == 1, refused.stderr
    line = stderr_line(refused)
    assert line.endswith("[inconsistent_checkpoints]") and "evidence: " in line, line
    evidence = Path(line.split("evidence: ")[1].split(")")[0]).read_bytes()
    assert note in evidence and forged in evidence
    # Shown the true checkpoint again, the mirror carries on and still agrees.
    (lies / "checkpoint").unlink()
    assert run_mirror(url, home).returncode == 0
    assert_same_ledger(env, home)


def test_blocks_that_do_not_link_stop_the_mirror(env: GatewayEnv, tmp_path: Path, proxy: tuple[str, Path]) -> None:
    url, lies = proxy
    home = tmp_path / "mirror"
    assert run_mirror(url, home).returncode == 0
    pay(env, 2)
    published(env)
    (lies / "relink").write_text("on")
    refused = run_mirror(url, home)
    assert refused.returncode == 1, refused.stderr
    line = stderr_line(refused)
    assert "does not follow block" in line and line.endswith("[history_rewritten]"), line
    evidence = json.loads(Path(line.split("evidence: ")[1].split(")")[0]).read_text())
    previous, block = evidence["blocks"]
    assert block["header"]["height"] == previous["header"]["height"] + 1
    assert block["header"]["prevHash"] != previous["hash"]
    (lies / "relink").unlink()
    assert run_mirror(url, home).returncode == 0
    assert_same_ledger(env, home)


def test_the_pinned_key_is_kept_and_another_is_refused(env: GatewayEnv, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    other = NoteSigner.generate(published(env)[1].origin).vkey
    wrong_key = run_mirror(env.url, home, "--vkey", other)
    assert wrong_key.returncode == 1 and stderr_line(wrong_key).endswith("[unverified_note]"), wrong_key.stderr
    assert not (home / "source.vkey").exists()  # a key is pinned only once a checkpoint verifies under it
    fresh = tmp_path / "fresh"
    assert run_mirror(env.url, fresh, "--vkey", vkey_of(env)).returncode == 0
    swapped = run_mirror(env.url, fresh, "--vkey", other)
    assert swapped.returncode == 1 and "follows the log of" in stderr_line(swapped), swapped.stderr
    not_a_mirror = run_mirror(env.url, env.home)
    assert not_a_mirror.returncode == 1 and "not a mirror" in stderr_line(not_a_mirror)


# ---- serving ----


def test_a_serving_mirror_verifies_with_the_same_head(env: GatewayEnv, tmp_path: Path) -> None:
    home = tmp_path / "mirror"
    argv = mirror_argv(env.url, home, "--interval", "0.1", "--serve", "127.0.0.1:{port}")
    with run_server_command(argv, ready_path="/health", env=child_env()) as mirror:
        pay(env, 3)
        note, checkpoint = published(env)
        ledger = mirror.url + "/ledger"

        def caught_up() -> bool:
            return requests.get(ledger + "/checkpoint", timeout=5).content == note

        env.wait_for(caught_up, timeout=30, what="the mirror to serve the gateway's checkpoint")
        verified = json.loads(env.cli("verify", "--node", mirror.url, "--json").stdout)
        assert verified["ok"] and verified["head"] == env.ledger.head().to_dict()
        status = requests.get(ledger + "/checkpoint/status", timeout=5).json()
        assert (status["vkey"], status["checkpointSize"]) == (vkey_of(env), checkpoint.size)
        tile = f"/tile/0/000.p/{checkpoint.size % 256}" if checkpoint.size % 256 else "/tile/0/000"
        assert requests.get(ledger + tile, timeout=5).content == requests.get(env.ledger_url + tile, timeout=5).content
        tx_id = env.history(env.alice)[0].tx_id
        proof = parse_tlog_proof(requests.get(ledger + f"/transactions/{tx_id}/tlog-proof", timeout=5).content)
        assert proof.extra is not None
        verify_tlog_proof(proof, proof.extra, NoteVerifier.from_vkey(vkey_of(env)), None)
        refused = requests.post(ledger + "/transfers", json={}, timeout=5)
        assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
        # Reads scale out: a mirror of the mirror, pinned to the log's key, gets the same ledger.
        second = tmp_path / "second"
        again = run_mirror(mirror.url, second, "--vkey", vkey_of(env), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["head"] == env.ledger.head().to_dict()
        assert_same_ledger(env, second)


def test_a_mirror_keeps_its_copy_in_postgresql(env: GatewayEnv, tmp_path: Path) -> None:
    if reason := postgres_unavailable():
        pytest.skip(reason)
    url = new_postgres_url()
    try:
        argv = [sys.executable, "-m", "inferpay_cli", "--database", url, *mirror_argv(env.url, tmp_path / "m")[3:]]
        result = subprocess.run([*argv, "--once"], capture_output=True, text=True, env=child_env(), cwd=ROOT)
        assert result.returncode == 0, result.stderr
        store = open_store(url)
        try:
            assert store.head().to_dict() == env.ledger.head().to_dict()
            report = audit(store, workers=1)
            assert report.ok and report.transactions == published(env)[1].size, report.problems
        finally:
            store.close()
    finally:
        drop_schema(url)


def test_mirror_once_reports_json(env: GatewayEnv, tmp_path: Path) -> None:
    result = run_mirror(env.url, tmp_path / "mirror", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["checkpointSize"] == data["replayed"] == published(env)[1].size
    assert data["units"]["replayed"] == "entries"

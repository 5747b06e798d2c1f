"""A gateway with two real witnesses: its checkpoints gather both cosignatures off the paid path,
a witness down delays only its own cosignature, and a gateway restored from an old backup and
fed new payments (a split view) is refused by the witnesses and by a client that saw more.

Real processes throughout: the gateway (2 workers), two `inferpay witness` servers, and, for
the split view, a second gateway started from a copy of the first one's home.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from gateway.client.checkpoints import CheckpointTracker
from gateway.client.ledger_api import LedgerApiClient
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER
from inferpay_cli.main import cli
from ledger.errors import InconsistentCheckpoints
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import NoteSigner, NoteVerifier, open_note, parse_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import parse_tlog_proof, verify_tlog_proof
from tests.support.gateway import _LAUNCHER as LAUNCHER
from tests.support.gateway import FLAT, PASSWORD, SCRYPT_N, GatewayEnv, start_gateway_env
from tests.support.servers import ServerHandle, run_server_command
from tests.witness.support import start_witness, witness_vkey, write_config

NAMES = ("witness.test/one", "witness.test/two")


@dataclass
class Witnessed:
    env: GatewayEnv
    witnesses: list[ServerHandle]
    configs: list[Path]
    vkeys: list[str]

    @property
    def log_vkey(self) -> str:
        return NoteSigner.from_skey((self.env.home / "checkpoint.key").read_text().strip()).vkey

    def policy(self, quorum: str = "both") -> str:
        lines = [f"log {self.log_vkey}"]
        lines += [f"witness w{i} {vkey}" for i, vkey in enumerate(self.vkeys)]
        lines += ["group both 2 w0 w1", f"quorum {quorum}"]
        return "\n".join(lines) + "\n"


def pay(env: GatewayEnv, url: str | None = None, calls: int = 1) -> None:
    for call in range(calls):
        header, _ = env.payment(env.alice)
        answer = requests.post(
            (url or env.url) + FLAT, json={"call": call}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10
        )
        assert answer.status_code == 200, answer.text


def metric(scraped: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 if it is not there)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in scraped.splitlines():
        if line.startswith(name + "{"):
            found, value = line.rsplit(" ", 1)
            have = ",".join(sorted(found[len(name) + 1 : -1].split(",")))
            if have == wanted:
                return float(value)
    return 0.0


def cosigned_by(note: bytes, log_name: str) -> set[str]:
    return {s.name for s in parse_note(note).signatures if s.name != log_name}


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    directory = Path(tmp_path_factory.mktemp("gw-witnessed"))
    handles: list[ServerHandle] = []
    configs: list[Path] = []
    vkeys: list[str] = []

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
            handles.append(handle)
            configs.append(config)
            vkeys.append(witness_vkey(config))
            extra += f'\n[[checkpoints.witnesses]]\nurl = "{handle.url}"\nvkey = "{vkeys[-1]}"\n'
        return extra

    try:
        with start_gateway_env(directory, configure=configure) as env:
            yield Witnessed(env, handles, configs, vkeys)
    finally:
        for handle in handles:
            handle.__exit__(None, None, None)


def _checkpoint(env: GatewayEnv) -> bytes:
    return requests.get(env.ledger_url + "/checkpoint", timeout=5).content


def _wait_cosigned(w: Witnessed, names: set[str], size: int | None = None) -> bytes:
    target = size if size is not None else w.env.ledger.head().header.tree_size
    found: list[bytes] = []

    def ready() -> bool:
        note = _checkpoint(w.env)
        found[:] = [note]
        body = parse_checkpoint(parse_note(note).text)
        return body.size == target and names <= cosigned_by(note, body.origin)

    w.env.wait_for(ready, timeout=20, what=f"a checkpoint of {target} entries cosigned by {sorted(names)}")
    return found[0]


def test_both_witnesses_cosign_and_a_receipt_meets_a_two_of_two_quorum(witnessed: Witnessed, tmp_path: Path) -> None:
    env = witnessed.env
    pay(env, calls=3)
    env.wait_quiet()
    note = _wait_cosigned(witnessed, set(NAMES))
    policy = parse_policy(witnessed.policy())
    checkpoint = parse_checkpoint(open_note(note, [NoteVerifier.from_vkey(witnessed.log_vkey)]).text)
    policy.check(note, checkpoint)  # both cosignatures verify under the witnesses' own keys

    tx_id = env.history(env.alice)[0].tx_id
    receipt = requests.get(env.ledger_url + f"/transactions/{tx_id}/tlog-proof", timeout=5).content
    proof = parse_tlog_proof(receipt)
    assert proof.extra is not None
    verify_tlog_proof(proof, proof.extra, NoteVerifier.from_vkey(witnessed.log_vkey), policy)
    (tmp_path / "receipt").write_bytes(receipt)
    (tmp_path / "policy").write_text(witnessed.policy())
    out = env.cli("receipt", "verify", str(tmp_path / "receipt"), "--policy", str(tmp_path / "policy"))
    assert "w0, w1" in out.stdout and "quorum 'both' met" in out.stdout

    # `inferpay info` names each witness and its last answer, as the sealer wrote them (just
    # after each push returns, so a moment after the cosignature itself may be served).
    def shown_cosigned() -> bool:
        shown = {w["name"]: w for w in json.loads(env.cli("info", "--json").stdout)["witnesses"]}
        return all(
            n in shown
            and shown[n]["lastOutcome"] == "cosigned"
            and shown[n]["size"] >= checkpoint.size
            and shown[n]["refusals"] == 0
            for n in NAMES
        )

    env.wait_for(shown_cosigned, timeout=10, what="inferpay info showing both witnesses' cosignatures")

    status = requests.get(env.ledger_url + "/checkpoint/status", timeout=5).json()
    assert status["cosignedBy"] == sorted(NAMES) and status["checkpointSize"] == status["headSize"]
    info = env.cli("info").stdout
    assert "cosigned by " + ", ".join(sorted(NAMES)) in info


def test_a_witness_down_delays_only_its_own_cosignature(witnessed: Witnessed) -> None:
    env = witnessed.env
    down = witnessed.witnesses[1]
    os.killpg(down.process.pid, signal.SIGKILL)  # master and workers
    down.process.wait(10)
    pay(env, calls=3)  # every paid call still succeeds
    env.wait_quiet()
    note = _wait_cosigned(witnessed, {NAMES[0]})
    assert NAMES[1] not in cosigned_by(note, parse_checkpoint(parse_note(note).text).origin)
    status = requests.get(env.ledger_url + "/checkpoint/status", timeout=5).json()
    assert status["cosignedBy"] == [NAMES[0]]
    scraped = requests.get(env.url + "/metrics", timeout=5).text
    assert f'inferpay_checkpoint_cosigned{{witness="{NAMES[0]}"}} 1.0' in scraped
    assert f'inferpay_checkpoint_cosigned{{witness="{NAMES[1]}"}} 0.0' in scraped
    assert metric(scraped, "inferpay_witness_pushes_total", witness=NAMES[1], outcome="unreachable") >= 1
    # Back where it was (same key, same state file): it catches up from the size it holds,
    # with a consistency proof from there, on the publisher's next ticks.
    witnessed.witnesses[1] = start_witness(witnessed.configs[1], port=down.port).__enter__()
    _wait_cosigned(witnessed, set(NAMES))


def test_a_gateway_restored_from_an_old_backup_is_refused_by_witnesses_and_clients(
    witnessed: Witnessed, tmp_path: Path
) -> None:
    env = witnessed.env
    env.wait_quiet()
    # The backup: the whole home as it is now (keys and wallets copied, the ledger through
    # SQLite's backup API so it is a consistent snapshot).
    backup = tmp_path / "backup-home"
    shutil.copytree(env.home, backup, ignore=shutil.ignore_patterns("ledger.db*", "*.lock"))
    source = sqlite3.connect(env.home / "ledger.db")
    target = sqlite3.connect(backup / "ledger.db")
    source.backup(target)
    source.close()
    target.close()
    old_size = env.ledger.head().header.tree_size

    # The live gateway moves on; the witnesses and a client see it.
    pay(env, calls=2)
    env.wait_quiet()
    seen = _wait_cosigned(witnessed, {NAMES[0]})
    live_size = parse_checkpoint(parse_note(seen).text).size
    assert live_size > old_size
    tracker = CheckpointTracker(NoteVerifier.from_vkey(witnessed.log_vkey), directory=tmp_path / "client")
    tracker.observe(seen, LedgerApiClient(env.ledger_url).checkpoint_consistency)

    # The restored gateway is fed other payments: a second history under the same key.
    restored_config = tmp_path / "restored.toml"
    argv = [
        sys.executable,
        "-c",
        LAUNCHER,
        str(env.directory / "gateway.toml.in"),  # the live gateway's config, port left open
        str(restored_config),
        "{port}",
        "--home",
        str(backup),
        "gateway",
        "--config",
        str(restored_config),
    ]
    runner_env = {"INFERPAY_HOME": str(backup), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    with run_server_command(argv, ready_path="/health", env=runner_env) as restored:
        pay(env, url=restored.url, calls=4)

        def forked_checkpoint() -> bool:
            note = requests.get(restored.url + "/ledger/checkpoint", timeout=5).content
            return parse_checkpoint(parse_note(note).text).size > live_size

        env.wait_for(forked_checkpoint, timeout=20, what="the restored gateway's checkpoint")

        def refused() -> bool:
            return "REFUSED" in restored.log_text() or "refused" in restored.log_text().lower()

        env.wait_for(refused, timeout=20, what="a witness refusal in the restored gateway's log")
        scraped = requests.get(restored.url + "/metrics", timeout=5).text
        assert metric(scraped, "inferpay_witness_pushes_total", witness=NAMES[0], outcome="refused") >= 1

        # ... and loudly in `inferpay info` on the restored gateway's home.
        def shown_refused() -> bool:
            info = CliRunner().invoke(cli, ["info", "--json"], env=runner_env, catch_exceptions=False)
            shown = {w["name"]: w for w in json.loads(info.stdout)["witnesses"]}
            return (
                NAMES[0] in shown and shown[NAMES[0]]["lastOutcome"] == "refused" and shown[NAMES[0]]["refusals"] >= 1
            )

        env.wait_for(shown_refused, timeout=10, what="inferpay info showing the refusal")
        text = CliRunner().invoke(cli, ["info"], env=runner_env, catch_exceptions=False).stdout
        assert f"witness:       {NAMES[0]}" in text and "REFUSED" in text
        forked = requests.get(restored.url + "/ledger/checkpoint", timeout=5).content
        origin = parse_checkpoint(parse_note(forked).text).origin
        assert NAMES[0] not in cosigned_by(forked, origin)  # the live witness never cosigned the fork
        with pytest.raises(InconsistentCheckpoints):
            tracker.observe(forked, LedgerApiClient(restored.url + "/ledger").checkpoint_consistency)
        evidence = list((tmp_path / "client").glob("evidence-*.txt"))
        assert len(evidence) == 1 and forked in evidence[0].read_bytes()

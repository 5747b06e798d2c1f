"""A mirror that witnesses the log it copies (``inferpay mirror --serve --witness NAME``).

Real processes: a gateway configured with the mirror as one of its witnesses, and the mirror
(``python -m inferpay_cli mirror``). The gateway's checkpoints gather the mirror's cosignature;
and where a plain witness would cosign any tree that extends what it holds, the mirror also
refuses a checkpoint whose root is not the root of the entries it verified itself: a log that
signs another history for the entries a mirror already holds is caught by that mirror, with
evidence, even when the mirror had witnessed nothing before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ledger import merkle
from ledger.errors import InconsistentCheckpoints
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.cosignature import CosignatureSigner, CosignatureVerifier
from ledger.tlog.note import NoteSigner, parse_note, sign_note
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.mirror import child_env, mirror_argv, pay, published
from tests.support.servers import ServerHandle, free_port, run_server_command
from witness.client import add_checkpoint
from witness.keys import load_or_create_key
from witness.store import WitnessStore

NAME = "mirror.test/witness"


@dataclass
class MirrorWitness:
    env: GatewayEnv
    mirror: ServerHandle
    home: Path
    vkey: str

    @property
    def log_signer(self) -> NoteSigner:
        return NoteSigner.from_skey((self.env.home / "checkpoint.key").read_text().strip())


@pytest.fixture(scope="module")
def witnessing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorWitness]:
    directory = Path(tmp_path_factory.mktemp("gw-mirror-witness"))
    home = directory / "mirror"
    # The operator's order: the mirror's key first (its vkey goes into the gateway's config),
    # then the gateway, then the mirror, which finds its key in its home.
    key, _ = load_or_create_key(home / "witness.key", NAME)
    port = free_port()
    witness_table = f'\n[[checkpoints.witnesses]]\nurl = "http://127.0.0.1:{port}"\nvkey = "{key.vkey}"\n'
    with start_gateway_env(directory, configure=lambda _home: witness_table) as env:
        pay(env, 4)
        argv = mirror_argv(env.url, home, "--interval", "0.1", "--serve", "127.0.0.1:{port}", "--witness", NAME)
        with run_server_command(argv, ready_path="/health", env=child_env(), port=port) as mirror:
            yield MirrorWitness(env, mirror, home, key.vkey)


def test_the_gateways_checkpoint_carries_the_mirrors_cosignature(witnessing: MirrorWitness) -> None:
    env = witnessing.env
    pay(env, 3)
    _, checkpoint = published(env)
    verifier = CosignatureVerifier.from_vkey(witnessing.vkey)

    def cosigned() -> bool:
        note = requests.get(env.ledger_url + "/checkpoint", timeout=5).content
        parsed = parse_note(note)
        body = parse_checkpoint(parsed.text)
        return body.size >= checkpoint.size and any(s.name == NAME for s in parsed.signatures)

    env.wait_for(cosigned, timeout=30, what="a checkpoint cosigned by the mirror")
    note = requests.get(env.ledger_url + "/checkpoint", timeout=5).content
    line = next(s for s in parse_note(note).signatures if s.name == NAME)
    assert verifier.verify(parse_note(note).text, line) is not None


def test_a_root_the_mirror_did_not_compute_is_refused_with_evidence(witnessing: MirrorWitness, tmp_path: Path) -> None:
    """A second witnessing mirror that no gateway pushes to: it holds nothing as a witness
    (size 0), so the protocol alone would cosign any tree; its copy makes it refuse a forged one."""
    env = witnessing.env
    _, real = published(env)
    home = tmp_path / "second"
    argv = mirror_argv(env.url, home, "--interval", "0.1", "--serve", "127.0.0.1:{port}", "--witness", NAME)
    with run_server_command(argv, ready_path="/health", env=child_env()) as mirror:

        def caught_up() -> bool:
            status = requests.get(mirror.url + "/ledger/checkpoint/status", timeout=5).json()
            return int(status["checkpointSize"]) >= real.size

        env.wait_for(caught_up, timeout=30, what="the second mirror to hold the gateway's log")
        true_leaves = [merkle.leaf_hash(e) for e in _entries(env, real.size)]
        forged_leaves = true_leaves[:-1] + [merkle.leaf_hash(b"a rewritten last entry")]
        forged = sign_note(
            Checkpoint(real.origin, real.size, merkle.merkle_root(forged_leaves)).body(), witnessing.log_signer
        )
        with pytest.raises(InconsistentCheckpoints, match="verified copy"):
            add_checkpoint(mirror.url, 0, [], forged, timeout_s=10)
        store = WitnessStore(home / "witness.db")
        try:
            assert [new for _, new in store.evidence(real.origin)] == [forged]
            held = store.held(real.origin)
            assert held is not None and held.size == 0  # nothing advanced, nothing cosigned
        finally:
            store.close()
        # The true checkpoint of the same size is cosigned, by the mirror's key.
        honest = sign_note(real.body(), witnessing.log_signer)
        own_key = CosignatureSigner.from_skey((home / "witness.key").read_text().strip())
        lines = add_checkpoint(
            mirror.url, 0, [], honest, timeout_s=10, verifier=CosignatureVerifier.from_vkey(own_key.vkey)
        )
        assert [line.name for line in lines] == [NAME]


def test_the_mirrors_read_api_stays_read_only_beside_the_witness(witnessing: MirrorWitness) -> None:
    refused = requests.post(witnessing.mirror.url + "/ledger/transfers", json={}, timeout=5)
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
    unknown = requests.post(witnessing.mirror.url + "/add-checkpoint", data=b"not a request", timeout=5)
    assert unknown.status_code == 400 and unknown.text.rstrip().endswith("[malformed_witness_request]")


def _entries(env: GatewayEnv, size: int) -> list[bytes]:
    from ledger.storage.sqlite import SQLiteStore
    from ledger.transparency import TransparencyLog

    store = SQLiteStore(env.home / "ledger.db")
    try:
        return TransparencyLog(store).entries(0, size)
    finally:
        store.close()

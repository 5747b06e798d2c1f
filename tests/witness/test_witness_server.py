"""The witness as a real process (``inferpay witness --config``, gunicorn on 127.0.0.1): a chain
of checkpoints cosigned, every refusal status of c2sp.org/tlog-witness, its key file and CLI."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from inferpay_cli.main import cli
from ledger import merkle
from ledger.errors import (
    InconsistentCheckpoints,
    InvalidProof,
    MalformedWitnessRequest,
    OldSizeMismatch,
    UnknownLog,
    UnverifiedNote,
    WitnessConfigError,
    WitnessUnavailable,
)
from ledger.tlog.cosignature import CosignatureVerifier
from ledger.tlog.note import NoteSigner, NoteVerifier, open_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import verify_tlog_proof
from ledger.tlog.witness_protocol import format_add_checkpoint
from tests.ledger.tlog_support import MemoryLog, seeded
from tests.support.servers import ServerHandle
from tests.witness.support import WITNESS_NAME, start_witness, write_config
from witness.client import add_checkpoint
from witness.config import load_witness_config

pytestmark = pytest.mark.timeout(240)


def grown(log: MemoryLog, count: int, label: bytes = b"e") -> MemoryLog:
    log.append(*(label + b" %d" % i for i in range(len(log.entries), len(log.entries) + count)))
    return log


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, MemoryLog, Path]]:
    log = grown(MemoryLog(), 64)
    config = write_config(tmp_path_factory.mktemp("witness"), [log.signer])
    with start_witness(config) as server:
        yield server, log, config


def vkey_of(server: ServerHandle) -> str:
    vkey: str = requests.get(server.url + "/health", timeout=10).json()["vkey"]
    return vkey


def post(server: ServerHandle, body: bytes) -> requests.Response:
    return requests.post(server.url + "/add-checkpoint", data=body, timeout=30)


def test_a_chain_of_checkpoints_is_cosigned_and_the_cosignatures_make_proofs(
    served: tuple[ServerHandle, MemoryLog, Path],
) -> None:
    server, log, config = served
    verifier = CosignatureVerifier.from_vkey(vkey_of(server))
    assert verifier.name == WITNESS_NAME
    held = 0
    for size in (1, 3, 3, 10, 33, 64):
        signed = log.signed(size)
        proof = merkle.consistency_proof(log.leaves[:size], held) if held else []
        sigs = add_checkpoint(server.url, held, proof, signed, 10, verifier=verifier)
        assert len(sigs) == 1 and verifier.verify(log.checkpoint(size).body(), sigs[0]) is not None
        held = size
    # The last cosignature turns an inclusion proof into one a policy accepts.
    policy = parse_policy(f"log {log.signer.vkey}\nwitness w {verifier.vkey}\nquorum w\n")
    proof = log.proof(40)
    cosigned = proof.checkpoint + sigs[0].line().encode() + b"\n"
    checked = verify_tlog_proof(
        type(proof)(proof.index, proof.inclusion, cosigned),
        log.entries[40],
        NoteVerifier.from_vkey(log.signer.vkey),
        policy,
    )
    assert checked.size == 64
    assert open_note(cosigned, [verifier]).signatures[0].name == WITNESS_NAME
    # The CLI prints the same key the server cosigns with; the key file is the owner's alone.
    out = CliRunner().invoke(cli, ["witness", "vkey", "--config", str(config), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["vkey"] == verifier.vkey
    key_file = load_witness_config(config).key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_every_refusal_has_the_specs_status(served: tuple[ServerHandle, MemoryLog, Path]) -> None:
    server, log, _ = served
    held = int(post(server, format_add_checkpoint(0, [], log.signed(64))).text)  # 409 tells the size
    assert held == 64
    signed = log.signed(64)
    # 400: not a request at all; an old size above the checkpoint's.
    assert post(server, b"hello").status_code == 400
    assert post(server, format_add_checkpoint(65, [], signed)).status_code == 400
    # 404: a log this witness does not follow.
    stranger = MemoryLog(origin="stranger.test/log", signer=NoteSigner("stranger.test/log", seeded("s")))
    grown(stranger, 3)
    assert post(server, format_add_checkpoint(0, [], stranger.signed())).status_code == 404
    # 403: the right origin, someone else's key.
    forger = MemoryLog(entries=log.entries, signer=NoteSigner(log.origin, seeded("forger")))
    assert post(server, format_add_checkpoint(64, [], forger.signed())).status_code == 403
    # 409 with text/x.tlog.size: the old size is not the one held.
    wrong = post(server, format_add_checkpoint(10, [], signed))
    assert wrong.status_code == 409 and wrong.headers["Content-Type"] == "text/x.tlog.size" and wrong.text == "64\n"
    # 409: the same size with another root (a fork), kept as evidence.
    forked = MemoryLog(entries=[b"forged", *log.entries[1:]], signer=log.signer)
    conflict = post(server, format_add_checkpoint(64, [], forked.signed(64)))
    assert conflict.status_code == 409 and conflict.headers["Content-Type"].startswith("text/plain")
    assert "inconsistent_checkpoints" in conflict.text
    # 422: a consistency proof that does not verify (a forked history, or a flipped hash).
    grown(log, 16)
    good_proof = merkle.consistency_proof(log.leaves[:80], 64)
    bad_proof = [good_proof[0][:-1] + bytes([good_proof[0][-1] ^ 1]), *good_proof[1:]]
    assert post(server, format_add_checkpoint(64, bad_proof, log.signed(80))).status_code == 422
    fork_proof = merkle.consistency_proof(grown(forked, 16).leaves[:80], 64)
    assert post(server, format_add_checkpoint(64, fork_proof, forked.signed(80))).status_code == 422
    assert post(server, format_add_checkpoint(64, [], log.signed(80))).status_code == 422
    # Other methods and oversize bodies are refused by the HTTP layer.
    assert requests.get(server.url + "/add-checkpoint", timeout=10).status_code == 405
    assert post(server, b"old 0\n" + b"A" * (2 << 20)).status_code == 413
    # ...and after all that, the witness still holds 64 and moves on from it.
    assert add_checkpoint(server.url, 64, good_proof, log.signed(80), 10)


def test_the_client_maps_each_answer_to_the_witness_error(served: tuple[ServerHandle, MemoryLog, Path]) -> None:
    server, log, _ = served
    held = int(post(server, format_add_checkpoint(0, [], log.signed(len(log.entries)))).text)
    with pytest.raises(OldSizeMismatch) as caught:
        add_checkpoint(server.url, 0, [], log.signed(held), 10)
    assert caught.value.details["size"] == held
    forked = MemoryLog(entries=[b"forged", *log.entries[1:]], signer=log.signer)
    with pytest.raises(InconsistentCheckpoints):
        add_checkpoint(server.url, held, [], forked.signed(held), 10)
    with pytest.raises(InvalidProof):
        add_checkpoint(server.url, held, [b"\x00" * 32], log.signed(held), 10)
    forger = MemoryLog(entries=log.entries, signer=NoteSigner(log.origin, seeded("forger")))
    with pytest.raises(UnverifiedNote):
        add_checkpoint(server.url, held, [], forger.signed(held), 10)
    stranger = MemoryLog(origin="stranger.test/log", signer=NoteSigner("stranger.test/log", seeded("s")))
    with pytest.raises(UnknownLog):
        add_checkpoint(server.url, 0, [], grown(stranger, 1).signed(), 10)
    with pytest.raises(MalformedWitnessRequest):
        add_checkpoint(server.url, held + 5, [], log.signed(held), 10)
    other_witness = CosignatureVerifier.from_vkey(
        CosignatureVerifier(WITNESS_NAME, NoteSigner("x", seeded("x")).public_key).vkey
    )
    with pytest.raises(UnverifiedNote):
        add_checkpoint(server.url, held, [], log.signed(held), 10, verifier=other_witness)
    with pytest.raises(WitnessUnavailable):
        add_checkpoint("http://127.0.0.1:9", 0, [], log.signed(held), 2)


def test_key_is_made_on_first_start_kept_after_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    log = grown(MemoryLog(), 2)
    config = write_config(tmp_path, [log.signer])
    runner = CliRunner()
    first = runner.invoke(cli, ["witness", "init", "--config", str(config), "--json"])
    assert first.exit_code == 0, first.output
    made = json.loads(first.output)
    assert made["created"] is True and made["vkey"].startswith(WITNESS_NAME + "+")
    again = runner.invoke(cli, ["witness", "init", "--config", str(config)])
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1] == made["vkey"]
    key_file = load_witness_config(config).key_file
    os.chmod(key_file, 0o644)
    refused = runner.invoke(cli, ["witness", "vkey", "--config", str(config)])
    assert refused.exit_code == 1 and "readable by others" in refused.output
    assert refused.output.strip().endswith(f"[{WitnessConfigError.code}]")
    os.chmod(key_file, 0o600)
    assert runner.invoke(cli, ["witness", "vkey", "--config", str(config)]).output.strip() == made["vkey"]
    assert runner.invoke(cli, ["witness"]).exit_code == 2  # no --config, no subcommand: usage error


def test_bad_configs_stop_the_witness_naming_the_key(tmp_path: Path) -> None:
    log = grown(MemoryLog(), 1)
    good = write_config(tmp_path, [log.signer]).read_text()
    other = NoteSigner("other.test/log", seeded("o"))
    for bad, words in [
        (good.replace('name = "witness.test/w1"', 'name = "has space"'), "name"),
        (good + "colour = 1\n", "unknown"),
        (good.replace('listen = "127.0.0.1:0"', 'listen = "nowhere"'), "listen"),
        (good.replace(log.signer.vkey, other.vkey), "origin"),
        (good.replace(log.signer.vkey, log.signer.vkey[:-2]), "vkey"),
        (good.replace("workers = 1", "workers = 0"), "workers"),
        ("[witness]\n", "name"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(bad)
        result = CliRunner().invoke(cli, ["witness", "vkey", "--config", str(path)])
        assert result.exit_code == 1 and words in result.output and "[witness_config_error]" in result.output, bad

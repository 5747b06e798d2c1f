"""A running gateway as a C2SP transparency log: its checkpoint, tiles and offline receipts
check out with nothing but the published key, and a client keeps it honest.

One real gateway process (2 workers) with a real SQLite ledger; payments through the paid
route; everything read back over HTTP as an outside verifier would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.client.checkpoints import CheckpointTracker
from gateway.client.ledger_api import LedgerApiClient
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, decode_header
from ledger import merkle
from ledger.encoding import LEAF_PREFIX, transaction_id
from ledger.errors import InconsistentCheckpoints, InvalidProof, QuorumNotMet, UnverifiedNote
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import Note, NoteSigner, NoteVerifier, format_note, open_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from ledger.tlog.tiles import checkpoint_tiles, decode_entry_bundle
from ledger.types import Transaction
from tests.ledger.test_tlog_go_interop import run as go_run
from tests.support.gateway import FLAT, GatewayEnv, start_gateway_env

CALLS = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-checkpoints"))) as started:
        for call in range(CALLS):
            header, _ = started.payment(started.alice)
            answer = requests.post(
                started.route_url(FLAT), json={"call": call}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10
            )
            assert answer.status_code == 200, answer.text
        started.wait_quiet()
        yield started


def _vkey(env: GatewayEnv) -> str:
    info = json.loads(env.cli("info", "--json").stdout)
    vkey: str = info["checkpointKey"]
    return vkey


def _published(env: GatewayEnv) -> tuple[bytes, Checkpoint]:
    """The checkpoint once it covers the whole sealed log."""
    size = env.ledger.head().header.tree_size
    found: list[bytes] = []

    def caught_up() -> bool:
        note = requests.get(env.ledger_url + "/checkpoint", timeout=5).content
        found[:] = [note]
        return parse_checkpoint(open_note(note, [NoteVerifier.from_vkey(_vkey(env))]).text).size == size

    env.wait_for(caught_up, what="a checkpoint of the whole log")
    return found[0], parse_checkpoint(open_note(found[0], [NoteVerifier.from_vkey(_vkey(env))]).text)


def test_the_checkpoint_restates_the_sealed_head_under_the_published_key(env: GatewayEnv) -> None:
    note, checkpoint = _published(env)
    head = env.ledger.head().header
    assert checkpoint.size == head.tree_size > CALLS
    assert "0x" + checkpoint.root_hash.hex() == head.tree_root
    assert checkpoint.origin.startswith(f"inferpay.local/ledger/{env.chain.chain_id}/")
    answer = requests.get(env.ledger_url + "/checkpoint", timeout=5)
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["Cache-Control"] == "no-cache"
    with pytest.raises(UnverifiedNote):  # another key: nothing verifies
        open_note(note, [NoteVerifier.from_vkey(NoteSigner.generate(checkpoint.origin).vkey)])


def test_the_home_keys_are_owner_only(env: GatewayEnv) -> None:
    for key in ("sealer.key", "checkpoint.key"):
        assert (env.home / key).stat().st_mode & 0o777 == 0o600, key
    assert env.home.stat().st_mode & 0o077 == 0  # the home directory itself: owner only


def test_tiles_rebuild_the_tree_the_checkpoint_signs(env: GatewayEnv) -> None:
    _, checkpoint = _published(env)
    size = checkpoint.size
    assert size < 256  # one partial tile of each kind
    hashes = requests.get(env.ledger_url + f"/tile/0/000.p/{size}", timeout=5)
    assert hashes.status_code == 200 and hashes.headers["Cache-Control"] == "public, max-age=2"
    leaves = [hashes.content[i : i + 32] for i in range(0, len(hashes.content), 32)]
    assert merkle.merkle_root(leaves) == checkpoint.root_hash
    bundle = requests.get(env.ledger_url + f"/tile/entries/000.p/{size}", timeout=5).content
    assert [merkle.leaf_hash(e) for e in decode_entry_bundle(bundle)] == leaves
    for bad in ("0/000", "0/000.p/0", "0/000.p/256", "0/1", "9/000", "entries/x000", "0/000.p/" + str(size + 1)):
        answer = requests.get(env.ledger_url + "/tile/" + bad, timeout=5)
        assert answer.status_code in (400, 404), (bad, answer.status_code)
        assert answer.json()["error"]["code"] in ("invalid_input", "malformed_tile_path", "not_found"), bad


def test_an_offline_receipt_verifies_with_the_policy_alone(env: GatewayEnv, tmp_path: Path) -> None:
    _published(env)
    tx_id = env.history(env.alice)[0].tx_id
    served = requests.get(env.ledger_url + f"/transactions/{tx_id}/tlog-proof", timeout=5)
    assert served.status_code == 200
    from_cli = env.cli("tx", tx_id, "--proof").stdout.encode()
    assert from_cli == served.content
    proof = parse_tlog_proof(served.content)
    assert proof.extra is not None
    verifier = NoteVerifier.from_vkey(_vkey(env))
    checkpoint = verify_tlog_proof(proof, proof.extra, verifier, None)
    assert checkpoint.size == env.ledger.head().header.tree_size

    receipt, policy = tmp_path / "receipt.tlog-proof", tmp_path / "policy.txt"
    receipt.write_bytes(served.content)
    policy.write_text(f"log {_vkey(env)}\nquorum none\n")
    answer = json.loads(env.cli("receipt", "verify", str(receipt), "--policy", str(policy), "--json").stdout)
    assert answer["verified"] and answer["index"] == proof.index and answer["transaction"]["kind"]

    # A policy asking for a witness that never cosigned: refused, naming it.
    witness = "witness.example/one"
    from ledger.tlog.cosignature import CosignatureSigner

    policy.write_text(f"log {_vkey(env)}\nwitness w1 {CosignatureSigner.generate(witness).vkey}\nquorum w1\n")
    refused = env.cli("receipt", "verify", str(receipt), "--policy", str(policy), ok=False)
    assert refused.exit_code == 1 and "[quorum_not_met]" in refused.stderr and "w1" in refused.stderr
    with pytest.raises(QuorumNotMet):
        verify_tlog_proof(proof, proof.extra, verifier, parse_policy(policy.read_text()))

    # An edited entry does not verify.
    edited = TlogProof(proof.index, proof.inclusion, proof.checkpoint, proof.extra.replace(b'"kind"', b'"kinD"'))
    receipt.write_bytes(format_tlog_proof(edited))
    policy.write_text(f"log {_vkey(env)}\nquorum none\n")
    refused = env.cli("receipt", "verify", str(receipt), "--policy", str(policy), ok=False)
    assert refused.exit_code == 1 and "[invalid_proof]" in refused.stderr
    with pytest.raises(InvalidProof):
        verify_tlog_proof(edited, edited.extra or b"", verifier, None)


def test_a_client_tracks_the_log_and_keeps_evidence_of_a_second_history(env: GatewayEnv, tmp_path: Path) -> None:
    note, checkpoint = _published(env)
    verifier = NoteVerifier.from_vkey(_vkey(env))
    api = LedgerApiClient(env.ledger_url)
    tracker = CheckpointTracker(verifier, directory=tmp_path / "seen")
    assert tracker.observe(note, api.checkpoint_consistency) == checkpoint

    # The same log grows: consistent, remembered, and remembered across a restart.
    header, _ = env.payment(env.alice)
    assert requests.post(env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10).ok
    env.wait_quiet()
    newer, grown = _published(env)
    assert grown.size > checkpoint.size
    tracker.observe(newer, api.checkpoint_consistency)
    assert CheckpointTracker(verifier, directory=tmp_path / "seen").latest == grown

    # A second history under the same key (what a log restored from a backup would sign):
    # a checkpoint of the same size with another root is refused and kept as evidence.
    signer = NoteSigner.from_skey((env.home / "checkpoint.key").read_text().strip())
    forked = Checkpoint(grown.origin, grown.size, bytes(32))
    forged = format_note(Note(forked.body(), (signer.sign(forked.body()),)))
    with pytest.raises(InconsistentCheckpoints):
        tracker.observe(forged, api.checkpoint_consistency)
    evidence = list((tmp_path / "seen").glob("evidence-*.txt"))
    assert len(evidence) == 1 and newer in evidence[0].read_bytes() and forged in evidence[0].read_bytes()
    # ... and so is an older size that the newer tree does not extend.
    shorter = Checkpoint(grown.origin, checkpoint.size, bytes(32))
    with pytest.raises(InconsistentCheckpoints):
        tracker.observe(format_note(Note(shorter.body(), (signer.sign(shorter.body()),))), api.checkpoint_consistency)
    assert tracker.latest == grown


def test_go_verifies_the_running_gateways_checkpoint_proofs_and_tiles(
    env: GatewayEnv, go_tlog: Path, tmp_path: Path
) -> None:
    """Go's golang.org/x/mod/sumdb/note and sumdb/tlog, not our code, check what the gateway serves."""
    note, checkpoint = _published(env)
    vkey = _vkey(env)
    saved = tmp_path / "checkpoint"
    saved.write_bytes(note)
    assert go_run(go_tlog, "checkpoint", "-note", saved, "-vkey", vkey)["size"] == checkpoint.size
    tx_id = env.history(env.alice)[0].tx_id
    proof_bytes = requests.get(env.ledger_url + f"/transactions/{tx_id}/tlog-proof", timeout=5).content
    proof = parse_tlog_proof(proof_bytes)
    assert proof.extra is not None
    (tmp_path / "proof").write_bytes(proof_bytes)
    (tmp_path / "entry").write_bytes(proof.extra)
    go_run(go_tlog, "inclusion", "-proof", tmp_path / "proof", "-entry", tmp_path / "entry", "-vkey", vkey)
    tiles = tmp_path / "tiles"
    for where in checkpoint_tiles(checkpoint.size):
        target = tiles / where.path()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(requests.get(env.ledger_url + "/" + where.path(), timeout=5).content)
    root = base64.b64encode(checkpoint.root_hash).decode()
    out = go_run(
        go_tlog, "tiles", "-dir", tiles, "-size", str(checkpoint.size), "-root", root, "-index", str(proof.index)
    )
    assert out["root"] == root


def test_a_paid_calls_answer_leads_to_its_offline_receipt_under_the_offered_key(env: GatewayEnv) -> None:
    offer = decode_header(requests.post(env.route_url(FLAT), json={}, timeout=10).headers["PAYMENT-REQUIRED"])
    vkey = offer["extensions"]["inferpay"]["checkpointKey"]
    assert vkey == _vkey(env)
    header, _ = env.payment(env.alice)
    paid = requests.post(env.route_url(FLAT), json={}, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=10)
    answer = decode_header(paid.headers["PAYMENT-RESPONSE"])
    env.wait_quiet()
    proof = parse_tlog_proof(requests.get(answer["tlogProof"], timeout=5).content)
    assert proof.extra is not None and proof.extra.startswith(LEAF_PREFIX)
    entry = Transaction.from_dict(json.loads(proof.extra[len(LEAF_PREFIX) :]))
    assert transaction_id(entry) == answer["transaction"]  # the proven entry is this call's settle
    verify_tlog_proof(proof, proof.extra, NoteVerifier.from_vkey(vkey), None)


def test_the_explorer_head_shows_the_checkpoint_and_a_transaction_links_its_receipt(env: GatewayEnv) -> None:
    _, checkpoint = _published(env)
    page = requests.get(env.url + "/explorer/", timeout=5).text
    assert 'id="checkpoint"' in page and f"{checkpoint.size} entries (the whole sealed log)" in page
    assert _vkey(env) in page and checkpoint.origin in page
    tx_id = env.history(env.alice)[0].tx_id
    page = requests.get(env.url + f"/explorer/tx/{tx_id}", timeout=5)
    assert page.status_code == 200, page.status_code
    assert f"/ledger/transactions/{tx_id}/tlog-proof" in page.text

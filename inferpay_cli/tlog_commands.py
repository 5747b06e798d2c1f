"""Transparency-log commands: checkpoint-key, checkpoint, receipt verify.

``checkpoint-key`` gives a ledger made before checkpoints its Ed25519 checkpoint key (one
time; ``init`` makes it for new ledgers). ``checkpoint`` prints the log's latest signed
checkpoint. ``receipt verify`` checks a c2sp.org/tlog-proof file offline: the entry, the
inclusion proof, the log's signature and the witness quorum a tlog-policy file asks for.
``receipt verify`` never touches the network or a ledger.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from inferpay_cli.home import Home
from inferpay_cli.options import json_option, node_option, pass_home
from inferpay_cli.output import emit_json
from ledger.checkpoints import default_origin, latest_checkpoint
from ledger.encoding import LEAF_PREFIX
from ledger.errors import InvalidInput, MalformedRecord, UnverifiedNote
from ledger.tlog.checkpoint import parse_checkpoint
from ledger.tlog.note import parse_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import parse_tlog_proof, verify_tlog_proof
from ledger.types import Transaction

MAX_FILE_BYTES = 1 << 21


def origin_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--origin",
        default=None,
        metavar="TEXT",
        help="The log's name in its checkpoints (default: inferpay.local/ledger/<chain id>/<genesis hash prefix>).",
    )(func)


@click.command("checkpoint-key")
@origin_option
@json_option
@pass_home
def checkpoint_key(home: Home, origin: str | None, as_json: bool) -> None:
    """Create the checkpoint key of a ledger made before checkpoints (one time), and print its vkey.

    The key (Ed25519, c2sp.org/signed-note) is written to checkpoint.key in --home, mode 0600,
    next to sealer.key; every gateway process of the ledger must find the same file."""
    ledger = home.open_ledger(with_sealer=False)
    genesis = ledger.store.block(0)
    assert genesis is not None
    signer = home.create_checkpoint_key(origin or default_origin(ledger.chain.chain_id, genesis.block_hash))
    if as_json:
        emit_json({"origin": signer.name, "vkey": signer.vkey, "keyFile": str(home.checkpoint_key_path)})
        return
    click.echo(f"checkpoint key written to {home.checkpoint_key_path}")
    click.echo(f"origin: {signer.name}")
    click.echo(f"vkey:   {signer.vkey}")


@click.command("checkpoint")
@node_option
@json_option
@pass_home
def checkpoint_command(home: Home, node: str | None, as_json: bool) -> None:
    """Print the log's latest signed checkpoint (c2sp.org/tlog-checkpoint) with its cosignatures."""
    if node is not None:
        from inferpay_cli.options import node_api

        note = node_api(node).checkpoint()
    else:
        ledger = home.open_ledger(with_sealer=False)
        signer = home.checkpoint_signer()
        if signer is None:
            raise InvalidInput(f"{home.path} has no checkpoint key: run `inferpay checkpoint-key` once")
        note = latest_checkpoint(ledger.store, signer)
    if not as_json:
        click.echo(note.decode(), nl=False)
        return
    parsed = parse_note(note)
    body = parse_checkpoint(parsed.text)
    emit_json(
        {
            "origin": body.origin,
            "size": body.size,
            "rootHash": "0x" + body.root_hash.hex(),
            "signedBy": [s.name for s in parsed.signatures],
            "note": note.decode(),
        }
    )


def _read(path: Path, what: str) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path} is too large to be a {what}")
    return path.read_bytes()


def _entry_transaction(entry: bytes) -> Transaction | None:
    """The ledger transaction an entry encodes, when it is one of ours."""
    if not entry.startswith(LEAF_PREFIX):
        return None
    try:
        return Transaction.from_dict(json.loads(entry[len(LEAF_PREFIX) :]))
    except (ValueError, MalformedRecord):
        return None


@click.group("receipt")
def receipt_group() -> None:
    """Offline receipts: c2sp.org/tlog-proof files (`inferpay tx ID --proof` writes them)."""


@receipt_group.command("verify")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A c2sp.org/tlog-policy file: the log's key (`log <vkey>`), the witnesses and the quorum.",
)
@click.option(
    "--entry",
    "entry_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The entry's bytes, when the proof does not carry them as its extra data.",
)
@json_option
def receipt_verify(proof_file: Path, policy_file: Path, entry_file: Path | None, as_json: bool) -> None:
    """Check a tlog-proof PROOF_FILE offline: the entry is in the log, the log signed the
    checkpoint, and the policy's witness quorum cosigned it. Exit 1 with the reason otherwise."""
    proof = parse_tlog_proof(_read(proof_file, "tlog-proof"))
    policy = parse_policy(_read(policy_file, "policy"))
    entry = _read(entry_file, "entry") if entry_file is not None else proof.extra
    if entry is None:
        raise InvalidInput("the proof carries no entry: give it with --entry FILE")
    origin = parse_checkpoint(parse_note(proof.checkpoint).text).origin
    logs = [v for v in policy.log_verifiers if v.name == origin]
    if not logs:
        raise UnverifiedNote(f"the policy lists no log for origin {origin!r}")
    checkpoint = verify_tlog_proof(proof, entry, logs[0], policy)
    cosigned = sorted(policy.cosigners(proof.checkpoint, checkpoint))
    tx = _entry_transaction(entry)
    summary = {
        "verified": True,
        "origin": checkpoint.origin,
        "index": proof.index,
        "treeSize": checkpoint.size,
        "cosignedBy": cosigned,
        "quorum": policy.quorum,
        "transaction": tx.to_dict() if tx is not None else None,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(f"entry {proof.index} is in {checkpoint.origin} (tree of {checkpoint.size} entries)")
    click.echo("log signature: verified")
    click.echo(f"witnesses:     {', '.join(cosigned) or 'none'} (quorum {policy.quorum!r} met)")
    if tx is not None:
        click.echo(f"transaction:   {tx.kind}, signed by {tx.signer}")


COMMANDS = [checkpoint_key, checkpoint_command, receipt_group]

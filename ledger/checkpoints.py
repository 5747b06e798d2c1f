"""The ledger's C2SP checkpoints: what a sealed head says in c2sp.org/tlog-checkpoint form,
signed with the checkpoint key (Ed25519, c2sp.org/signed-note), and the witness cosignatures
gathered for it.

A checkpoint names the log (its *origin*, unique to the ledger), the tree size and the tree
root of one sealed head: exactly the ``tree_size``/``tree_root`` the head's header carries, so a
checkpoint adds no claim the sealer did not sign; it restates it in a format that standard
tools and witnesses check. Ed25519 signing is deterministic, so every process holding the key
makes byte-identical notes for the same head. This module builds and merges notes; storing
them is the store's job and pushing them to witnesses the gateway's.
"""

from __future__ import annotations

from ledger.errors import NotFound
from ledger.storage.base import LedgerStore
from ledger.tlog.checkpoint import Checkpoint, parse_checkpoint
from ledger.tlog.note import Note, NoteSignature, NoteSigner, format_note, parse_note
from ledger.tlog.proof import TlogProof
from ledger.transparency import TransparencyLog
from ledger.types import SignedBlock

ORIGIN_PREFIX = "inferpay.local/ledger"


def default_origin(chain_id: int, genesis_block_hash: str) -> str:
    """The origin line a ledger gets unless its operator names one: the chain id and the first
    8 bytes of the genesis block's hash, so two ledgers never share an origin even when they
    share a chain id (the genesis hash commits to the chain's keys and identity)."""
    return f"{ORIGIN_PREFIX}/{chain_id}/{genesis_block_hash.removeprefix('0x')[:16]}"


def checkpoint_of(head: SignedBlock, origin: str) -> Checkpoint:
    return Checkpoint(origin=origin, size=head.header.tree_size, root_hash=bytes.fromhex(head.header.tree_root[2:]))


def sign_checkpoint(head: SignedBlock, signer: NoteSigner) -> bytes:
    """The signed note of ``head``'s checkpoint; the key's name is the log's origin."""
    body = checkpoint_of(head, signer.name).body()
    return format_note(Note(body, (signer.sign(body),)))


def with_cosignatures(note_bytes: bytes, cosignatures: list[NoteSignature]) -> bytes:
    """The note with ``cosignatures`` added; a witness's earlier line (same name and key id) is
    replaced, so a note holds at most one cosignature per witness key."""
    note = parse_note(note_bytes)
    fresh = {(c.name, c.key_id) for c in cosignatures}
    kept = tuple(s for s in note.signatures if (s.name, s.key_id) not in fresh)
    return format_note(Note(note.text, kept + tuple(cosignatures)))


def current_checkpoint(store: LedgerStore, signer: NoteSigner | None) -> bytes:
    """The checkpoint of the sealed head: the stored note (with the cosignatures gathered so
    far) when it is the head's, else the head's, freshly signed and without cosignatures.
    Without the key (a mirror, which only stores the notes its source signed) there is no
    checkpoint of a head that has none stored: ``NotFound``."""
    head = store.head()
    stored = store.checkpoints.at(head.header.tree_size)
    if stored is not None:
        return stored
    if signer is None:
        raise NotFound(f"no checkpoint of the {head.header.tree_size}-entry head is stored here yet")
    return sign_checkpoint(head, signer)


def latest_checkpoint(store: LedgerStore, signer: NoteSigner | None) -> bytes:
    """The newest published checkpoint (with its cosignatures), or the head's before the first."""
    stored = store.checkpoints.latest()
    return stored[1] if stored is not None else current_checkpoint(store, signer)


def tlog_proof(log: TransparencyLog, signer: NoteSigner | None, tx_id: str) -> TlogProof:
    """A c2sp.org/tlog-proof for a sealed transaction: against the newest published checkpoint
    if it covers the entry (it carries the witnesses' cosignatures), else against the head's.
    The entry itself rides in ``extra``, so the proof is checked offline with nothing else."""
    index = log.index_of(tx_id)
    note = latest_checkpoint(log.store, signer)
    size = parse_checkpoint(parse_note(note).text).size
    if index >= size:
        note = current_checkpoint(log.store, signer)
        size = parse_checkpoint(parse_note(note).text).size
    return TlogProof(
        index=index,
        inclusion=tuple(log.inclusion_proof(index, size)),
        checkpoint=note,
        extra=log.entries(index, index + 1)[0],
    )

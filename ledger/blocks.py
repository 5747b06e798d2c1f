"""Blocks and proofs: building, signing and checking block headers, heads and Merkle proofs.

Two Merkle trees, both RFC 6962: each block's ``merkle_root`` over its own transactions (what an
inclusion proof for a receipt checks against), and one log tree over every transaction since
genesis, whose ``tree_root``/``tree_size`` every header carries, so two signed heads can be
proven consistent (the later chain extends the earlier one, nothing rewritten). The log tree is
grown incrementally from a compact frontier, so sealing costs O(block) not O(chain).
This module computes and checks; it never reads or writes storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ledger import crypto, merkle
from ledger.amounts import INT64_MAX
from ledger.encoding import block_hash, canonical_json, sha256_hex
from ledger.errors import InvalidSignature, MalformedRecord
from ledger.types import (
    Address,
    BlockHeader,
    ChainInfo,
    SignatureHex,
    SignedBlock,
    parse_bytes32,
    parse_uint,
)


class Signer(Protocol):
    address: Address

    def sign_digest(self, digest: bytes) -> SignatureHex: ...


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def chain_commitment(chain: ChainInfo) -> str:
    """The genesis block's prev_hash: binds the chain's identity and keys into every later hash."""
    return sha256_hex(b"inferpay.chain.v1\x00" + canonical_json(chain.to_dict()))


def frontier_append(frontier: list[bytes], size: int, leaf: bytes) -> None:
    """Add one leaf to the compact frontier of a log of ``size`` leaves (a binary counter)."""
    node = leaf
    while size & 1:
        node = merkle.node_hash(frontier.pop(), node)
        size >>= 1
    frontier.append(node)


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = merkle.node_hash(left, root)
    return root


def sign_header(header: BlockHeader, signer: Signer) -> SignedBlock:
    digest = block_hash(header)
    return SignedBlock(header, digest, signer.address, signer.sign_digest(_unhex(digest)))


def genesis_block(chain: ChainInfo, signer: Signer, timestamp_ms: int) -> SignedBlock:
    header = BlockHeader(
        0, chain_commitment(chain), _hex(merkle.EMPTY_ROOT), timestamp_ms, 0, 0, _hex(merkle.EMPTY_ROOT)
    )
    return sign_header(header, signer)


def next_block(
    previous: SignedBlock, leaves: list[bytes], frontier_hex: list[str], signer: Signer, timestamp_ms: int
) -> tuple[SignedBlock, list[str]]:
    frontier = [_unhex(h) for h in frontier_hex]
    size = previous.header.tree_size
    for leaf in leaves:
        frontier_append(frontier, size, leaf)
        size += 1
    header = BlockHeader(
        height=previous.header.height + 1,
        prev_hash=previous.block_hash,
        merkle_root=_hex(merkle.merkle_root(leaves)),
        timestamp_ms=max(timestamp_ms, previous.header.timestamp_ms),  # never runs backwards
        tx_count=len(leaves),
        tree_size=size,
        tree_root=_hex(frontier_root(frontier)),
    )
    return sign_header(header, signer), [_hex(h) for h in frontier]


def check_block_signature(block: SignedBlock, sealer: Address) -> None:
    """The header hashes to ``block_hash`` and the sealer signed that hash; raises otherwise."""
    if block_hash(block.header) != block.block_hash:
        raise MalformedRecord(f"block {block.header.height}: header does not hash to its recorded hash")
    if block.sealer != sealer:
        raise InvalidSignature(
            f"block {block.header.height} is sealed by {block.sealer}, not the chain's sealer {sealer}"
        )
    crypto.verify_signed_by(_unhex(block.block_hash), block.signature, sealer, f"block {block.header.height}")


def inclusion_proof_dict(
    block: SignedBlock, index: int, leaves: Sequence[bytes], tx_record: dict[str, Any]
) -> dict[str, Any]:
    return {
        "transaction": tx_record,
        "leafIndex": index,
        "leafHash": _hex(leaves[index]),
        "auditPath": [_hex(h) for h in merkle.inclusion_proof(list(leaves), index)],
        "block": block.to_dict(),
    }


def verify_inclusion(proof: dict[str, Any], chain: ChainInfo) -> SignedBlock:
    """Check a transaction's inclusion proof end to end; return the signed block it is in.

    The leaf must be the hash of the transaction record shown, the audit path must lead from it
    to the block's merkle root, and the block must be signed by the chain's sealer."""
    from ledger.encoding import leaf_hash
    from ledger.types import Transaction

    if not isinstance(proof, dict) or set(proof) != {
        "transaction",
        "leafIndex",
        "leafHash",
        "auditPath",
        "block",
    }:
        raise MalformedRecord("inclusion proof: unexpected shape")
    block = SignedBlock.from_dict(proof["block"])
    check_block_signature(block, chain.sealer)
    tx = Transaction.from_dict(proof["transaction"])
    leaf = leaf_hash(tx)
    if _hex(leaf) != parse_bytes32(proof["leafHash"], "leafHash"):
        raise InvalidSignature("inclusion proof: leaf hash does not match the transaction")
    path = proof["auditPath"]
    if not isinstance(path, list):
        raise MalformedRecord("inclusion proof: auditPath must be a list")
    index = parse_uint(proof["leafIndex"], "leafIndex", INT64_MAX)
    if not merkle.verify_inclusion(
        leaf,
        index,
        block.header.tx_count,
        [_unhex(parse_bytes32(h, "auditPath")) for h in path],
        _unhex(block.header.merkle_root),
    ):
        raise InvalidSignature("inclusion proof: audit path does not lead to the block's merkle root")
    return block


def verify_consistency(old: SignedBlock, new: SignedBlock, proof: Sequence[str], chain: ChainInfo) -> None:
    """Both heads signed by the sealer, and the newer log extends the older one unchanged."""
    check_block_signature(old, chain.sealer)
    check_block_signature(new, chain.sealer)
    ok = merkle.verify_consistency(
        old.header.tree_size,
        new.header.tree_size,
        _unhex(old.header.tree_root),
        _unhex(new.header.tree_root),
        [_unhex(parse_bytes32(h, "proof")) for h in proof],
    )
    if not ok or old.header.height > new.header.height:
        raise InvalidSignature(
            f"heads {old.header.height} and {new.header.height} are not consistent: history was rewritten"
        )

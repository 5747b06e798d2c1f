"""Blocks and proofs as an outside verifier checks them, with only ``ChainInfo`` and a proof in hand.

A ledger with several blocks of different sizes (every kind of transaction in them) is built
once for the module. Every sealed transaction's inclusion proof must verify, every pair of
heads must prove consistent, and every way of tampering with a proof (index, audit path,
record, block signature, header) or forging a head (an attacker's key; the real sealer key over
a rewritten history) must be refused with an ``InferpayError``. The log tree grown from its
compact frontier must equal the plain RFC 6962 root of the same leaves.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.blocks import (
    chain_commitment,
    check_block_signature,
    frontier_append,
    frontier_root,
    genesis_block,
    next_block,
    sign_header,
    verify_consistency,
    verify_inclusion,
)
from ledger.crypto import KeySigner, new_private_key
from ledger.encoding import block_hash, leaf_hash
from ledger.errors import InferpayError, InvalidInput, InvalidSignature, MalformedRecord, NotFound
from ledger.types import ChainInfo, SignedBlock, Transaction
from tests.support.ledger import UNIT, FakeClock, LedgerFixture, make_ledger

BLOCK_SIZES = (1, 3, 2, 5, 8, 1, 4, 7)  # powers of two, odd sizes, and single transactions
ATTACKER = KeySigner(new_private_key())

hashes = st.binary(min_size=32, max_size=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerFixture]:
    """One ledger, sealed into len(BLOCK_SIZES) blocks holding every kind of transaction."""
    lf = make_ledger(Path(tmp_path_factory.mktemp("chain")), FakeClock(1_700_000_000_000))
    alice, bob, carol = lf.party("alice"), lf.party("bob"), lf.party("carol")
    holds: list[str] = []
    step = 0

    def one_transaction() -> None:
        nonlocal step
        kind = step % 6
        step += 1
        if kind == 0:
            lf.mint(alice.address, 50 * UNIT + step)
        elif kind == 1:
            lf.transfer(alice, bob.address, UNIT + step)
        elif kind == 2:
            holds.append(lf.ledger.hold(*lf.authorization(alice, carol.address, 2 * UNIT)).tx_id)
        elif kind == 3:
            lf.ledger.settle(holds.pop(), UNIT + step)
        elif kind == 4:
            holds.append(lf.ledger.hold(*lf.authorization(bob, carol.address, step)).tx_id)
        else:
            lf.ledger.void(holds.pop())

    for size in BLOCK_SIZES:
        for _ in range(size):
            one_transaction()
        lf.clock.advance(7)
        assert lf.ledger.seal() is not None
    yield lf
    lf.close()


def all_blocks(lf: LedgerFixture) -> list[SignedBlock]:
    return lf.ledger.store.blocks(0, len(BLOCK_SIZES) + 1)


def sealed_tx_ids(lf: LedgerFixture, *, min_block_size: int = 1) -> list[str]:
    return [
        stored.tx_id
        for height in range(1, len(BLOCK_SIZES) + 1)
        if BLOCK_SIZES[height - 1] >= min_block_size
        for stored in lf.ledger.store.block_transactions(height)
    ]


# ---- block headers ----


def test_the_chain_has_the_blocks_it_was_given(built: LedgerFixture) -> None:
    blocks = all_blocks(built)
    assert [b.header.tx_count for b in blocks] == [0, *BLOCK_SIZES]
    assert built.ledger.head() == blocks[-1]
    assert built.ledger.store.unsealed() == (0, None)


def test_headers_are_chained_from_the_chain_commitment(built: LedgerFixture) -> None:
    chain, store = built.chain, built.ledger.store
    blocks = all_blocks(built)
    genesis = blocks[0].header
    assert genesis.prev_hash == chain_commitment(chain)
    assert (genesis.height, genesis.tx_count, genesis.tree_size) == (0, 0, 0)
    assert genesis.merkle_root == genesis.tree_root == "0x" + merkle.EMPTY_ROOT.hex()
    for previous, block in zip(blocks, blocks[1:], strict=False):
        header = block.header
        assert header.height == previous.header.height + 1
        assert header.prev_hash == previous.block_hash
        assert header.timestamp_ms >= previous.header.timestamp_ms
        assert header.tree_size == previous.header.tree_size + header.tx_count
        own_leaves = [t.leaf_hash for t in store.block_transactions(header.height)]
        assert own_leaves == [leaf_hash(t.tx) for t in store.block_transactions(header.height)]
        assert header.merkle_root == "0x" + merkle.merkle_root(own_leaves).hex()
        assert header.tree_root == "0x" + merkle.merkle_root(store.leaf_hashes(header.tree_size)).hex()
    for block in blocks:
        assert block.block_hash == block_hash(block.header)
        assert block.sealer == chain.sealer
        check_block_signature(block, chain.sealer)


def test_the_chain_commitment_binds_every_field_of_the_chain(built: LedgerFixture) -> None:
    chain = built.chain
    variants = [
        dataclasses.replace(chain, chain_id=chain.chain_id + 1),
        dataclasses.replace(chain, token_address=chain.operator),
        dataclasses.replace(chain, operator=chain.sealer),
        dataclasses.replace(chain, sealer=ATTACKER.address),
        dataclasses.replace(chain, name="other"),
        dataclasses.replace(chain, version="2"),
    ]
    commitments = {chain_commitment(c) for c in [chain, *variants]}
    assert len(commitments) == len(variants) + 1


# ---- inclusion proofs ----


def test_every_sealed_transaction_proves_its_inclusion(built: LedgerFixture) -> None:
    store = built.ledger.store
    checked = 0
    for height in range(1, len(BLOCK_SIZES) + 1):
        for index, stored in enumerate(store.block_transactions(height)):
            proof = built.ledger.inclusion_proof(stored.tx_id)
            assert proof["leafIndex"] == index
            assert proof["transaction"] == stored.tx.to_dict()
            block = verify_inclusion(proof, built.chain)
            assert block == store.block(height)
            checked += 1
    assert checked == sum(BLOCK_SIZES)


def test_an_unsealed_transaction_has_no_proof_yet(lf: LedgerFixture) -> None:
    result = lf.mint(lf.party("alice").address, UNIT)
    with pytest.raises(NotFound):
        lf.ledger.inclusion_proof(result.tx_id)
    lf.ledger.seal()
    verify_inclusion(lf.ledger.inclusion_proof(result.tx_id), lf.chain)
    with pytest.raises(NotFound):
        lf.ledger.inclusion_proof("0x" + "cd" * 32)


def test_a_proof_does_not_verify_for_another_chain(built: LedgerFixture) -> None:
    proof = built.ledger.inclusion_proof(sealed_tx_ids(built)[0])
    with pytest.raises(InvalidSignature):
        verify_inclusion(proof, dataclasses.replace(built.chain, sealer=ATTACKER.address))


Tamper = Callable[[dict[str, Any]], None]


def _flip(hex_text: str, bit: int) -> str:
    raw = bytearray(bytes.fromhex(hex_text[2:]))
    raw[bit // 8] ^= 1 << (bit % 8)
    return "0x" + raw.hex()


def _next_index(proof: dict[str, Any]) -> None:
    proof["leafIndex"] = (proof["leafIndex"] + 1) % proof["block"]["header"]["txCount"]


def _index_past_the_end(proof: dict[str, Any]) -> None:
    proof["leafIndex"] = proof["block"]["header"]["txCount"]


def _negative_index(proof: dict[str, Any]) -> None:
    proof["leafIndex"] = -1


def _flip_path_bit(element: int, bit: int) -> Tamper:
    def tamper(proof: dict[str, Any]) -> None:
        path = proof["auditPath"]
        path[element % len(path)] = _flip(path[element % len(path)], bit)

    return tamper


def _drop_last_path_element(proof: dict[str, Any]) -> None:
    proof["auditPath"].pop()


def _extra_path_element(proof: dict[str, Any]) -> None:
    proof["auditPath"].append("0x" + "00" * 32)


def _swap_path_elements(proof: dict[str, Any]) -> None:
    path = proof["auditPath"]
    if len(path) < 2 or path[0] == path[-1]:
        path[0] = _flip(path[0], 0)
    path[0], path[-1] = path[-1], path[0]


def _edit_amount(proof: dict[str, Any]) -> None:
    message = proof["transaction"]["message"]
    key = "amount" if "amount" in message else "value"
    message[key] = str(int(message[key]) + 1)


def _edit_amount_and_its_leaf_hash(proof: dict[str, Any]) -> None:
    _edit_amount(proof)
    proof["leafHash"] = "0x" + leaf_hash(Transaction.from_dict(proof["transaction"])).hex()


def _edit_accepted_at_and_its_leaf_hash(proof: dict[str, Any]) -> None:
    record = proof["transaction"]
    record["acceptedAt"] = str(int(record["acceptedAt"]) + 1)
    proof["leafHash"] = "0x" + leaf_hash(Transaction.from_dict(record)).hex()


def _edit_signature(proof: dict[str, Any]) -> None:
    proof["transaction"]["signature"] = _flip(proof["transaction"]["signature"], 3)


def _edit_leaf_hash(proof: dict[str, Any]) -> None:
    proof["leafHash"] = _flip(proof["leafHash"], 100)


def _block_signed_by_the_attacker(proof: dict[str, Any]) -> None:
    block = SignedBlock.from_dict(proof["block"])
    proof["block"] = sign_header(block.header, ATTACKER).to_dict()


def _attacker_signature_claiming_the_sealer(proof: dict[str, Any]) -> None:
    block = SignedBlock.from_dict(proof["block"])
    forged = sign_header(block.header, ATTACKER)
    proof["block"] = dataclasses.replace(forged, sealer=block.sealer).to_dict()


def _block_relabelled_to_another_sealer(proof: dict[str, Any]) -> None:
    proof["block"]["sealer"] = ATTACKER.address  # the real sealer's signature, someone else's name


def _header_field(field: str, rehash: bool) -> Tamper:
    def tamper(proof: dict[str, Any]) -> None:
        header = proof["block"]["header"]
        value = header[field]
        header[field] = _flip(value, 0) if isinstance(value, str) else value + 1
        if rehash:  # a consistent hash, but the sealer never signed it
            proof["block"]["hash"] = block_hash(SignedBlock.from_dict(proof["block"]).header)

    return tamper


def _root_of_the_attackers_choice(proof: dict[str, Any]) -> None:
    """Point the header at a root the forged path leads to, and re-sign with the attacker key."""
    tx = Transaction.from_dict(proof["transaction"])
    block = SignedBlock.from_dict(proof["block"])
    header = dataclasses.replace(block.header, merkle_root="0x" + leaf_hash(tx).hex(), tx_count=1)
    proof["block"] = sign_header(header, ATTACKER).to_dict()
    proof["auditPath"], proof["leafIndex"] = [], 0


def _unknown_key(proof: dict[str, Any]) -> None:
    proof["note"] = "trust me"


def _missing_key(proof: dict[str, Any]) -> None:
    del proof["auditPath"]


def _path_not_a_list(proof: dict[str, Any]) -> None:
    proof["auditPath"] = proof["auditPath"][0]


HEADER_FIELDS = ("height", "prevHash", "merkleRoot", "timestamp", "txCount", "treeSize", "treeRoot")

TAMPERINGS: list[Any] = [
    pytest.param(_next_index, id="leafIndex+1"),
    pytest.param(_index_past_the_end, id="leafIndex=txCount"),
    pytest.param(_negative_index, id="leafIndex=-1"),
    *(
        pytest.param(_flip_path_bit(element, bit), id=f"auditPath[{element}]-bit{bit}")
        for element in (0, 1, -1)
        for bit in (0, 77, 255)
    ),
    pytest.param(_drop_last_path_element, id="auditPath-shorter"),
    pytest.param(_extra_path_element, id="auditPath-longer"),
    pytest.param(_swap_path_elements, id="auditPath-reordered"),
    pytest.param(_edit_amount, id="record-amount"),
    pytest.param(_edit_amount_and_its_leaf_hash, id="record-amount-and-leafHash"),
    pytest.param(_edit_accepted_at_and_its_leaf_hash, id="record-acceptedAt-and-leafHash"),
    pytest.param(_edit_signature, id="record-signature"),
    pytest.param(_edit_leaf_hash, id="leafHash"),
    pytest.param(_block_signed_by_the_attacker, id="block-signed-by-attacker"),
    pytest.param(_attacker_signature_claiming_the_sealer, id="block-attacker-signature-as-sealer"),
    pytest.param(_block_relabelled_to_another_sealer, id="block-relabelled-sealer"),
    *(pytest.param(_header_field(f, False), id=f"header-{f}") for f in HEADER_FIELDS),
    *(pytest.param(_header_field(f, True), id=f"header-{f}-rehashed") for f in HEADER_FIELDS),
    pytest.param(_root_of_the_attackers_choice, id="header-root-re-signed-by-attacker"),
    pytest.param(_unknown_key, id="shape-unknown-key"),
    pytest.param(_missing_key, id="shape-missing-key"),
    pytest.param(_path_not_a_list, id="shape-auditPath-not-a-list"),
]


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_a_tampered_inclusion_proof_is_refused(built: LedgerFixture, tamper: Tamper) -> None:
    # Blocks of two or more transactions, so every proof has an audit path to tamper with.
    tx_ids = sealed_tx_ids(built, min_block_size=2)
    assert len(tx_ids) >= 20
    for tx_id in tx_ids:
        proof = built.ledger.inclusion_proof(tx_id)
        verify_inclusion(proof, built.chain)  # the untouched proof is good
        forged = copy.deepcopy(proof)
        tamper(forged)
        assert forged != proof
        with pytest.raises(InferpayError):
            verify_inclusion(forged, built.chain)


def test_a_proof_moved_to_another_block_is_refused(built: LedgerFixture) -> None:
    proofs = [built.ledger.inclusion_proof(tx_id) for tx_id in sealed_tx_ids(built)]
    for proof in proofs:
        for other in proofs:
            if other["block"] == proof["block"]:
                continue
            moved = {**copy.deepcopy(proof), "block": copy.deepcopy(other["block"])}
            with pytest.raises(InferpayError):
                verify_inclusion(moved, built.chain)


# ---- consistency proofs ----


def _consistency(lf: LedgerFixture, old: int, new: int) -> tuple[SignedBlock, SignedBlock, list[str]]:
    proof = lf.ledger.consistency_proof(old, new)
    return SignedBlock.from_dict(proof["old"]), SignedBlock.from_dict(proof["new"]), proof["proof"]


def test_every_pair_of_heads_is_consistent(built: LedgerFixture) -> None:
    top = len(BLOCK_SIZES)
    for old in range(top + 1):
        for new in range(old, top + 1):
            old_block, new_block, proof = _consistency(built, old, new)
            assert (old_block.header.height, new_block.header.height) == (old, new)
            verify_consistency(old_block, new_block, proof, built.chain)
            if old < new and old_block.header.tree_size:
                with pytest.raises(InferpayError):  # the later head never precedes the earlier
                    verify_consistency(new_block, old_block, proof, built.chain)


def test_consistency_proofs_refuse_impossible_requests(built: LedgerFixture) -> None:
    with pytest.raises(InvalidInput):
        built.ledger.consistency_proof(3, 2)
    with pytest.raises(NotFound):
        built.ledger.consistency_proof(1, len(BLOCK_SIZES) + 1)


def test_a_tampered_consistency_proof_is_refused(built: LedgerFixture) -> None:
    top = len(BLOCK_SIZES)
    for old in range(1, top):
        old_block, new_block, proof = _consistency(built, old, top)
        for element in range(len(proof)):
            forged = list(proof)
            forged[element] = _flip(forged[element], 9)
            with pytest.raises(InferpayError):
                verify_consistency(old_block, new_block, forged, built.chain)
        if proof:
            with pytest.raises(InferpayError):
                verify_consistency(old_block, new_block, proof[:-1], built.chain)
        with pytest.raises(InferpayError):
            verify_consistency(old_block, new_block, [*proof, "0x" + "00" * 32], built.chain)


def _rewritten_leaves(lf: LedgerFixture, size: int, position: int) -> list[bytes]:
    leaves = lf.ledger.store.leaf_hashes(size)
    leaves[position] = merkle.leaf_hash(b"a transaction that never happened")
    return leaves


@pytest.mark.parametrize("old", range(1, len(BLOCK_SIZES)))
def test_a_forged_old_head_signed_by_an_attacker_is_refused(built: LedgerFixture, old: int) -> None:
    old_block, new_block, proof = _consistency(built, old, len(BLOCK_SIZES))
    size = old_block.header.tree_size
    forged_root = "0x" + merkle.merkle_root(_rewritten_leaves(built, size, 0)).hex()
    header = dataclasses.replace(old_block.header, tree_root=forged_root)
    forged = sign_header(header, ATTACKER)
    with pytest.raises(InvalidSignature):
        verify_consistency(forged, new_block, proof, built.chain)
    as_sealer = dataclasses.replace(forged, sealer=built.chain.sealer)
    with pytest.raises(InvalidSignature):
        verify_consistency(as_sealer, new_block, proof, built.chain)
    # Even the true header, merely re-signed by someone else, is not a head of this chain.
    for head in (old_block, new_block):
        resigned = sign_header(head.header, ATTACKER)
        for claimed in (resigned, dataclasses.replace(resigned, sealer=built.chain.sealer)):
            with pytest.raises(InvalidSignature):
                if head is old_block:
                    verify_consistency(claimed, new_block, proof, built.chain)
                else:
                    verify_consistency(old_block, claimed, proof, built.chain)


@pytest.mark.parametrize("old", range(1, len(BLOCK_SIZES)))
def test_a_head_over_rewritten_history_is_inconsistent_even_if_the_sealer_signed_it(
    built: LedgerFixture, old: int
) -> None:
    sealer = KeySigner(built.sealer_key)
    old_block, new_block, proof = _consistency(built, old, len(BLOCK_SIZES))
    size = old_block.header.tree_size
    real_leaves = built.ledger.store.leaf_hashes(new_block.header.tree_size)
    for position in sorted({0, size // 2, size - 1}):
        rewritten = _rewritten_leaves(built, size, position)
        header = dataclasses.replace(old_block.header, tree_root="0x" + merkle.merkle_root(rewritten).hex())
        forged = sign_header(header, sealer)
        check_block_signature(forged, built.chain.sealer)  # the signature itself is genuine
        # Neither the honest proof nor one the forger builds over its own history helps.
        own_proof = ["0x" + h.hex() for h in merkle.consistency_proof(rewritten + real_leaves[size:], size)]
        for candidate in (proof, own_proof):
            with pytest.raises(InvalidSignature, match="not consistent"):
                verify_consistency(forged, new_block, candidate, built.chain)


def test_a_head_claiming_a_different_tree_size_is_inconsistent(built: LedgerFixture) -> None:
    sealer = KeySigner(built.sealer_key)
    old_block, new_block, proof = _consistency(built, 3, len(BLOCK_SIZES))
    for size in (old_block.header.tree_size - 1, old_block.header.tree_size + 1):
        header = dataclasses.replace(old_block.header, tree_size=size)
        with pytest.raises(InvalidSignature, match="not consistent"):
            verify_consistency(sign_header(header, sealer), new_block, proof, built.chain)


def test_a_forged_new_head_is_refused(built: LedgerFixture) -> None:
    old_block, new_block, proof = _consistency(built, 2, len(BLOCK_SIZES))
    header = dataclasses.replace(new_block.header, tree_root=_flip(new_block.header.tree_root, 1))
    with pytest.raises(InvalidSignature):
        verify_consistency(old_block, sign_header(header, ATTACKER), proof, built.chain)
    with pytest.raises(InvalidSignature, match="not consistent"):
        verify_consistency(old_block, sign_header(header, KeySigner(built.sealer_key)), proof, built.chain)
    unsigned = dataclasses.replace(new_block, header=header)  # header edited, hash and signature kept
    with pytest.raises(MalformedRecord):
        verify_consistency(old_block, unsigned, proof, built.chain)


# ---- the log tree's compact frontier ----


@settings(max_examples=60, deadline=None)
@given(leaves=st.lists(hashes, max_size=300))
def test_frontier_root_equals_the_merkle_root(leaves: list[bytes]) -> None:
    frontier: list[bytes] = []
    for size, leaf in enumerate(leaves):
        frontier_append(frontier, size, leaf)
    assert frontier_root(frontier) == merkle.merkle_root(leaves)
    assert len(frontier) == bin(len(leaves)).count("1")  # one perfect subtree per set bit


@settings(max_examples=40, deadline=None)
@given(leaves=st.lists(hashes, min_size=1, max_size=64), data=st.data())
def test_frontier_root_equals_the_merkle_root_of_every_prefix(leaves: list[bytes], data: st.DataObject) -> None:
    frontier: list[bytes] = []
    checkpoints = set(data.draw(st.lists(st.integers(0, len(leaves)), max_size=8)))
    for size, leaf in enumerate(leaves):
        if size in checkpoints:
            assert frontier_root(frontier) == merkle.merkle_root(leaves[:size])
        frontier_append(frontier, size, leaf)
    assert frontier_root(frontier) == merkle.merkle_root(leaves)


SEALER_FOR_PROPERTIES = KeySigner(new_private_key())
CHAIN_FOR_PROPERTIES = ChainInfo(
    chain_id=77,
    token_address=ATTACKER.address,
    operator=ATTACKER.address,
    sealer=SEALER_FOR_PROPERTIES.address,
)


@settings(max_examples=30, deadline=None)
@given(batches=st.lists(st.lists(hashes, min_size=1, max_size=20), max_size=8))
def test_blocks_grow_the_log_like_one_tree(batches: list[list[bytes]]) -> None:
    """next_block over any batching gives the same log roots as hashing all leaves at once,
    and the heads it makes are consistent with each other."""
    block = genesis_block(CHAIN_FOR_PROPERTIES, SEALER_FOR_PROPERTIES, 1)
    frontier: list[str] = []
    heads, everything = [block], []
    for batch in batches:
        block, frontier = next_block(block, batch, frontier, SEALER_FOR_PROPERTIES, 2)
        everything.extend(batch)
        heads.append(block)
        assert block.header.prev_hash == heads[-2].block_hash
        assert block.header.merkle_root == "0x" + merkle.merkle_root(batch).hex()
        assert block.header.tree_size == len(everything)
        assert block.header.tree_root == "0x" + merkle.merkle_root(everything).hex()
    for old in heads:
        proof = merkle.consistency_proof(everything, old.header.tree_size)
        verify_consistency(old, heads[-1], ["0x" + h.hex() for h in proof], CHAIN_FOR_PROPERTIES)

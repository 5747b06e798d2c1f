"""Signatures and signed bytes: EIP-712 known answers, eth-account agreement, a second verifier.

- The EIP-712 specification's Mail example (tests/vectors/eip712-mail.json) is checked byte for
  byte: domain separator, struct hash, digest and the signature made with keccak256("cow").
- ``ledger.encoding.signing_digest`` computes the ledger's structs directly (x402 upto's Permit2
  one under Permit2's domain); here it must equal eth-account's generic typed-data encoder for
  any message Hypothesis can build.
- Signatures from eth-account recover through ``ledger.crypto``, and every recovery is checked
  again by the pure-Python ``ecdsa`` package (``ledger.audit.independent_verifier``).
- Amount text and address parsing, which decide what a user actually signs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from ecdsa import SECP256k1, VerifyingKey
from ecdsa.util import sigdecode_string
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger.amounts import MAX_AMOUNT, format_amount, parse_amount
from ledger.audit.independent_verifier import recover_address_independently
from ledger.crypto import (
    HALF_N,
    SECP256K1_N,
    address_of,
    recover_address,
    sign_digest,
    verify_signed_by,
)
from ledger.encoding import message_domain_separator, signing_digest, struct_hash, typed_data
from ledger.errors import (
    HighSSignature,
    InvalidAddress,
    InvalidAmount,
    InvalidInput,
    InvalidSignature,
)
from ledger.types import Authorization, ChainInfo, Message, parse_address
from tests.strategies import addresses, amounts, chain_infos, messages, private_keys
from wallets import Wallet

MAIL: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "eip712-mail.json").read_text(encoding="utf-8")
)
COW_KEY = bytes.fromhex(MAIL["private_key_hex"])
MAIL_DIGEST = bytes.fromhex(MAIL["digest_hex"])

CHAIN = ChainInfo(
    chain_id=8453,
    token_address="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    operator="0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1",
    sealer="0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF",
)
ALICE = Wallet.from_private_key("alice", bytes.fromhex("01" * 32))
BOB = Wallet.from_private_key("bob", bytes.fromhex("02" * 32))

digests = st.binary(min_size=32, max_size=32)


def eip712_digest(signable: SignableMessage) -> bytes:
    """The digest EIP-712 signs, rebuilt from eth-account's SignableMessage."""
    assert signable.version == b"\x01"
    return keccak(b"\x19\x01" + signable.header + signable.body)


def signature_hex(r: int, s: int, v: int) -> str:
    return "0x" + r.to_bytes(32, "big").hex() + s.to_bytes(32, "big").hex() + format(v, "02x")


def split(signature: str) -> tuple[int, int, int]:
    raw = bytes.fromhex(signature[2:])
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]


def high_s_twin(signature: str) -> str:
    """(r, n - s, v flipped): the same signature's other valid encoding."""
    r, s, v = split(signature)
    return signature_hex(r, SECP256K1_N - s, 55 - v)


def outcome(function: Any, *args: Any) -> object:
    try:
        return function(*args)
    except InvalidSignature as exc:
        return type(exc)


# ---- the EIP-712 specification's worked example ----


def test_mail_vector_key_is_keccak_of_cow() -> None:
    assert keccak(b"cow") == COW_KEY
    assert address_of(COW_KEY) == MAIL["signer_address"]


def test_mail_vector_digest() -> None:
    signable = encode_typed_data(full_message=MAIL["typed_data"])
    assert signable.header == bytes.fromhex(MAIL["domain_separator_hex"])
    assert signable.body == bytes.fromhex(MAIL["struct_hash_hex"])
    assert eip712_digest(signable) == MAIL_DIGEST


def test_mail_vector_signature_byte_for_byte() -> None:
    vector = MAIL["signature"]
    # The vector writes r and s as hex integers (its s has 63 digits: the leading zero of
    # 0x07299936... is dropped), so they are read as numbers and padded to 32 bytes here.
    r, s = int(vector["r_hex"], 16), int(vector["s_hex"], 16)
    # The vector's s is already low-S (s <= n/2), so libsecp256k1's always-low-S signature
    # must reproduce it exactly, with no normalisation on our side.
    assert s <= HALF_N
    expected = signature_hex(r, s, vector["v"])
    assert sign_digest(COW_KEY, MAIL_DIGEST) == expected
    assert Account.sign_message(encode_typed_data(full_message=MAIL["typed_data"]), COW_KEY).signature == bytes.fromhex(
        expected[2:]
    )


def test_mail_vector_recovers_its_signer() -> None:
    vector = MAIL["signature"]
    signature = signature_hex(int(vector["r_hex"], 16), int(vector["s_hex"], 16), vector["v"])
    assert recover_address(MAIL_DIGEST, signature) == MAIL["signer_address"]
    assert recover_address_independently(MAIL_DIGEST, signature) == MAIL["signer_address"]
    verify_signed_by(MAIL_DIGEST, signature, MAIL["signer_address"], "mail")


# ---- the fast-path digests equal eth-account's generic encoder ----


@given(chain_infos, messages)
@settings(max_examples=300, deadline=None)
def test_signing_digest_matches_eth_account(chain: ChainInfo, message: Message) -> None:
    signable = encode_typed_data(full_message=typed_data(chain, message))
    assert signable.header == message_domain_separator(chain, message)
    assert signable.body == struct_hash(message)
    assert signing_digest(chain, message) == eip712_digest(signable)


@given(private_keys, chain_infos, messages)
@settings(max_examples=100, deadline=None)
def test_eth_account_signatures_recover_through_ledger_crypto(key: bytes, chain: ChainInfo, message: Message) -> None:
    signed = Account.sign_typed_data(key, full_message=typed_data(chain, message))
    signature = "0x" + bytes(signed.signature).hex()
    digest = signing_digest(chain, message)
    expected = Account.from_key(key).address
    assert recover_address(digest, signature) == expected
    verify_signed_by(digest, signature, expected, "message")
    # Both sides use RFC 6979 nonces and low-S, so the signatures are identical bytes.
    assert sign_digest(key, digest) == signature
    assert Wallet.from_private_key("w", key).sign(chain, message) == signature


def test_eth_account_sign_message_of_encoded_typed_data() -> None:
    authorization, _ = ALICE.authorize_transfer(CHAIN, BOB.address, 1_250_000)
    signable = encode_typed_data(full_message=typed_data(CHAIN, authorization))
    signed = Account.sign_message(signable, ALICE.private_key_bytes())
    signature = "0x" + bytes(signed.signature).hex()
    assert recover_address(signing_digest(CHAIN, authorization), signature) == ALICE.address
    assert Account.recover_message(signable, signature=signed.signature) == ALICE.address


# ---- what a verifier must refuse ----


@given(private_keys, digests)
@settings(max_examples=50, deadline=None)
def test_high_s_twin_is_refused(key: bytes, digest: bytes) -> None:
    signature = sign_digest(key, digest)
    r, s, _ = split(signature)
    assert s <= HALF_N
    twin = high_s_twin(signature)
    # The twin is a mathematically valid ECDSA signature of the same digest by the same key...
    public = VerifyingKey.from_string(
        VerifyingKey.from_public_key_recovery_with_digest(
            bytes.fromhex(signature[2:130]), digest, curve=SECP256k1, sigdecode=sigdecode_string
        )[split(signature)[2] - 27].to_string(),
        curve=SECP256k1,
    )
    assert public.verify_digest(bytes.fromhex(twin[2:130]), digest, sigdecode=sigdecode_string)
    # ...which is exactly why both verifiers must refuse it: a second encoding of one payment.
    with pytest.raises(HighSSignature):
        recover_address(digest, twin)
    with pytest.raises(HighSSignature):
        recover_address_independently(digest, twin)


def _bad_signatures() -> list[tuple[str, str]]:
    good = sign_digest(COW_KEY, MAIL_DIGEST)
    r, s, v = split(good)
    return [
        ("empty", "0x"),
        ("64 bytes", good[:-2]),
        ("66 bytes", good + "00"),
        ("not hex", "0x" + "zz" * 65),
        ("v=2", good[:-2] + "02"),
        ("v=26", good[:-2] + "1a"),
        ("v=29", good[:-2] + "1d"),
        ("v=255", good[:-2] + "ff"),
        ("r=0", signature_hex(0, s, v)),
        ("s=0", signature_hex(r, 0, v)),
        ("r=n", signature_hex(SECP256K1_N, s, v)),
        ("s=n", signature_hex(r, SECP256K1_N, v)),
    ]


@pytest.mark.parametrize("label, signature", _bad_signatures(), ids=[b[0] for b in _bad_signatures()])
def test_malformed_signatures_are_refused(label: str, signature: str) -> None:
    with pytest.raises(InvalidSignature):
        recover_address(MAIL_DIGEST, signature)
    with pytest.raises(InvalidSignature):
        recover_address_independently(MAIL_DIGEST, signature)


@pytest.mark.parametrize("v", [0, 1])
def test_raw_recovery_id_v_is_refused(v: int) -> None:
    good = sign_digest(COW_KEY, MAIL_DIGEST)
    with pytest.raises(InvalidSignature):
        recover_address(MAIL_DIGEST, good[:-2] + format(v, "02x"))


def test_signature_by_another_key_is_refused() -> None:
    authorization, signature = BOB.authorize_transfer(CHAIN, BOB.address, 5)
    forged = Authorization.from_dict({**authorization.to_dict(), "from": ALICE.address})
    with pytest.raises(InvalidSignature) as caught:
        verify_signed_by(signing_digest(CHAIN, forged), signature, ALICE.address, "authorization")
    assert caught.value.details["expected"] == ALICE.address
    assert caught.value.details["signer"] != ALICE.address


def test_signature_under_another_domain_does_not_verify() -> None:
    authorization, signature = ALICE.authorize_transfer(CHAIN, BOB.address, 5)
    other_chain = ChainInfo(1, CHAIN.token_address, CHAIN.operator, CHAIN.sealer)
    with pytest.raises(InvalidSignature):
        verify_signed_by(signing_digest(other_chain, authorization), signature, ALICE.address, "x")


# ---- the independent verifier agrees ----


@given(private_keys, digests)
@settings(max_examples=60, deadline=None)
def test_independent_verifier_agrees_on_real_signatures(key: bytes, digest: bytes) -> None:
    signature = sign_digest(key, digest)
    assert recover_address(digest, signature) == address_of(key)
    assert recover_address_independently(digest, signature) == address_of(key)


@given(digests, st.binary(min_size=64, max_size=64), st.sampled_from([27, 28]))
@settings(max_examples=60, deadline=None)
def test_independent_verifier_agrees_on_arbitrary_bytes(digest: bytes, rs: bytes, v: int) -> None:
    signature = "0x" + rs.hex() + format(v, "02x")
    assert outcome(recover_address, digest, signature) == outcome(recover_address_independently, digest, signature)


# ---- wallets sign what the ledger verifies ----


@given(chain_infos, messages)
@settings(max_examples=50, deadline=None)
def test_wallet_signatures_recover_to_the_wallet(chain: ChainInfo, message: Message) -> None:
    signature = ALICE.sign(chain, message)
    assert recover_address(signing_digest(chain, message), signature) == ALICE.address


def test_authorize_transfer_defaults() -> None:
    before = int(time.time())
    authorization, signature = ALICE.authorize_transfer(CHAIN, BOB.address, 1_250_000)
    after = int(time.time())
    assert authorization.from_ == ALICE.address and authorization.to == BOB.address
    assert authorization.value == 1_250_000
    # EIP-3009 requires validAfter < now: backdated by 5 s.
    assert before - 5 <= authorization.valid_after <= after - 5
    assert before + 600 <= authorization.valid_before <= after + 600
    assert Authorization.from_dict(authorization.to_dict()) == authorization
    assert recover_address(signing_digest(CHAIN, authorization), signature) == ALICE.address
    second, _ = ALICE.authorize_transfer(CHAIN, BOB.address, 1_250_000)
    assert second.nonce != authorization.nonce  # random, 32 bytes
    assert len(bytes.fromhex(second.nonce[2:])) == 32


def test_authorize_transfer_explicit_fields() -> None:
    nonce = bytes(range(32))
    authorization, _ = ALICE.authorize_transfer(
        CHAIN, BOB.address.lower(), 7, valid_after=100, valid_before=200, nonce=nonce
    )
    assert (authorization.valid_after, authorization.valid_before) == (100, 200)
    assert authorization.nonce == "0x" + nonce.hex()
    assert authorization.to == BOB.address
    assert ALICE.authorize_transfer(CHAIN, BOB.address, 7, ttl_seconds=30)[0].valid_before <= (int(time.time()) + 30)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"to": "0x" + "ab" * 19 + "AB"}, InvalidAddress),
        ({"value": 0}, InvalidAmount),
        ({"value": MAX_AMOUNT + 1}, InvalidAmount),
        ({"value": "1.25"}, InvalidAmount),
        ({"valid_after": 200, "valid_before": 200}, InvalidInput),
        ({"ttl_seconds": 0}, InvalidInput),
        ({"nonce": b"\x00" * 31}, InvalidInput),
        ({"nonce": "0x1234"}, InvalidInput),
    ],
)
def test_authorize_transfer_refuses_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {"to": BOB.address, "value": 5, **kwargs}
    with pytest.raises(error):
        ALICE.authorize_transfer(CHAIN, **arguments)


# ---- amounts ----


def test_parse_amount_known_values() -> None:
    assert parse_amount("1.25") == 1_250_000
    assert parse_amount("0.000001") == 1
    assert parse_amount("9223372036854.775807") == MAX_AMOUNT == 2**63 - 1


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.0",
        "-1",
        "1.0000001",
        "9223372036854.775808",
        "1e3",
        "12abc",
        " 1",
        "1 ",
        "",
        "\u0661",
        "1.",
        ".5",
        "+1",
        "1,5",
        "0x10",
        "１",
    ],
)
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text)


@given(amounts)
def test_amount_text_round_trip_from_base_units(units: int) -> None:
    assert parse_amount(format_amount(units)) == units


@given(st.integers(min_value=1, max_value=MAX_AMOUNT // 10**6))
def test_amount_text_round_trip_for_whole_numbers(whole: int) -> None:
    assert format_amount(parse_amount(str(whole))) == str(whole)


# ---- addresses ----


@given(addresses)
def test_parse_address_accepts_checksum_and_lowercase(address: str) -> None:
    assert parse_address(address) == address
    assert parse_address(address.lower()) == address


@given(addresses, st.data())
def test_parse_address_refuses_a_mis_cased_checksum(address: str, data: st.DataObject) -> None:
    letters = [i for i, c in enumerate(address) if i >= 2 and c.isalpha()]
    if not letters:
        return
    i = data.draw(st.sampled_from(letters))
    miscased = address[:i] + address[i].swapcase() + address[i + 1 :]
    # Flipping the only capital of a checksum gives the all-lowercase form, which is accepted on
    # purpose (the test above): that draw says nothing about mis-cased checksums.
    assume(miscased != address.lower())
    with pytest.raises(InvalidAddress):
        parse_address(miscased)


def test_parse_address_known_checksum() -> None:
    # EIP-55's own examples.
    for good in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"):
        assert parse_address(good) == good == to_checksum_address(good.lower())
    with pytest.raises(InvalidAddress):
        parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
    for bad in (None, "", "0x1234", "5aaeb6053f3e94c9b9a09f33669435e7ef1beaedff"):
        with pytest.raises(InvalidAddress):
            parse_address(bad)


@pytest.mark.parametrize(
    "text", ["5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"]
)
def test_parse_address_requires_the_0x_prefix(text: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_address(text)


# ---- Keccak-256: the fast C implementation against pycryptodome's ----


def test_keccak_known_answers() -> None:
    from ledger.keccak import keccak as fast_keccak

    # Keccak-256 (Ethereum), not FIPS SHA3-256, whose digest of b"" is a7ffc6f8...
    assert fast_keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert fast_keccak(b"cow") == COW_KEY


@given(st.binary(max_size=600))
def test_keccak_agrees_with_pycryptodome(data: bytes) -> None:
    from eth_hash.backends import pycryptodome

    from ledger.keccak import keccak as fast_keccak

    assert fast_keccak(data) == pycryptodome.keccak256(data)

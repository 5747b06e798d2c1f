"""Keystores and the wallet store: the Web3 v3 vector, eth-account interop, files on disk
(mutated and hostile keystores: test_keystore_malformed.py).

The scrypt vector in tests/vectors/web3-keystore-v3-scrypt.json is decrypted with its own
parameters (n = 2**18, about a second). Everything else runs with INFERPAY_SCRYPT_N=1024 so
the module stays fast; that setting is for tests and demos only.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

import wallets
from ledger.errors import (
    InvalidAddress,
    InvalidInput,
    KeystoreInvalid,
    UnknownWallet,
    WalletExists,
    WrongPassword,
)
from tests.strategies import private_keys
from tests.support.keystores import FAST_N, KEY, PASSWORD, VECTOR
from wallets import Wallet, WalletStore
from wallets.keystore import (
    DEFAULT_SCRYPT_N,
    decrypt_key,
    default_scrypt_n,
    encrypt_key,
)
from wallets.store import NAME_PATTERN, check_name


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its bytes, to show an operation changed nothing."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


# ---- known answers and interoperability ----


def test_v3_scrypt_vector_decrypts_to_its_key() -> None:
    keystore = VECTOR["keystore"]
    assert keystore["crypto"]["kdfparams"]["n"] == 2**18  # the vector's own parameters
    key = decrypt_key(keystore, VECTOR["password"])
    assert key == bytes.fromhex(VECTOR["private_key_hex"])


def test_inferpay_keystore_decrypts_with_eth_account() -> None:
    keystore = encrypt_key(KEY, PASSWORD)
    assert keystore["version"] == 3
    assert keystore["crypto"]["kdf"] == "scrypt"
    assert keystore["crypto"]["cipher"] == "aes-128-ctr"
    assert keystore["crypto"]["kdfparams"]["n"] == FAST_N
    assert Account.decrypt(keystore, PASSWORD) == KEY
    # eth_keyfile's address field: checksummed, without 0x.
    assert "0x" + keystore["address"] == Account.from_key(KEY).address


def test_non_ascii_password_matches_eth_account() -> None:
    password = "pässwörd 🔑 ключ"
    assert Account.decrypt(encrypt_key(KEY, password), password) == KEY
    assert decrypt_key(Account.encrypt(KEY, password, kdf="scrypt", iterations=FAST_N), password) == KEY


@pytest.mark.parametrize("kdf, work", [("scrypt", FAST_N), ("pbkdf2", 1000)])
def test_eth_account_keystore_imports(store: WalletStore, kdf: Literal["scrypt", "pbkdf2"], work: int) -> None:
    keystore = Account.encrypt(KEY, PASSWORD, kdf=kdf, iterations=work)
    wallet = store.import_keystore("imported", keystore, PASSWORD)
    expected = Account.from_key(KEY).address
    assert wallet.address == expected
    assert store.address("imported") == expected
    assert store.load("imported", PASSWORD).address == expected
    assert Account.decrypt(store.export("imported"), PASSWORD) == KEY


def test_imported_vector_gets_an_address_field(store: WalletStore) -> None:
    wallet = store.import_keystore("vector", VECTOR["keystore"], VECTOR["password"])
    assert wallet.address == Account.from_key(bytes.fromhex(VECTOR["private_key_hex"])).address
    assert "address" not in VECTOR["keystore"]
    assert store.address("vector") == wallet.address  # now readable without the password
    assert store.export("vector")["crypto"]["kdfparams"]["n"] == 2**18  # parameters kept


def test_geth_style_capitalised_crypto_key_is_read() -> None:
    keystore = Account.encrypt(KEY, PASSWORD, kdf="scrypt", iterations=FAST_N)
    keystore["Crypto"] = keystore.pop("crypto")
    keystore["address"] = "0x" + keystore["address"].lower()
    assert decrypt_key(keystore, PASSWORD) == KEY


@given(private_keys)
@settings(max_examples=200)
def test_address_matches_eth_account(key: bytes) -> None:
    assert Wallet.from_private_key("w", key).address == Account.from_key(key).address


def test_created_wallet_address_matches_eth_account(store: WalletStore) -> None:
    wallet = store.create("alice", PASSWORD)
    key = Account.decrypt(store.export("alice"), PASSWORD)
    assert wallet.address == Account.from_key(key).address == store.address("alice")


# ---- passwords ----


def test_wrong_password_is_refused_and_changes_nothing(store: WalletStore) -> None:
    store.create("alice", PASSWORD)
    before = snapshot(store.home)
    with pytest.raises(WrongPassword):
        store.load("alice", "not the password")
    foreign = Account.encrypt(KEY, PASSWORD, kdf="scrypt", iterations=FAST_N)
    with pytest.raises(WrongPassword):
        store.import_keystore("bob", foreign, "not the password")
    assert snapshot(store.home) == before
    assert store.names() == ["alice"]


def test_non_text_password_is_refused() -> None:
    keystore = encrypt_key(KEY, PASSWORD)
    with pytest.raises(InvalidInput):
        decrypt_key(keystore, PASSWORD.encode())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        encrypt_key(KEY, "\ud800")  # a lone surrogate cannot be UTF-8 encoded


# ---- scrypt work factor ----


def test_default_scrypt_n_is_the_v3_standard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERPAY_SCRYPT_N")
    assert default_scrypt_n() == DEFAULT_SCRYPT_N == 2**18


@pytest.mark.parametrize("value", ["512", "1000", "abc", "-1024", "2**10", "1e3", str(2**21)])
def test_bad_scrypt_n_setting_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INFERPAY_SCRYPT_N", value)
    with pytest.raises(InvalidInput, match="INFERPAY_SCRYPT_N"):
        encrypt_key(KEY, PASSWORD)


def test_explicit_scrypt_n() -> None:
    assert encrypt_key(KEY, PASSWORD, scrypt_n=2048)["crypto"]["kdfparams"]["n"] == 2048
    with pytest.raises(InvalidInput):
        encrypt_key(KEY, PASSWORD, scrypt_n=3000)


def test_hostile_kdf_parameters_are_refused_before_running() -> None:
    keystore = encrypt_key(KEY, PASSWORD)
    for field, value in [("n", 2**30), ("r", 10_000), ("p", 10**6), ("n", 3), ("dklen", 16)]:
        hostile = copy.deepcopy(keystore)
        hostile["crypto"]["kdfparams"][field] = value
        with pytest.raises(KeystoreInvalid, match=f"kdfparams.{field}|scrypt parameters"):
            decrypt_key(hostile, PASSWORD)


# ---- files on disk ----


def test_keystore_file_is_owner_only_even_with_a_lax_umask(store: WalletStore) -> None:
    old = os.umask(0)
    try:
        store.create("alice", PASSWORD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path("alice").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert [p.name for p in store.directory.iterdir()] == ["alice.json"]  # no temporary left


def test_existing_wallet_is_never_replaced(store: WalletStore) -> None:
    first = store.create("alice", PASSWORD)
    before = snapshot(store.home)
    with pytest.raises(WalletExists):
        store.create("alice", PASSWORD)
    with pytest.raises(WalletExists):
        store.import_private_key("alice", KEY, PASSWORD)
    with pytest.raises(WalletExists):
        foreign = Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)
        store.import_keystore("alice", foreign, PASSWORD)
    assert snapshot(store.home) == before
    assert store.load("alice", PASSWORD).address == first.address


def test_write_refuses_a_file_that_appeared_after_the_check(store: WalletStore) -> None:
    # Simulates a concurrent create: the final link must fail rather than overwrite.
    store.create("alice", PASSWORD)
    before = snapshot(store.home)
    with pytest.raises(WalletExists):
        store._write_new("alice", encrypt_key(KEY, PASSWORD))
    assert snapshot(store.home) == before


VALID_NAMES = ["a", "0", "alice", "bob-2", "ops_wallet", "x" * 64, "9lives"]
INVALID_NAMES: list[object] = [
    "",
    "A",
    "Alice",
    "-a",
    "_a",
    "x" * 65,
    "a b",
    "a/b",
    "../evil",
    "a.json",
    "é",
    "a\n",
    "0xabc",
    "0x" + "ab" * 20,
    None,
    5,
    b"alice",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(store: WalletStore, name: str) -> None:
    assert check_name(name) == name
    store.import_private_key(name, KEY, PASSWORD)
    assert store.names() == [name]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names(store: WalletStore, name: Any) -> None:
    with pytest.raises(InvalidInput):
        store.create(name, PASSWORD)
    with pytest.raises(InvalidInput):
        store.load(name, PASSWORD)
    assert snapshot(store.home.parent) == {}


@given(st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda n: not n.startswith("0x")))
def test_names_matching_the_pattern_are_accepted(name: str) -> None:
    assert check_name(name) == name


# ---- listing, resolving, exporting ----


def test_names_list_resolve_export(store: WalletStore) -> None:
    assert store.names() == [] and store.list() == []
    bob = store.create("bob", PASSWORD)
    alice = store.import_private_key("alice", KEY, PASSWORD)
    (store.directory / "notes.txt").write_text("not a wallet")
    assert store.names() == ["alice", "bob"]
    assert store.list() == [("alice", alice.address), ("bob", bob.address)]
    assert store.resolve("alice") == alice.address
    assert store.resolve(bob.address) == bob.address
    assert store.resolve(bob.address.lower()) == bob.address
    with pytest.raises(InvalidAddress):
        store.resolve("0x" + bob.address[2:].swapcase())
    with pytest.raises(UnknownWallet):
        store.resolve("carol")
    with pytest.raises(InvalidInput):
        store.resolve("Not A Name")
    assert store.export("alice") == json.loads(store.path("alice").read_text())
    with pytest.raises(UnknownWallet):
        store.export("carol")


def test_load_unknown_wallet(store: WalletStore) -> None:
    with pytest.raises(UnknownWallet):
        store.load("nobody", PASSWORD)
    with pytest.raises(UnknownWallet):
        store.address("nobody")


def test_package_load_and_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERPAY_HOME", str(tmp_path / "envhome"))
    assert wallets.default_home() == tmp_path / "envhome"
    created = WalletStore(wallets.default_home()).import_private_key("alice", KEY, PASSWORD)
    assert wallets.load("alice", password=PASSWORD) == created
    other = WalletStore(tmp_path / "other").import_private_key("alice", KEY, PASSWORD)
    assert wallets.load("alice", password=PASSWORD, home=str(tmp_path / "other")) == other
    monkeypatch.delenv("INFERPAY_HOME")
    assert wallets.default_home() == Path.home() / ".inferpay"


# ---- the Wallet object keeps its key to itself ----


def test_wallet_does_not_reveal_its_key() -> None:
    wallet = Wallet.from_private_key("alice", KEY)
    for text in (repr(wallet), str(wallet), f"{wallet!r}"):
        assert KEY.hex() not in text.lower()
        assert wallet.address in text
    with pytest.raises(TypeError):
        pickle.dumps(wallet)
    with pytest.raises(AttributeError):
        wallet._key = b"\x01" * 32
    with pytest.raises(AttributeError):
        wallet.name = "bob"  # type: ignore[misc]
    assert copy.deepcopy(wallet) is wallet
    assert wallet.private_key_bytes() == KEY


def test_local_account_is_the_same_key() -> None:
    wallet = Wallet.from_private_key("alice", KEY)
    account = wallet.local_account()
    assert account.address == wallet.address
    assert bytes(account.key) == KEY


@pytest.mark.parametrize("key", [b"", b"\x00" * 32, b"\xff" * 32, b"\x01" * 31, "00" * 32])
def test_bad_private_keys_are_refused_without_echoing_them(store: WalletStore, key: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.import_private_key("w", key, PASSWORD)
    assert "ffff" not in str(caught.value)
    assert store.names() == []

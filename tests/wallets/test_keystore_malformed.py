"""Mutated, hostile and unreadable keystores: only ``KeystoreInvalid`` or ``WrongPassword``, never
a library error, and never a key other than the one encrypted."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.crypto import address_of
from ledger.errors import KeystoreInvalid, WrongPassword
from tests.support.keystores import FAST_N, KEY, PASSWORD, VECTOR
from wallets import Wallet, WalletStore
from wallets.keystore import decrypt_key, validate_keystore

# ---- malformed keystores: only KeystoreInvalid or WrongPassword, never a library error ----

_BASES = [
    Account.encrypt(KEY, PASSWORD, kdf="scrypt", iterations=FAST_N),
    Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000),
]
_HEX_TEXT = st.text(alphabet="0123456789abcdefABCDEFx", max_size=80)
_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 64),
    st.sampled_from([0, 1, 3, 2**10, 2**11, 2**64, -(2**63)]),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    _HEX_TEXT,
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 3), max_size=3),
)


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def mutated_keystores(draw: st.DrawFn) -> Any:
    base = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(base)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = base
        for key in path[:-1]:
            parent = parent[key]
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        leaf = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "recase", "flip", "extend", "add"]))
        if action == "delete":
            del parent[leaf]
        elif action == "replace":
            parent[leaf] = draw(_ODD_VALUES)
        elif action == "recase":
            parent[leaf.upper()] = parent.pop(leaf)
        elif action == "flip" and isinstance(parent[leaf], str) and parent[leaf]:
            text = parent[leaf]
            i = draw(st.integers(0, len(text) - 1))
            parent[leaf] = text[:i] + draw(st.sampled_from("0f9aZ ")) + text[i + 1 :]
        elif action == "extend" and isinstance(parent[leaf], str):
            parent[leaf] = draw(st.sampled_from(["0x", "", "00"])) + parent[leaf]
        elif action == "add":
            parent[draw(st.text(max_size=8))] = draw(_ODD_VALUES)
    if draw(st.integers(0, 19)) == 7:  # now and then, not an object at all
        return draw(st.sampled_from([None, [], "keystore", 3, {}, [base]]))
    return base


@given(mutated_keystores())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_malformed_keystores_raise_only_keystore_errors(keystore: Any) -> None:
    try:
        key = decrypt_key(keystore, PASSWORD)
    except (KeystoreInvalid, WrongPassword) as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    # A harmless mutation (an unknown field, a changed id) may still decrypt; then the key is
    # the keystore's own, or at least belongs to the address the keystore declares.
    declared = validate_keystore(keystore).get("address")
    assert key == KEY or (declared is None and len(key) == 32)
    if declared is not None:
        assert address_of(key)[2:].lower() == declared


@given(mutated_keystores())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_malformed_keystore_files_fail_cleanly_in_the_store(tmp_path_factory: Any, keystore: Any) -> None:
    """A mutated keystore file is either refused with the wallet's own error (``KeystoreInvalid``,
    or ``WrongPassword`` once the MAC no longer matches) or, where the mutation was harmless (an
    unknown field, a changed id), unlocks to exactly the original key; and an address read from it
    without unlocking is the key's own, or unlocking refuses the file."""
    store = WalletStore(tmp_path_factory.mktemp("home"))
    store.directory.mkdir(parents=True)
    (store.directory / "w.json").write_text(json.dumps(keystore))
    try:
        loaded: Wallet | None = store.load("w", PASSWORD)
    except (KeystoreInvalid, WrongPassword) as exc:
        assert str(exc) and "\n" not in str(exc)
        loaded = None
    if loaded is not None and loaded.private_key_bytes() != KEY:
        # Only one mutation can do this: the v3 MAC covers the ciphertext, not the cipher's IV, so
        # a changed IV decrypts to other bytes under a valid MAC. It is caught by the address a
        # keystore declares (every keystore we write declares one); with none declared, the key
        # is at least the one the wallet says it is.
        assert validate_keystore(keystore).get("address") is None, "a mutated keystore unlocked to another key"
        assert loaded.address == address_of(loaded.private_key_bytes())
    try:
        declared = store.address("w")
    except KeystoreInvalid as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if loaded is not None:
        assert declared == loaded.address == address_of(KEY)


def test_unreadable_file_is_keystore_invalid(store: WalletStore) -> None:
    store.create("alice", PASSWORD)
    store.path("alice").write_bytes(b"\xff{not json")
    with pytest.raises(KeystoreInvalid, match="not JSON"):
        store.load("alice", PASSWORD)
    store.path("alice").write_text("[1, 2]")
    with pytest.raises(KeystoreInvalid):
        store.address("alice")


def test_address_field_must_match_the_key(store: WalletStore) -> None:
    store.create("alice", PASSWORD)
    keystore = store.export("alice")
    keystore["address"] = Account.from_key(KEY).address[2:]
    store.path("alice").write_text(json.dumps(keystore))
    with pytest.raises(KeystoreInvalid, match="another address"):
        store.load("alice", PASSWORD)
    with pytest.raises(KeystoreInvalid, match="another address"):
        store.import_keystore("copy", keystore, PASSWORD)


def test_address_without_address_field_says_so(store: WalletStore) -> None:
    store.directory.mkdir(parents=True)
    store.path("vector").write_text(json.dumps(VECTOR["keystore"]))
    with pytest.raises(KeystoreInvalid, match="no address field"):
        store.address("vector")

"""Web3 Secret Storage (v3) keystores: a private key encrypted under a password.

What it is for: turning a private key into the standard keystore JSON that geth, eth-account
and hardware-wallet tools read (scrypt KDF, aes-128-ctr, keccak MAC), and back. The crypto is
the ``eth_keyfile`` library's; this module only chooses parameters and checks the shape of a
keystore before handing it over, so that a malformed or hostile file (odd hex, a missing field,
scrypt parameters that would need gigabytes of memory) fails with ``KeystoreInvalid`` and a
one-line reason instead of a library traceback. A MAC mismatch is ``WrongPassword``.

scrypt's work factor ``n`` is 2**18, the v3 standard. ``INFERPAY_SCRYPT_N`` (a power of two,
at least 2**10) may lower it: that is for tests and demos only, since a low ``n`` makes a
stolen keystore cheap to brute-force.

This module must never write files, log, print or put a private key or password into an
exception message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ledger.crypto import SECP256K1_N, address_of
from ledger.errors import InvalidInput, KeystoreInvalid, WrongPassword
from ledger.types import Address, parse_address

SCRYPT_N_ENV = "INFERPAY_SCRYPT_N"
DEFAULT_SCRYPT_N = 2**18
MIN_SCRYPT_N = 2**10

# Limits on the KDF parameters we are willing to run for a keystore someone hands us. They are
# far above what standard tools write (geth/eth-account: n=2**18, r=8, p=1) but stop a crafted
# file from asking for a terabyte of memory or a day of CPU before the MAC can be checked.
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_MEMORY = 2**30  # bytes; scrypt needs 128 * r * n
MAX_SCRYPT_WORK = 2**24  # n * r * p
MAX_PBKDF2_ROUNDS = 10_000_000
MAX_SALT_BYTES = 256

_HEX = re.compile(r"[0-9a-fA-F]*")


def _bad(reason: str) -> KeystoreInvalid:
    return KeystoreInvalid(f"invalid keystore: {reason}")


# ---- choosing parameters ----


def _check_scrypt_n(n: object, source: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_SCRYPT_N or n & (n - 1):
        raise InvalidInput(f"{source} must be a power of two of at least {MIN_SCRYPT_N}, got {n!r}")
    if n > MAX_SCRYPT_N:
        raise InvalidInput(f"{source} must be at most {MAX_SCRYPT_N}, got {n!r}")
    return n


def default_scrypt_n() -> int:
    """The scrypt work factor for new keystores: 2**18, or ``INFERPAY_SCRYPT_N`` if set.

    ``INFERPAY_SCRYPT_N`` is for tests and demos only: a low work factor makes a stolen
    keystore cheap to brute-force.
    """
    raw = os.environ.get(SCRYPT_N_ENV, "").strip()
    if not raw:
        return DEFAULT_SCRYPT_N
    if not raw.isascii() or not raw.isdigit():
        raise InvalidInput(f"{SCRYPT_N_ENV} must be a power of two, got {raw!r}")
    return _check_scrypt_n(int(raw), SCRYPT_N_ENV)


def _password_bytes(password: object) -> bytes:
    # eth-account encodes text passwords as UTF-8 without normalising them; so do we, so that
    # keystores move between the two tools in both directions.
    if not isinstance(password, str):
        raise InvalidInput(f"password must be text, got {type(password).__name__}")
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("password is not valid Unicode text (lone surrogate)") from None


def check_private_key(private_key: object) -> bytes:
    """Return ``private_key`` if it is a usable secp256k1 key (32 bytes, 0 < k < n)."""
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        raise InvalidInput("private key must be 32 bytes")
    if not 0 < int.from_bytes(private_key, "big") < SECP256K1_N:
        raise InvalidInput("private key is out of range for secp256k1")
    return bytes(private_key)


def encrypt_key(private_key: bytes, password: str, *, scrypt_n: int | None = None) -> dict[str, Any]:
    """Encrypt ``private_key`` into a v3 keystore dict (scrypt, aes-128-ctr), as eth-account does.

    ``scrypt_n`` overrides the work factor (default: ``default_scrypt_n()``, normally 2**18).
    """
    key = check_private_key(private_key)
    secret = _password_bytes(password)
    n = default_scrypt_n() if scrypt_n is None else _check_scrypt_n(scrypt_n, "scrypt_n")
    from eth_keyfile.keyfile import create_keyfile_json  # lazily: it loads a BLS library (~0.5 s)

    return create_keyfile_json(key, secret, version=3, kdf="scrypt", iterations=n)


# ---- checking the shape of a keystore ----


def _lower_keys(data: object, what: str) -> dict[str, Any]:
    """Keys lowercased, as eth_keyfile reads them (geth once wrote "Crypto")."""
    if not isinstance(data, Mapping):
        raise _bad(f"{what} must be an object, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise _bad(f"{what} has a non-text key {key!r}")
        lowered = key.lower()
        if lowered in out:
            raise _bad(f"{what} has field {lowered!r} twice (differing only in case)")
        out[lowered] = value
    return out


def _field(data: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in data:
        raise _bad(f"{what} is missing {name!r}")
    return data[name]


def _hex(value: object, field: str, *, size: int | None = None, max_size: int | None = None) -> str:
    if not isinstance(value, str):
        raise _bad(f"{field} must be hex text, got {type(value).__name__}")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if _HEX.fullmatch(text) is None or len(text) % 2:
        raise _bad(f"{field} is not an even number of hex digits")
    length = len(text) // 2
    if size is not None and length != size:
        raise _bad(f"{field} must be {size} bytes, got {length}")
    if max_size is not None and not 1 <= length <= max_size:
        raise _bad(f"{field} must be 1 to {max_size} bytes, got {length}")
    return text.lower()


def _int(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{field} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        wanted = str(low) if low == high else f"between {low} and {high}"
        raise _bad(f"{field} must be {wanted}, got {value}")
    return value


def _salt(params: dict[str, Any]) -> str:
    return _hex(_field(params, "salt", "kdfparams"), "kdfparams.salt", max_size=MAX_SALT_BYTES)


def _scrypt_params(params: dict[str, Any]) -> dict[str, Any]:
    n = _int(_field(params, "n", "kdfparams"), "kdfparams.n", 2, MAX_SCRYPT_N)
    if n & (n - 1):
        raise _bad(f"kdfparams.n must be a power of two, got {n}")
    r = _int(_field(params, "r", "kdfparams"), "kdfparams.r", 1, 1024)
    p = _int(_field(params, "p", "kdfparams"), "kdfparams.p", 1, 1024)
    if 128 * r * n > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        raise _bad(f"scrypt parameters n={n} r={r} p={p} are beyond what this tool will run")
    return {
        "dklen": _int(_field(params, "dklen", "kdfparams"), "kdfparams.dklen", 32, 32),
        "n": n,
        "r": r,
        "p": p,
        "salt": _salt(params),
    }


def _pbkdf2_params(params: dict[str, Any]) -> dict[str, Any]:
    prf = _field(params, "prf", "kdfparams")
    if prf != "hmac-sha256":
        raise _bad(f"kdfparams.prf must be 'hmac-sha256', got {prf!r}")
    return {
        "c": _int(_field(params, "c", "kdfparams"), "kdfparams.c", 1, MAX_PBKDF2_ROUNDS),
        "dklen": _int(_field(params, "dklen", "kdfparams"), "kdfparams.dklen", 32, 32),
        "prf": prf,
        "salt": _salt(params),
    }


def validate_keystore(keystore: object) -> dict[str, Any]:
    """A clean copy of a v3 keystore, in eth_keyfile's layout, or ``KeystoreInvalid``.

    Field names are read case-insensitively (as eth_keyfile does); fields this module does not
    understand are left out of the copy, so nothing half-understood is stored or decrypted.
    """
    top = _lower_keys(keystore, "keystore")
    version = _field(top, "version", "keystore")
    if isinstance(version, bool) or version != 3 or not isinstance(version, int):
        raise _bad(f"version must be 3, got {version!r}")
    crypto = _lower_keys(_field(top, "crypto", "keystore"), "crypto")
    cipher = _field(crypto, "cipher", "crypto")
    if cipher != "aes-128-ctr":
        raise _bad(f"cipher must be 'aes-128-ctr', got {cipher!r}")
    cipherparams = _lower_keys(_field(crypto, "cipherparams", "crypto"), "cipherparams")
    kdf = _field(crypto, "kdf", "crypto")
    kdfparams = _lower_keys(_field(crypto, "kdfparams", "crypto"), "kdfparams")
    if kdf == "scrypt":
        clean_params = _scrypt_params(kdfparams)
    elif kdf == "pbkdf2":
        clean_params = _pbkdf2_params(kdfparams)
    else:
        raise _bad(f"kdf must be 'scrypt' or 'pbkdf2', got {kdf!r}")
    clean: dict[str, Any] = {}
    if "address" in top:
        clean["address"] = _hex(top["address"], "address", size=20)
    iv = _hex(_field(cipherparams, "iv", "cipherparams"), "cipherparams.iv", size=16)
    clean["crypto"] = {
        "cipher": cipher,
        "cipherparams": {"iv": iv},
        # A v3 keystore of a secp256k1 key always holds exactly 32 bytes.
        "ciphertext": _hex(_field(crypto, "ciphertext", "crypto"), "crypto.ciphertext", size=32),
        "kdf": kdf,
        "kdfparams": clean_params,
        "mac": _hex(_field(crypto, "mac", "crypto"), "crypto.mac", size=32),
    }
    if "id" in top:
        if not isinstance(top["id"], str):
            raise _bad(f"id must be text, got {type(top['id']).__name__}")
        clean["id"] = top["id"]
    clean["version"] = 3
    return clean


def keystore_address(keystore: Mapping[str, Any]) -> Address | None:
    """The checksummed address a validated keystore declares, or None if it declares none."""
    declared = keystore.get("address")
    if declared is None:
        return None
    return parse_address("0x" + str(declared).lower(), "keystore address")


# ---- decrypting ----


def decrypt_key(keystore: object, password: str) -> bytes:
    """The private key in ``keystore``; ``WrongPassword`` if the MAC does not match.

    Also checks that the key is a usable secp256k1 key and, if the keystore declares an
    address, that the key belongs to it.
    """
    clean = validate_keystore(keystore)
    secret = _password_bytes(password)
    from eth_keyfile.exceptions import EthKeyfileValueError
    from eth_keyfile.keyfile import decode_keyfile_json  # lazily: it loads a BLS library (~0.5 s)

    try:
        key = decode_keyfile_json(clean, secret)
    except EthKeyfileValueError:
        # After validation the only value error eth_keyfile raises for v3 is the MAC check.
        raise WrongPassword("wrong password (or the keystore's ciphertext is corrupted)") from None
    except Exception as exc:  # the shape was checked, so this is a damaged file, not a bug of ours
        raise _bad(f"could not be decrypted ({type(exc).__name__})") from None
    try:
        check_private_key(key)
    except InvalidInput:
        raise _bad("decrypts to an invalid secp256k1 private key") from None
    declared = keystore_address(clean)
    if declared is not None and declared != address_of(key):
        raise _bad(f"declares address {declared} but holds the key of another address")
    return bytes(key)

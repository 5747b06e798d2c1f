"""Where wallets live on disk: one v3 keystore per wallet at ``<home>/wallets/<name>.json``.

What it is for: creating, importing, exporting, listing and unlocking named wallets. Files are
created owner-only (0600, in a 0700 directory) and written whole or not at all (a temporary
file, fsynced, then linked into place), so a crash never leaves half a keystore and two
processes creating the same name never silently replace one key with another.

It must never overwrite or delete an existing keystore (losing one loses the money its address
holds), never write a private key or password anywhere but into an encrypted keystore, and
never log either.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import re
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

from ledger.crypto import address_of, new_private_key
from ledger.errors import InvalidInput, KeystoreInvalid, UnknownWallet, WalletError, WalletExists
from ledger.types import Address, parse_address
from wallets.keystore import decrypt_key, encrypt_key, keystore_address, validate_keystore
from wallets.wallet import Wallet

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_KEYSTORE_BYTES = 1 << 20  # a keystore is under 1 KiB; anything this big is not one
FILE_MODE = 0o600
# errno values meaning "this file system cannot make a hard link here"
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})
DIRECTORY_MODE = 0o700


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid wallet name, else raise ``InvalidInput``."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise InvalidInput(
            f"invalid wallet name {shown}: use 1-64 characters a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    if name.startswith("0x"):
        # resolve() reads anything starting with 0x as an address.
        raise InvalidInput(f"invalid wallet name {name!r}: names may not start with '0x'")
    return name


def _fsync_directory(directory: Path) -> None:
    # Makes the new directory entry durable; some platforms cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class WalletStore:
    """The wallets under one inferpay home directory."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser()
        self.directory = self.home / "wallets"

    def __repr__(self) -> str:
        return f"WalletStore({str(self.home)!r})"

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    # ---- making wallets ----

    def create(self, name: str, password: str) -> Wallet:
        """A new wallet with a fresh random key, stored encrypted under ``password``."""
        self._refuse_taken(name)
        wallet = Wallet(name, new_private_key())
        self._write_new(name, encrypt_key(wallet.private_key_bytes(), password))
        return wallet

    def import_private_key(self, name: str, key: bytes, password: str) -> Wallet:
        """Store an existing raw private key, encrypted under ``password``."""
        self._refuse_taken(name)
        wallet = Wallet(name, key)
        self._write_new(name, encrypt_key(wallet.private_key_bytes(), password))
        return wallet

    def import_keystore(self, name: str, keystore_json: object, password: str) -> Wallet:
        """Store a v3 keystore from another tool (geth, eth-account, ...) after unlocking it.

        The password is checked first, so a keystore nobody can open is never stored. What is
        stored is the validated copy, with the address filled in if the original had none.
        """
        self._refuse_taken(name)
        clean = validate_keystore(keystore_json)
        key = decrypt_key(clean, password)  # also checks a declared address against the key
        stored = {
            # eth_keyfile writes the checksummed address without its 0x; so do we.
            "address": address_of(key)[2:],
            "crypto": clean["crypto"],
            "id": clean.get("id", str(uuid.uuid4())),
            "version": 3,
        }
        self._write_new(name, stored)
        return Wallet(name, key)

    # ---- reading wallets ----

    def names(self) -> builtins.list[str]:
        """Every wallet name, sorted."""
        try:
            entries = builtins.list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise WalletError(f"cannot read {self.directory}: {exc.strerror}") from None
        found = [
            entry.stem
            for entry in entries
            if entry.suffix == ".json"
            and NAME_PATTERN.fullmatch(entry.stem)
            and not entry.stem.startswith("0x")
            and entry.is_file()
        ]
        return sorted(found)

    def export(self, name: str) -> dict[str, Any]:
        """The wallet's keystore JSON exactly as stored (still encrypted)."""
        return self._read(name)

    def address(self, name: str) -> Address:
        """The wallet's address, read from its keystore without decrypting it."""
        declared = keystore_address(validate_keystore(self._read(name)))
        if declared is None:
            raise KeystoreInvalid(
                f"wallet {name!r}: its keystore has no address field, so the address is known only after unlocking it"
            )
        return declared

    def list(self) -> builtins.list[tuple[str, Address]]:
        """(name, address) of every wallet, sorted by name."""
        return [(name, self.address(name)) for name in self.names()]

    def load(self, name: str, password: str) -> Wallet:
        """Unlock a wallet. ``WrongPassword`` on a bad password, ``UnknownWallet`` if missing."""
        # decrypt_key also refuses a key that does not match the keystore's address field.
        return Wallet(name, decrypt_key(self._read(name), password))

    def resolve(self, name_or_address: str) -> Address:
        """An address given as itself ("0x...", EIP-55 checked) or as a wallet's name."""
        if not isinstance(name_or_address, str):
            raise InvalidInput(f"expected a wallet name or an address, got {name_or_address!r}")
        if name_or_address[:2].lower() == "0x":
            return parse_address(name_or_address)
        if NAME_PATTERN.fullmatch(name_or_address) is None:
            shown = name_or_address[:80]
            raise InvalidInput(f"{shown!r} is neither a wallet name nor a 0x address")
        return self.address(name_or_address)

    # ---- files ----

    def _refuse_taken(self, name: str) -> None:
        # Checked before the slow scrypt run; _write_new checks again, atomically.
        if self.path(name).exists():
            raise WalletExists(f"a wallet named {name!r} already exists", name=name)

    def _read(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_KEYSTORE_BYTES + 1)
        except FileNotFoundError:
            message = f"no wallet named {name!r} in {self.directory}"
            raise UnknownWallet(message, name=name) from None
        except OSError as exc:
            raise WalletError(f"cannot read {path}: {exc.strerror}") from None
        if len(raw) > MAX_KEYSTORE_BYTES:
            raise KeystoreInvalid(f"{path} is too large to be a keystore")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise KeystoreInvalid(f"{path} is not JSON") from None
        if not isinstance(data, dict):
            raise KeystoreInvalid(f"{path} does not hold a JSON object")
        return data

    def _ensure_directory(self) -> Path:
        try:
            self.home.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            self.directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
            # mkdir's mode is filtered by the umask; keys must never be group/world readable.
            if stat.S_IMODE(self.directory.stat().st_mode) != DIRECTORY_MODE:
                os.chmod(self.directory, DIRECTORY_MODE)
        except OSError as exc:
            raise WalletError(f"cannot create {self.directory}: {exc.strerror}") from None
        return self.directory

    def _write_new(self, name: str, keystore: dict[str, Any]) -> None:
        """Write a new keystore file atomically, refusing to replace an existing one."""
        final = self.path(name)
        directory = self._ensure_directory()
        temporary = directory / f".{name}.{secrets.token_hex(8)}.tmp"
        payload = json.dumps(keystore).encode("utf-8")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(temporary, flags, FILE_MODE)
            try:
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), FILE_MODE)  # exactly 0600, whatever the umask
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            try:
                self._link_into_place(temporary, final, name)
            finally:
                temporary.unlink(missing_ok=True)
        except OSError as exc:
            raise WalletError(f"cannot write {final}: {exc.strerror}") from None
        _fsync_directory(directory)

    @staticmethod
    def _link_into_place(temporary: Path, final: Path, name: str) -> None:
        # A hard link is an atomic "create if absent": unlike os.replace it cannot clobber a
        # keystore another process wrote since _refuse_taken looked, which would lose a key.
        try:
            os.link(temporary, final)
        except FileExistsError:
            raise WalletExists(f"a wallet named {name!r} already exists", name=name) from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # No hard links on this file system: an atomic rename is the best left, with a
            # small window in which a concurrent create of the same name could be replaced.
            if final.exists():
                raise WalletExists(f"a wallet named {name!r} already exists", name=name) from None
            os.replace(temporary, final)

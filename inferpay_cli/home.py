"""Where a user's inferpay data lives, and how the CLI opens it.

``--home DIR`` / ``INFERPAY_HOME`` (default ``~/.inferpay``) holds the ledger database
(``ledger.db``), the wallets (``wallets/*.json``, scrypt keystores) and the sealer key
(``sealer.key``, mode 0600): the service key that seals blocks and resolves holds unattended,
kept apart from the issuer ("operator") wallet, which is password-protected and only mints.
Passwords come from ``--password-file``, ``INFERPAY_PASSWORD``, or a no-echo prompt, and are
never printed or logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from ledger.crypto import KeySigner, new_private_key
from ledger.errors import InvalidInput, LedgerNotInitialized
from ledger.ledger import Ledger
from ledger.sqlite_store import SQLiteStore
from wallets import WalletStore

OPERATOR_WALLET = "operator"


@dataclass
class Home:
    path: Path
    password_file: Path | None = None

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.db"

    @property
    def sealer_path(self) -> Path:
        return self.path / "sealer.key"

    @property
    def wallets(self) -> WalletStore:
        return WalletStore(self.path)

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def is_initialized(self) -> bool:
        return self.ledger_path.exists() and self.sealer_path.exists()

    def create_sealer_key(self) -> KeySigner:
        key = new_private_key()
        fd = os.open(self.sealer_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
        return KeySigner(key)

    def sealer(self) -> KeySigner:
        try:
            text = self.sealer_path.read_text().strip()
        except FileNotFoundError as exc:
            raise LedgerNotInitialized(f"no ledger in {self.path}: run `inferpay init`") from exc
        try:
            return KeySigner(bytes.fromhex(text))
        except ValueError as exc:
            raise InvalidInput(f"{self.sealer_path} does not hold a valid key") from exc

    def open_ledger(self, *, with_sealer: bool = True) -> Ledger:
        if not self.ledger_path.exists():
            raise LedgerNotInitialized(f"no ledger in {self.path}: run `inferpay init` (or set --home)")
        store = SQLiteStore(self.ledger_path)
        return Ledger(store, sealer=self.sealer() if with_sealer else None)

    def password(self, prompt: str, *, confirm: bool = False) -> str:
        if self.password_file is not None:
            try:
                return self.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise InvalidInput(f"cannot read password file {self.password_file}: {exc.strerror}") from exc
        env = os.environ.get("INFERPAY_PASSWORD")
        if env is not None:
            return env
        if not click.get_text_stream("stdin").isatty():
            raise InvalidInput("no password: use --password-file, set INFERPAY_PASSWORD, or run in a terminal")
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))

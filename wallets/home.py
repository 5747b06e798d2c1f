"""An inferpay home directory: the ledger database, the wallets, and the sealer key.

``ledger.db`` (SQLite), ``wallets/*.json`` (Web3 v3 keystores) and ``sealer.key`` (mode 0600):
the service key that seals blocks, resolves holds and signs receipts without a person present,
kept apart from the issuer ("operator") wallet, which is password-protected and only mints.
Shared by the CLI and the gateway; it never prompts (the CLI does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.crypto import KeySigner, new_private_key
from ledger.errors import InvalidInput, LedgerNotInitialized
from ledger.ledger import Ledger
from ledger.sqlite_store import SQLiteStore
from ledger.store import LedgerStore
from wallets.store import WalletStore

OPERATOR_WALLET = "operator"


@dataclass
class Home:
    path: Path

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

    def open_store(self) -> LedgerStore:
        if not self.ledger_path.exists():
            raise LedgerNotInitialized(f"no ledger in {self.path}: run `inferpay init` (or set --home)")
        return SQLiteStore(self.ledger_path)

    def open_ledger(self, *, with_sealer: bool = True) -> Ledger:
        store = self.open_store()
        return Ledger(store, sealer=self.sealer() if with_sealer else None)

"""An inferpay home directory: the ledger database, the wallets, and the sealer key.

``ledger.db`` (SQLite), ``wallets/*.json`` (Web3 v3 keystores), ``sealer.key`` (mode 0600):
the service key that seals blocks, resolves holds and signs receipts without a person present,
kept apart from the issuer ("operator") wallet, which is password-protected and only mints;
and ``checkpoint.key`` (mode 0600): the Ed25519 key that signs the log's C2SP checkpoints.
The ledger may live elsewhere instead: ``database`` (a ``postgresql://`` URL, or another SQLite
file) replaces ``ledger.db``; the wallets and the sealer key stay in the home directory.
Shared by the CLI and the gateway; it never prompts (the CLI does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger import LedgerStore, describe, is_postgres_url, open_store
from ledger.crypto import KeySigner, new_private_key
from ledger.errors import InvalidInput, LedgerNotInitialized, MalformedNote
from ledger.ledger import Ledger
from ledger.tlog.note import NoteSigner
from wallets.store import WalletStore

OPERATOR_WALLET = "operator"


@dataclass
class Home:
    path: Path
    database: str | None = None  # where the ledger lives, if not in ledger.db: a URL or a file

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.db"

    @property
    def ledger_location(self) -> str | Path:
        """Where this home's ledger lives: ``database`` if set, else ``ledger.db``."""
        return self.database if self.database else self.ledger_path

    @property
    def ledger_description(self) -> str:
        """The ledger's location as it is safe to print (never a database password)."""
        return describe(self.ledger_location)

    def has_local_ledger_file(self) -> bool:
        """Whether the ledger is a SQLite file that exists (a database server is asked instead)."""
        location = self.ledger_location
        return not is_postgres_url(location) and Path(location).expanduser().exists()

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

    @property
    def checkpoint_key_path(self) -> Path:
        return self.path / "checkpoint.key"

    def create_checkpoint_key(self, origin: str) -> NoteSigner:
        """The Ed25519 key that signs checkpoints (c2sp.org/signed-note), named by the log's
        origin, kept beside the sealer key in the same mode (0600); refused if one exists."""
        signer = NoteSigner.generate(origin)
        try:
            fd = os.open(self.checkpoint_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise InvalidInput(f"{self.checkpoint_key_path} already exists: a log keeps its checkpoint key") from exc
        with os.fdopen(fd, "w") as handle:
            handle.write(signer.skey + "\n")
        return signer

    def checkpoint_signer(self) -> NoteSigner | None:
        """The checkpoint key, or None for a ledger made before checkpoints (see
        ``inferpay checkpoint-key``)."""
        try:
            text = self.checkpoint_key_path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return NoteSigner.from_skey(text)
        except MalformedNote as exc:
            raise InvalidInput(f"{self.checkpoint_key_path} does not hold a valid checkpoint key") from exc

    def open_store(self) -> LedgerStore:
        """The ledger's store; a PostgreSQL ledger not initialized yet fails on first use."""
        location = self.ledger_location
        if not is_postgres_url(location) and not Path(location).expanduser().exists():
            where = self.path if self.database is None else location
            raise LedgerNotInitialized(f"no ledger in {where}: run `inferpay init` (or set --home/--database)")
        return open_store(location)

    def create_store(self) -> LedgerStore:
        """The store for a new ledger (``init``, ``import``): created if missing."""
        if self.database is None:
            self.ensure()
        return open_store(self.ledger_location)

    def open_ledger(self, *, with_sealer: bool = True) -> Ledger:
        store = self.open_store()
        return Ledger(store, sealer=self.sealer() if with_sealer else None)

"""Test helpers for ledger tests: a real SQLite ledger in a temp dir, keys, and signed messages.

Ledger-level tests sign with raw keys through ``ledger.crypto`` so they do not depend on the
wallets package; wallet tests live apart.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledger.crypto import KeySigner, address_of, new_private_key, sign_digest
from ledger.encoding import signing_digest
from ledger.ledger import Ledger, TxResult
from ledger.sqlite_store import SQLiteStore
from ledger.types import Address, Authorization, ChainInfo, Mint

UNIT = 1_000_000  # one token in base units


class FakeClock:
    """A settable clock (seconds, float) so tests can move time without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Party:
    key: bytes
    address: Address

    @classmethod
    def new(cls) -> Party:
        key = new_private_key()
        return cls(key, address_of(key))


@dataclass
class LedgerFixture:
    path: Path
    ledger: Ledger
    operator: Party
    sealer_key: bytes
    clock: FakeClock
    parties: dict[str, Party] = field(default_factory=dict)

    @property
    def chain(self) -> ChainInfo:
        return self.ledger.chain

    def party(self, name: str) -> Party:
        if name not in self.parties:
            self.parties[name] = Party.new()
        return self.parties[name]

    def mint(self, to: Address, value: int) -> TxResult:
        message = Mint(to, value, "0x" + secrets.token_hex(32))
        return self.ledger.mint(message, sign_digest(self.operator.key, signing_digest(self.chain, message)))

    def authorization(
        self, payer: Party, to: Address, value: int, *, ttl: int = 600, nonce: str | None = None,
        valid_after: int | None = None, chain: ChainInfo | None = None,
    ) -> tuple[Authorization, str]:
        now = int(self.clock())
        auth = Authorization(
            payer.address, to, value, now - 5 if valid_after is None else valid_after, now + ttl,
            nonce or "0x" + secrets.token_hex(32),
        )
        return auth, sign_digest(payer.key, signing_digest(chain or self.chain, auth))

    def transfer(self, payer: Party, to: Address, value: int, **kw: object) -> TxResult:
        auth, sig = self.authorization(payer, to, value, **kw)  # type: ignore[arg-type]
        return self.ledger.transfer(auth, sig)

    def reopen(self) -> Ledger:
        """A second Ledger on the same file (as another worker would have)."""
        return Ledger(SQLiteStore(self.path), sealer=KeySigner(self.sealer_key), clock=self.clock)


def make_ledger(directory: Path, clock: FakeClock | None = None, chain_id: int = 4242) -> LedgerFixture:
    clock = clock or FakeClock()
    operator = Party.new()
    sealer_key = new_private_key()
    path = directory / "ledger.db"
    ledger = Ledger.create(
        SQLiteStore(path), operator=operator.address, sealer=KeySigner(sealer_key), chain_id=chain_id, clock=clock
    )
    return LedgerFixture(path, ledger, operator, sealer_key, clock)


def dump(path: Path) -> list[str]:
    """Every row of every table, as SQL text: equal dumps mean the ledger is unchanged."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()

"""The narrow storage interface every ledger backend implements (SQLite now, PostgreSQL next).

A backend applies one transaction's effects atomically and durably, enforcing the money rules
in the database itself (conditional debits, unique nonces, holds resolved once), so that no
number of threads, processes or hosts can overspend. It never verifies signatures or decides
policy: ``ledger.ledger`` does that before calling it. Backends raise ``ledger.errors`` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ledger.errors import InferpayError
from ledger.types import Account, Address, ChainInfo, SignedBlock, Transaction, TxId


@dataclass(frozen=True)
class StoredTx:
    seq: int  # position in the ledger's one total order, from 1
    tx_id: TxId
    tx: Transaction
    leaf_hash: bytes
    block_height: int | None  # None until sealed


@dataclass(frozen=True)
class RawTx:
    """A stored row as it is on disk, for the auditor, which must not trust it to parse."""

    seq: int
    tx_id: str
    record: str
    leaf_hash: bytes
    block_height: int | None


@dataclass(frozen=True)
class HoldRow:
    hold_id: TxId
    payer: Address
    payee: Address
    amount: int
    expires_at_s: int  # seconds
    status: str  # open | settle | void | expire
    captured: int
    resolution_tx: TxId | None
    allowance_id: TxId | None = None  # set on API-key charges


@dataclass(frozen=True)
class AllowanceRow:
    allowance_id: TxId
    owner: Address
    spender: Address
    cap: int
    spent: int
    valid_before: int  # seconds


@dataclass(frozen=True)
class ApiKeyRow:
    key_hash: str  # SHA-256 of the key; the key itself is never stored
    key_prefix: str  # the first characters of the key, to recognise it in lists
    label: str
    created_at_ms: int  # ms
    revoked: bool
    allowance: AllowanceRow


# Builds the next block from the previous head and the transactions to seal; returns the block
# and the log tree's new compact frontier (hex hashes of perfect subtrees, left to right).
BlockMaker = Callable[[SignedBlock, list[bytes], list[str]], tuple[SignedBlock, list[str]]]


class ApiKeyStore(ABC):
    """API keys: bearer secrets standing for an allowance, kept beside the ledger in the same
    database (an allowance is a ledger transaction; the key itself is a gateway concept, stored
    only as its SHA-256). Not part of the chain: keys are never sealed or audited."""

    @abstractmethod
    def register(self, key_hash: str, key_prefix: str, allowance_id: TxId, label: str, created_at_ms: int) -> None: ...

    @abstractmethod
    def get(self, key_hash: str) -> ApiKeyRow | None: ...

    @abstractmethod
    def all(self) -> list[ApiKeyRow]:
        """Every key, oldest first."""

    @abstractmethod
    def of_owner(self, owner: Address) -> list[ApiKeyRow]:
        """The keys whose allowance ``owner`` signed, oldest first."""

    @abstractmethod
    def revoke(self, key_prefix_or_allowance: str) -> int:
        """Revoke keys by key prefix or allowance id; returns how many were revoked."""


class LedgerStore(ABC):
    # The API keys kept in this store's database (see ``ApiKeyStore``).
    api_keys: ApiKeyStore

    # Whether ``append_many`` shares one commit among its transactions (SQLite). Where it does
    # not, group commit would only serialize writers that the database runs in parallel.
    commits_batches_at_once: bool = False

    @abstractmethod
    def initialize(self, chain: ChainInfo, genesis: SignedBlock) -> None: ...

    @abstractmethod
    def chain_info(self) -> ChainInfo: ...

    @abstractmethod
    def append(self, tx: Transaction, tx_id: TxId, leaf_hash: bytes) -> tuple[StoredTx, bool]:
        """Apply and record ``tx`` atomically; ``(existing, False)`` if ``tx_id`` is already in."""

    def append_many(
        self, items: list[tuple[Transaction, TxId, bytes]], *, durable: bool = True
    ) -> list[tuple[StoredTx, bool] | InferpayError]:
        """Apply several transactions, each on its own terms: a refused one holds its error in
        its slot and changes nothing. This default commits each on its own; a store that can
        share one commit among them overrides it (and sets ``commits_batches_at_once``)."""
        outcomes: list[tuple[StoredTx, bool] | InferpayError] = []
        for item in items:
            try:
                outcomes.append(self.append(*item))
            except InferpayError as exc:
                outcomes.append(exc)
        return outcomes

    @abstractmethod
    def account(self, address: Address) -> Account: ...

    @abstractmethod
    def accounts(self) -> Iterator[Account]: ...

    @abstractmethod
    def supply(self) -> int: ...

    @abstractmethod
    def get(self, tx_id: TxId) -> StoredTx | None: ...

    @abstractmethod
    def history(self, address: Address, limit: int, before_seq: int | None = None) -> list[StoredTx]: ...

    @abstractmethod
    def hold(self, hold_id: TxId) -> HoldRow | None: ...

    @abstractmethod
    def open_holds(self, address: Address | None = None) -> list[HoldRow]: ...

    @abstractmethod
    def expired_holds(self, now_seconds: int, limit: int) -> list[HoldRow]: ...

    @abstractmethod
    def allowance(self, allowance_id: TxId) -> AllowanceRow | None: ...

    @abstractmethod
    def unsealed(self) -> tuple[int, int | None]:
        """(how many transactions wait to be sealed, acceptance time in ms of the oldest)."""

    @abstractmethod
    def seal(self, make_block: BlockMaker, max_txs: int) -> SignedBlock | None:
        """Seal up to ``max_txs`` unsealed transactions into the next block, atomically."""

    @abstractmethod
    def head(self) -> SignedBlock: ...

    @abstractmethod
    def block(self, height: int) -> SignedBlock | None: ...

    @abstractmethod
    def blocks(self, start: int, stop: int) -> list[SignedBlock]:
        """Blocks with start <= height < stop, in order."""

    @abstractmethod
    def block_transactions(self, height: int) -> list[StoredTx]: ...

    @abstractmethod
    def leaf_hashes(self, tree_size: int) -> list[bytes]:
        """The first ``tree_size`` leaf hashes of the log, in order."""

    @abstractmethod
    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]:
        """Every transaction row in order, unparsed, streamed in batches (constant memory)."""

    @abstractmethod
    def iter_nonces(self) -> Iterator[tuple[str, str]]:
        """Every used (signer, nonce), streamed."""

    @abstractmethod
    def iter_postings(self) -> Iterator[tuple[str, int]]:
        """Every (address, seq) of the account-history index, streamed."""

    @abstractmethod
    def iter_allowances(self) -> Iterator[AllowanceRow]:
        """Every allowance with what it has spent (captured plus held), streamed."""

    @abstractmethod
    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        """Every block row (height, record) in height order, unparsed."""

    @abstractmethod
    def close(self) -> None: ...

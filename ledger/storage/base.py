"""The narrow storage interface every ledger backend implements (SQLite now, PostgreSQL next).

A backend applies one transaction's effects atomically and durably, enforcing the money rules
in the database itself (conditional debits, unique nonces, holds resolved once), so that no
number of threads, processes or hosts can overspend. It never verifies signatures or decides
policy: ``ledger.ledger`` does that before calling it. Backends raise ``ledger.errors`` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ledger.errors import InferpayError
from ledger.types import (
    Account,
    Address,
    ChainInfo,
    PoolFeeInForce,
    ProviderEarnings,
    ProviderRecord,
    SignedBlock,
    Transaction,
    TxId,
)


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


class CheckpointStore(ABC):
    """The log's signed checkpoints (C2SP tlog-checkpoint notes, as bytes) with the witness
    cosignatures gathered for them, kept beside the ledger in the same database so that every
    worker and host serves the same one. Not part of the chain: a checkpoint is derived from a
    sealed head and proves nothing the head does not; it is what standard tools can check."""

    KEEP = 256  # checkpoints kept; older ones are pruned (the newest is the one that matters)

    def save(self, tree_size: int, note: bytes, updated_at_ms: int) -> None:
        """Record the note for ``tree_size``, replacing an earlier note for the same size (the
        same checkpoint with more cosignatures)."""
        self.save_many({tree_size: note}, updated_at_ms)

    @abstractmethod
    def save_many(self, notes: Mapping[int, bytes], updated_at_ms: int) -> None:
        """``save`` for several sizes in one write transaction (a new checkpoint and the
        cosignatures gathered for earlier ones, written together)."""

    @abstractmethod
    def latest(self) -> tuple[int, bytes] | None:
        """(tree size, note) of the largest checkpoint, or None before the first."""

    @abstractmethod
    def at(self, tree_size: int) -> bytes | None: ...


class FacilitatorRecordStore(ABC):
    """What an x402 facilitator remembers beyond the ledger, kept in the ledger's database so
    that every worker and every host of one ledger agrees (a verify on one host, its settle on
    another): which (payer, nonce) holds it placed itself, and the answers it gave under a
    payment identifier. Claims are first-writer-wins rows; a claim left unresolved by a worker
    that died is taken over once older than ``stale_before_ms``. Never a money rule: the
    ledger's own tables enforce those."""

    @abstractmethod
    def claim_nonce(self, payer: str, nonce: str, now_ms: int, stale_before_ms: int) -> bool:
        """True if this caller now holds the claim on (payer, nonce) and must resolve it."""

    @abstractmethod
    def nonce_state(self, payer: str, nonce: str) -> tuple[str, str | None] | None:
        """(placing | placed | foreign, hold id) of a claimed nonce, or None."""

    @abstractmethod
    def resolve_nonce(self, payer: str, nonce: str, state: str, hold_id: str | None) -> None: ...

    @abstractmethod
    def release_nonce(self, payer: str, nonce: str) -> None:
        """Forget an unresolved claim (the ledger refused the hold: the nonce is unused)."""

    @abstractmethod
    def claim_payment_id(self, payment_id: str, operation: str, digest: str, now_ms: int, stale_before_ms: int) -> bool:
        """True if this caller claimed (payment id, operation) and must answer it; raises
        ``IdempotencyConflict`` when the id was used with another request digest."""

    @abstractmethod
    def payment_answer(self, payment_id: str, operation: str) -> str | None:
        """The JSON answer recorded for (payment id, operation), or None while unanswered."""

    @abstractmethod
    def answer_payment_id(self, payment_id: str, operation: str, answer: str) -> None: ...

    @abstractmethod
    def release_payment_id(self, payment_id: str, operation: str) -> None:
        """Forget an unanswered claim (no answer was given: the next request is answered afresh)."""

    @abstractmethod
    def prune(self, claimed_before_ms: int) -> int:
        """Delete records claimed before ``claimed_before_ms``; returns how many."""


class LedgerStore(ABC):
    # What an x402 facilitator remembers, in this store's database (see ``FacilitatorRecordStore``).
    facilitator: FacilitatorRecordStore
    # The API keys kept in this store's database (see ``ApiKeyStore``).
    api_keys: ApiKeyStore
    # The log's signed checkpoints kept in this store's database (see ``CheckpointStore``).
    checkpoints: CheckpointStore

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

    # ---- the compute pool: what is in force now, and running totals ----

    @abstractmethod
    def provider(self, address: Address) -> ProviderRecord | None:
        """``address``'s registration in force (withdrawn ones too) and approval, or None."""

    @abstractmethod
    def providers(self) -> list[ProviderRecord]:
        """Every provider that ever registered, in order of first registration."""

    @abstractmethod
    def pool_fee(self) -> PoolFeeInForce: ...

    @abstractmethod
    def provider_earnings(self, address: Address) -> ProviderEarnings: ...

    @abstractmethod
    def operator_fees(self) -> int:
        """The sum of every pool fee ever credited."""

    @abstractmethod
    def pool_version(self) -> int:
        """A number that changes whenever a registration, approval or pool fee is accepted."""

    # The pool's derived tables, whole, for the auditor to compare with history (small tables:
    # one row per provider, per fee payee, per (settle, payee) that refunded).

    @abstractmethod
    def provider_approvals(self) -> dict[Address, bool]: ...

    @abstractmethod
    def all_provider_earnings(self) -> dict[Address, ProviderEarnings]: ...

    @abstractmethod
    def operator_fees_by_payee(self) -> dict[Address, int]: ...

    @abstractmethod
    def refunds_by_settle(self) -> dict[tuple[TxId, Address], tuple[int, int]]:
        """(settle id, payee) -> (what the settle credited it, what it refunded of that)."""

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
    def log_leaf_hashes(self, start: int, stop: int) -> list[bytes]:
        """Leaf hashes of log entries ``start <= index < stop`` (sealed entries only; fewer
        when the log is shorter). The log index is an entry's position in the one log tree."""

    @abstractmethod
    def log_records(self, start: int, stop: int) -> list[str]:
        """The stored records of log entries ``start <= index < stop``, as ``log_leaf_hashes``."""

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

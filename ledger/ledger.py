"""The ledger service: the one door through which transactions enter, and through which
blocks, proofs and balances come out.

It validates (``ledger.validation``), then asks the store to apply atomically; the store
enforces the money rules in the database. It signs only with the sealer key it was given
(blocks, hold resolutions); it never holds a user's or the issuer's key.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ledger import merkle
from ledger.addresses import to_checksum_address
from ledger.amounts import INT64_MAX
from ledger.blocks import Signer, genesis_block, inclusion_proof_dict, next_block
from ledger.clock import MsClock, ms_to_s, system_now_ms
from ledger.encoding import leaf_hash, signing_digest, transaction_id
from ledger.errors import (
    FeeNotInForce,
    InferpayError,
    InvalidInput,
    LedgerNotInitialized,
    NotFound,
    RegistrationNotInForce,
)
from ledger.group_commit import GroupCommitter
from ledger.keccak import keccak
from ledger.pool import split_amounts
from ledger.pool_state import PoolBook, RegistrationInForce
from ledger.storage.base import LedgerStore, StoredTx
from ledger.types import (
    Account,
    Address,
    Allowance,
    Authorization,
    ChainInfo,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    PoolFeeInForce,
    PoolMessage,
    ProviderApproval,
    ProviderEarnings,
    ProviderRecord,
    SignatureHex,
    SignedBlock,
    SplitSettlement,
    Transaction,
    TxId,
    TxKind,
    parse_address,
    parse_bytes32,
)
from ledger.validation import check_signature, check_transaction


@dataclass(frozen=True)
class TxResult:
    """What a caller gets back for an accepted transaction (or for a retry of one)."""

    tx_id: TxId
    seq: int
    kind: str
    duplicate: bool  # True when this exact transaction was already in the ledger
    block_height: int | None
    # ``settle_split`` only: the split it recorded (both payees, both amounts, for the receipt),
    # so the caller need not read it back. Not part of ``to_dict``.
    split: SplitSettlement | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "txId": self.tx_id,
            "seq": self.seq,
            "kind": self.kind,
            "duplicate": self.duplicate,
            "blockHeight": self.block_height,
        }


def _in_force(record: ProviderRecord) -> RegistrationInForce:
    return RegistrationInForce(
        record.registration_id, record.registration, record.registered_at_ms, record.updated_at_ms
    )


def token_address_for(operator: Address, chain_id: int) -> Address:
    """The ledger's token address (EIP-712 verifyingContract): derived, so it is reproducible."""
    digest = keccak(b"inferpay.token.v1" + bytes.fromhex(operator[2:]) + chain_id.to_bytes(32, "big"))
    return Address(to_checksum_address(digest[-20:]))


def random_chain_id() -> int:
    # Above the range public EVM chains use, so a signature here cannot be replayed there.
    return 1_000_000_000 + secrets.randbelow(1_000_000_000)


# A split is re-priced when a new pool fee landed between reading the fee and writing the split.
# Each retry means the operator recorded yet another fee meanwhile (a rare, human act), so a few
# are plenty; more than this many in one call's lifetime means something is wrong.
FEE_RACE_ATTEMPTS = 16


# Batches shorter than this are verified on the calling thread: a handoff costs more than it saves.
_PARALLEL_VERIFY_AFTER = 64
_verifier_lock = threading.Lock()
_verifier: tuple[int, ThreadPoolExecutor] | None = None  # (the process it was made in, the pool)


def _verifier_pool() -> ThreadPoolExecutor:
    """One pool of verifying threads per process, made on first use (and again in a forked
    child, which inherits the pool object but not its threads)."""
    global _verifier
    with _verifier_lock:
        if _verifier is None or _verifier[0] != os.getpid():
            pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="inferpay-verify")
            _verifier = (os.getpid(), pool)
        return _verifier[1]


def _signature_verdicts(chain: ChainInfo, txs: Sequence[Transaction]) -> list[InferpayError | None]:
    verdicts: list[InferpayError | None] = []
    for tx in txs:
        try:
            check_signature(chain, tx)
        except InferpayError as exc:
            verdicts.append(exc)
        else:
            verdicts.append(None)
    return verdicts


class _Verdicts:
    """Each transaction's signature verdict (None: signed as required), once ``result`` is called."""

    def __init__(self, parts: list[Future[list[InferpayError | None]]] | list[InferpayError | None]) -> None:
        self._parts = parts

    def result(self) -> list[InferpayError | None]:
        out: list[InferpayError | None] = []
        for part in self._parts:
            if isinstance(part, Future):
                out.extend(part.result())
            else:
                out.append(part)
        return out


def _verify_signatures(chain: ChainInfo, txs: list[Transaction]) -> _Verdicts:
    """Start verifying each signature of ``txs`` (``check_signature``: the required signer, low-S,
    recovery); libsecp256k1 releases the GIL while it recovers, so the pool's threads recover in
    parallel with each other and with the caller, who collects the verdicts with ``result()``."""
    if len(txs) < _PARALLEL_VERIFY_AFTER:
        return _Verdicts(_signature_verdicts(chain, txs))
    pool = _verifier_pool()
    size = -(-len(txs) // (4 * (os.cpu_count() or 1)))  # a few parts per thread: none idles long
    return _Verdicts([pool.submit(_signature_verdicts, chain, txs[i : i + size]) for i in range(0, len(txs), size)])


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        *,
        sealer: Signer | None = None,
        clock: MsClock = system_now_ms,
        block_max_txs: int = 1000,
        group_commit: bool = False,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock  # integer milliseconds (ledger.clock): every stored time is read from it
        self.block_max_txs = block_max_txs
        self._chain: ChainInfo | None = None
        self._seal_lock = threading.Lock()
        # Long-running multi-threaded servers share commits (ledger.group_commit); a CLI does not need to.
        self._committer = GroupCommitter(store) if group_commit and store.commits_batches_at_once else None

    @classmethod
    def create(
        cls,
        store: LedgerStore,
        *,
        operator: Address,
        sealer: Signer,
        chain_id: int | None = None,
        clock: MsClock = system_now_ms,
    ) -> Ledger:
        chain_id = chain_id if chain_id is not None else random_chain_id()
        if not 0 < chain_id <= INT64_MAX:
            raise InvalidInput(f"chain id must be between 1 and 2**63-1, got {chain_id}")
        chain = ChainInfo(
            chain_id=chain_id,
            token_address=token_address_for(operator, chain_id),
            operator=operator,
            sealer=sealer.address,
        )
        store.initialize(chain, genesis_block(chain, sealer, clock()))
        return cls(store, sealer=sealer, clock=clock)

    @property
    def chain(self) -> ChainInfo:
        if self._chain is None:
            self._chain = self.store.chain_info()
        return self._chain

    def now_ms(self) -> int:
        """The ledger's clock, in integer milliseconds (what ``accepted_at_ms`` records)."""
        return self.clock()

    def now_s(self) -> int:
        """The ledger's clock in whole seconds (floor), the unit of signed windows and expiries."""
        return ms_to_s(self.clock())

    # ---- writes ----

    def submit(self, tx: Transaction) -> TxResult:
        """Validate and record ``tx``. A retry of the same transaction returns the first result."""
        return self._submit(tx, signed_here=False)

    def _submit(self, tx: Transaction, *, signed_here: bool) -> TxResult:
        tx_id = transaction_id(tx)
        now_ms = self.now_ms()
        stamped = Transaction(tx.kind, tx.message, tx.signer, tx.signature, now_ms, tx.hold_expires_at_s)
        try:
            check_transaction(self.chain, stamped, ms_to_s(now_ms), signature=not signed_here)
        except InferpayError:
            # A retry of a stored transaction may be past its window by now: it is answered with
            # the first result, if it too is properly signed. Only a refused one pays for this
            # lookup: a valid retry is found by the store, under the write lock, and answered
            # the same way (a paid call's hold saves a read per call).
            existing = None if signed_here else self.store.get(tx_id)
            if existing is None:
                raise
            check_signature(self.chain, tx)
            return TxResult(tx_id, existing.seq, existing.tx.kind, True, existing.block_height)
        append = self._committer.append if self._committer is not None else self.store.append
        stored, created = append(stamped, tx_id, leaf_hash(stamped))
        return TxResult(tx_id, stored.seq, stored.tx.kind, not created, stored.block_height)

    def submit_many(self, txs: list[Transaction]) -> list[TxResult | InferpayError]:
        """Validate and record a batch, each on its own terms (a refused one is refused alone and
        its slot holds the error), with one durable commit for the lot where the store can
        (SQLite); for bulk ingest: imports, back-fills, a client's queued payments. A transaction
        already in the ledger is answered with its first result, as ``submit`` does.

        Every signature is verified, as ``submit`` verifies it, but the batch's signatures are
        verified on threads (``_verify_signatures``) while this thread computes ids and leaf
        hashes: libsecp256k1's recovery, most of a transfer's cost, runs without the GIL."""
        results: list[TxResult | InferpayError | None] = [None] * len(txs)
        now_ms = self.now_ms()
        now_s = ms_to_s(now_ms)
        checked: list[tuple[int, Transaction]] = []
        refused: list[tuple[int, InferpayError]] = []
        for index, tx in enumerate(txs):
            try:
                stamped = Transaction(tx.kind, tx.message, tx.signer, tx.signature, now_ms, tx.hold_expires_at_s)
                check_transaction(self.chain, stamped, now_s, signature=False)  # the signature: below
            except InferpayError as exc:
                refused.append((index, exc))
                continue
            checked.append((index, stamped))
        verdicts = _verify_signatures(self.chain, [stamped for _, stamped in checked])
        identities = [(transaction_id(stamped), leaf_hash(stamped)) for _, stamped in checked]
        batch: list[tuple[Transaction, TxId, bytes]] = []
        slots: list[int] = []
        for (index, stamped), verdict, (tx_id, leaf) in zip(checked, verdicts.result(), identities, strict=True):
            if verdict is not None:
                refused.append((index, verdict))
                continue
            batch.append((stamped, tx_id, leaf))
            slots.append(index)
        for index, reason in sorted(refused, key=lambda item: item[0]):
            # A retry of a stored one may be past its window by now: answer it as submit does.
            try:
                results[index] = self.submit(txs[index])
            except InferpayError:
                results[index] = reason
        for index, outcome in zip(slots, self.store.append_many(batch), strict=True):
            if isinstance(outcome, InferpayError):
                results[index] = outcome
            else:
                stored, created = outcome
                results[index] = TxResult(stored.tx_id, stored.seq, stored.tx.kind, not created, stored.block_height)
        return [r for r in results if r is not None]

    def mint(self, mint: Mint, signature: SignatureHex) -> TxResult:
        return self.submit(Transaction("mint", mint, self.chain.operator, signature))

    def transfer(self, auth: Authorization, signature: SignatureHex) -> TxResult:
        return self.submit(Transaction("transfer", auth, auth.from_, signature))

    def hold(
        self, auth: Authorization | Permit2Authorization, signature: SignatureHex, *, expires_at_s: int | None = None
    ) -> TxResult:
        """Reserve what ``auth`` authorizes (an EIP-3009 ``value``, or a Permit2's permitted
        ``amount``: x402 upto's most) of the payer's balance until ``expires_at_s`` (at most the
        authorization's validBefore, or the Permit2's deadline, which is the default)."""
        kind: TxKind = "hold" if isinstance(auth, Authorization) else "permit2_hold"
        bound = auth.valid_before if isinstance(auth, Authorization) else auth.deadline
        # validBefore and deadline may be any uint256; a stored expiry is a signed 64-bit number of seconds.
        expiry = min(bound if expires_at_s is None else min(expires_at_s, bound), INT64_MAX)
        return self.submit(Transaction(kind, auth, auth.from_, signature, 0, expiry))

    def _resolve(self, hold_id: TxId, outcome: str, amount: int) -> TxResult:
        resolution = HoldResolution(parse_bytes32(hold_id, "holdId"), outcome, amount)  # type: ignore[arg-type]
        signer = self._require_sealer()
        signature = signer.sign_digest(signing_digest(self.chain, resolution))
        tx = Transaction(outcome, resolution, signer.address, signature)  # type: ignore[arg-type]
        return self._submit(tx, signed_here=True)

    def settle(self, hold_id: TxId, amount: int) -> TxResult:
        """Capture ``amount`` (<= the hold) for the payee; the rest goes back to the payer."""
        return self._resolve(hold_id, "settle", amount)

    def void(self, hold_id: TxId) -> TxResult:
        return self._resolve(hold_id, "void", 0)

    def expire_holds(self, limit: int = 1000) -> list[TxResult]:
        """Release every hold past its expiry, each exactly once (a hold resolved meanwhile by
        another process is skipped: its resolution conflicts and changes nothing)."""
        from ledger.errors import IdempotencyConflict

        results = []
        for hold in self.store.expired_holds(self.now_s(), limit):
            try:
                results.append(self._resolve(hold.hold_id, "expire", 0))
            except IdempotencyConflict:
                continue
        return results

    def grant_allowance(self, allowance: Allowance, signature: SignatureHex) -> TxResult:
        """Record a payer-signed spending allowance (what an API key charges against)."""
        return self.submit(Transaction("allowance", allowance, allowance.owner, signature))

    def charge(self, allowance_id: TxId, amount: int, *, expires_at_s: int, request_id: str | None = None) -> TxResult:
        """Hold ``amount`` against an allowance (signed by the sealer) until ``expires_at_s``
        (seconds); settle, void or expire it like any hold. Never past the allowance's cap, its
        expiry or the owner's balance: what is held counts against the cap until released."""
        charge = Charge(parse_bytes32(allowance_id, "allowanceId"), amount, request_id or "0x" + secrets.token_hex(32))
        signer = self._require_sealer()
        signature = signer.sign_digest(signing_digest(self.chain, charge))
        return self._submit(Transaction("charge", charge, signer.address, signature, 0, expires_at_s), signed_here=True)

    # ---- the compute pool ----

    def _sign_and_submit(self, kind: TxKind, message: PoolMessage) -> TxResult:
        signer = self._require_sealer()
        signature = signer.sign_digest(signing_digest(self.chain, message))
        return self._submit(Transaction(kind, message, signer.address, signature), signed_here=True)

    def set_pool_fee(self, fee_bps: int, flat_fee: int) -> TxResult:
        """Record the operator's fee on every later split (sealer-signed): ``flat_fee`` base units
        plus ``fee_bps`` (at most 10000) of the provider's price, each rounded up (``ledger.pool``)."""
        return self._sign_and_submit("pool_fee", PoolFee(fee_bps, flat_fee, "0x" + secrets.token_hex(32)))

    def approve_provider(self, address: Address, approved: bool) -> TxResult:
        """Record whether ``address`` may be routed to by gateways that accept listed providers
        only (sealer-signed); the newest approval is in force."""
        provider = parse_address(address, "provider")
        return self._sign_and_submit(
            "provider_approval", ProviderApproval(provider, approved, "0x" + secrets.token_hex(32))
        )

    def settle_split(
        self,
        hold_id: TxId,
        *,
        provider: Address,
        registration_id: TxId,
        input_tokens: int,
        output_tokens: int,
        usage_capped: bool,
    ) -> TxResult:
        """Settle a pool call's hold: the provider's price for this usage (under its registration
        in force) to the provider, the pool fee in force to the hold's payee, the rest back to the
        payer, in one entry on the same (group-committed, durable) path as ``settle``. Raises,
        changing nothing, if the registration is not the one in force or is withdrawn, or the
        total exceeds the hold; the store checks all of it again under its locks, so a fee or
        registration recorded meanwhile makes this refuse rather than misprice."""
        provider = parse_address(provider, "provider")
        registration_id = parse_bytes32(registration_id, "registrationId")
        record = self.store.provider(provider)
        if record is None:
            raise RegistrationNotInForce(f"{provider} has no registration", provider=provider)
        for attempt in range(FEE_RACE_ATTEMPTS):
            fee = self.store.pool_fee()
            amount, provider_amount, fee_units = split_amounts(record.registration, fee, input_tokens, output_tokens)
            split = SplitSettlement(
                hold_id=parse_bytes32(hold_id, "holdId"),
                amount=amount,
                provider=provider,
                registration_id=registration_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                usage_capped=bool(usage_capped),
                provider_amount=provider_amount,
                fee=fee_units,
                fee_id=fee.fee_id,
            )
            PoolBook(registrations={provider: _in_force(record)}, fee=fee).check_split(split)  # the clear error, early
            try:
                return dataclasses.replace(self._sign_and_submit("split_settle", split), split=split)
            except FeeNotInForce:
                # A new pool fee was recorded between reading it and writing: it is the one in
                # force at this split's place in the log, so the split is priced by it.
                if attempt == FEE_RACE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def providers(self) -> list[ProviderRecord]:
        """Every provider that ever registered, with its registration in force (withdrawn ones
        included: ``registration.status`` says) and the operator's approval."""
        return self.store.providers()

    def provider(self, address: Address) -> ProviderRecord:
        provider = parse_address(address, "provider")
        record = self.store.provider(provider)
        if record is None:
            raise NotFound(f"{provider} is not a registered provider", address=provider)
        return record

    def pool_fee_in_force(self) -> PoolFeeInForce:
        return self.store.pool_fee()

    def provider_earnings(self, address: Address) -> ProviderEarnings:
        return self.store.provider_earnings(parse_address(address, "address"))

    def operator_fees(self) -> int:
        """The sum of every pool fee ever credited to the operator's pay-to address(es)."""
        return self.store.operator_fees()

    def pool_version(self) -> int:
        """Changes whenever a registration, approval or pool fee is accepted (one cheap read):
        a gateway polls it and reloads its provider table when it moves."""
        return self.store.pool_version()

    def _require_sealer(self) -> Signer:
        if self.sealer is None:
            raise LedgerNotInitialized("this ledger was opened without its sealer key")
        if self.sealer.address != self.chain.sealer:
            raise InvalidInput(f"sealer key {self.sealer.address} is not this chain's sealer {self.chain.sealer}")
        return self.sealer

    # ---- blocks ----

    def seal(self) -> SignedBlock | None:
        """Seal up to ``block_max_txs`` waiting transactions into one block (None if none wait)."""
        signer = self._require_sealer()

        def make(previous: SignedBlock, leaves: list[bytes], frontier: list[str]) -> tuple[SignedBlock, list[str]]:
            return next_block(previous, leaves, frontier, signer, self.now_ms())

        with self._seal_lock:
            return self.store.seal(make, self.block_max_txs)

    def seal_all(self) -> list[SignedBlock]:
        sealed = []
        while (block := self.seal()) is not None:
            sealed.append(block)
        return sealed

    def maybe_seal(self, *, max_age_ms: int, max_txs: int) -> list[SignedBlock]:
        """Auto-sealing policy: seal when enough transactions wait, or the oldest waited long enough."""
        count, oldest = self.store.unsealed()
        # A negative age means the clock stepped back since the oldest was accepted: seal anyway
        # rather than wait for the clock to catch up.
        age = self.now_ms() - oldest if oldest is not None else max_age_ms
        if count and (count >= max_txs or age >= max_age_ms or age < 0):
            return self.seal_all()
        return []

    def head(self) -> SignedBlock:
        return self.store.head()

    # ---- reads and proofs ----

    def balance(self, address: Address) -> Account:
        return self.store.account(address)

    def transaction(self, tx_id: TxId) -> StoredTx:
        stored = self.store.get(parse_bytes32(tx_id, "transaction id"))
        if stored is None:
            raise NotFound(f"no transaction {tx_id}", tx_id=tx_id)
        return stored

    def inclusion_proof(self, tx_id: TxId) -> dict[str, Any]:
        stored = self.transaction(tx_id)
        if stored.block_height is None:
            raise NotFound(f"transaction {tx_id} is not sealed into a block yet", tx_id=tx_id)
        block = self.store.block(stored.block_height)
        txs = self.store.block_transactions(stored.block_height)
        if block is None:
            raise NotFound(f"block {stored.block_height} is missing")
        index = next(i for i, t in enumerate(txs) if t.tx_id == stored.tx_id)
        return inclusion_proof_dict(block, index, [t.leaf_hash for t in txs], stored.tx.to_dict())

    def consistency_proof(self, old_height: int, new_height: int) -> dict[str, Any]:
        old, new = self.store.block(old_height), self.store.block(new_height)
        if old is None or new is None:
            raise NotFound(f"no block at height {old_height if old is None else new_height}")
        if old_height > new_height:
            raise InvalidInput("the first head must not be newer than the second")
        leaves = self.store.leaf_hashes(new.header.tree_size)
        proof = merkle.consistency_proof(leaves, old.header.tree_size)
        return {"old": old.to_dict(), "new": new.to_dict(), "proof": ["0x" + h.hex() for h in proof]}

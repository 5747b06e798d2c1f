"""What the explorer shows, read from the ledger and shaped for its templates.

Everything here is already public on the ledger API (``gateway.server.ledger_api``): blocks,
transactions, accounts, holds (a hold and its resolution are two public transactions), API-key
summaries (``/ledger/accounts/<address>/api-keys``) and the route terms every 402 offer
publishes. This module must never read a keystore, the sealer key, an API key, its hash or
label, or a route's upstream URL (it may carry credentials). Amounts stay ``int`` base units;
only the templates turn them into token text (``ledger.amounts.format_amount``, exact).

Reads are bounded: the charts look back at most ``SCAN_LIMIT`` transactions, and one page view
makes one query per hold or allowance it names (cached for the request).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.server.config import Route
from ledger import AllowanceRow, HoldRow, Ledger, StoredTx
from ledger.amounts import format_amount
from ledger.blocks import check_block_signature, verify_inclusion
from ledger.errors import InferpayError
from ledger.merkle import merkle_root
from ledger.types import (
    SETTLE_KINDS,
    Address,
    Allowance,
    Authorization,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SignedBlock,
    SplitSettlement,
    Transaction,
    TxId,
)

SCAN_LIMIT = 5000  # the most transactions a chart reads back
HOUR_MS = 3_600_000


def tokens_text(units: int) -> str:
    """Both exact forms of an amount, as text: "0.01 tokens (10,000 base units)"."""
    return f"{format_amount(units)} tokens ({units:,} base units)"


def utc_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_s(seconds: int) -> str:
    if not 0 <= seconds <= 253402300799:  # what datetime can show (the year 9999)
        return f"{seconds} s"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class HistoryRow:
    """One transaction as a line of a table: who paid whom, how much, and (seen from one
    account) how it changed that account's available balance."""

    seq: int
    tx_id: TxId
    block_height: int | None
    kind: str
    accepted_at_ms: int
    from_: Address
    to: Address
    amount: int  # the amount the transaction itself names (value, cap, captured; 0 for void/expire)
    hold_id: TxId | None
    available_change: int | None  # for the account the table is about; None elsewhere

    def csv_row(self) -> list[str]:
        return [
            str(self.seq),
            self.tx_id,
            "" if self.block_height is None else str(self.block_height),
            self.kind,
            str(self.accepted_at_ms),
            self.from_,
            self.to,
            str(self.amount),
            format_amount(self.amount),
            "" if self.available_change is None else str(self.available_change),
            self.hold_id or "",
        ]


CSV_HEADER = [
    "seq",
    "tx_id",
    "block_height",
    "kind",
    "accepted_at_ms",
    "from",
    "to",
    "amount_base_units",
    "amount_tokens",
    "available_change_base_units",
    "hold_id",
]


@dataclass(frozen=True)
class StoryStep:
    """One step of a hold's life: placed, then settled, voided, expired (or still open)."""

    label: str
    text: str
    tx_id: TxId | None
    at_ms: int | None
    current: bool = False


@dataclass(frozen=True)
class ProofCheck:
    ok: bool
    words: str  # what was checked, in a sentence; or why it failed
    proof: dict[str, object] | None = None


@dataclass(frozen=True)
class TxView:
    stored: StoredTx
    row: HistoryRow
    parties: list[tuple[str, Address]]
    facts: list[tuple[str, str]]  # (label, text): windows, nonces, expiries
    story: list[StoryStep]
    proof: ProofCheck | None  # None while unsealed


@dataclass(frozen=True)
class BlockCheck:
    ok: bool
    lines: list[tuple[bool, str]]


@dataclass
class Reader:
    """The ledger's reads for one page, with the holds and allowances it looks up cached."""

    ledger: Ledger
    _holds: dict[TxId, HoldRow | None] = field(default_factory=dict)
    _allowances: dict[TxId, AllowanceRow | None] = field(default_factory=dict)

    def hold(self, hold_id: TxId) -> HoldRow | None:
        if hold_id not in self._holds:
            self._holds[hold_id] = self.ledger.store.hold(hold_id)
        return self._holds[hold_id]

    def allowance(self, allowance_id: TxId) -> AllowanceRow | None:
        if allowance_id not in self._allowances:
            self._allowances[allowance_id] = self.ledger.store.allowance(allowance_id)
        return self._allowances[allowance_id]

    # ---- one transaction as a row ----

    def row(self, stored: StoredTx, account: Address | None = None) -> HistoryRow:
        tx = stored.tx
        message = tx.message
        hold_id: TxId | None = None
        if isinstance(message, Mint):
            from_, to, amount = tx.signer, message.to, message.value
        elif isinstance(message, Authorization):
            from_, to, amount = message.from_, message.to, message.value
            hold_id = stored.tx_id if tx.kind == "hold" else None
        elif isinstance(message, Permit2Authorization):  # an x402 upto hold: reserves its most
            from_, to, amount, hold_id = message.from_, message.to, message.amount, stored.tx_id
        elif isinstance(message, Allowance):
            from_, to, amount = message.owner, message.spender, message.cap
        elif isinstance(message, Charge):
            allowance = self.allowance(message.allowance_id)
            from_ = allowance.owner if allowance else ""
            to = allowance.spender if allowance else ""
            amount, hold_id = message.amount, stored.tx_id
        elif isinstance(message, SplitSettlement):  # the payer pays the provider (and the operator its fee)
            hold = self.hold(message.hold_id)
            from_, to = (hold.payer if hold else ""), message.provider
            amount, hold_id = message.amount, message.hold_id
        elif isinstance(message, ProviderRegistration):
            from_, to, amount = message.provider, "", message.price_per_call
        elif isinstance(message, ProviderApproval):
            from_, to, amount = tx.signer, message.provider, 0
        elif isinstance(message, PoolFee):
            from_, to, amount = tx.signer, "", message.flat_fee
        elif isinstance(message, Redeem):  # burnt: to nobody
            from_, to, amount = message.from_, "", message.value
        elif isinstance(message, Refund):
            from_, to, amount = message.from_, self._settle_payer(message.settle_id), message.value
        else:
            assert isinstance(message, HoldResolution)
            hold = self.hold(message.hold_id)
            from_, to = (hold.payer, hold.payee) if hold else ("", "")
            amount, hold_id = message.amount, message.hold_id
        change = None if account is None else self._available_change(tx, account, from_, to, hold_id)
        return HistoryRow(
            stored.seq,
            stored.tx_id,
            stored.block_height,
            tx.kind,
            tx.accepted_at_ms,
            from_,
            to,
            amount,
            hold_id,
            change,
        )

    def _settle_payer(self, settle_id: TxId) -> Address:
        """Who paid the settle ``settle_id`` (what a refund of it gives back to)."""
        settle = self.ledger.store.get(settle_id)
        message = settle.tx.message if settle is not None else None
        hold = self.hold(message.hold_id) if isinstance(message, HoldResolution | SplitSettlement) else None
        return hold.payer if hold is not None else ""

    def _available_change(
        self, tx: Transaction, account: Address, from_: Address, to: Address, hold_id: TxId | None
    ) -> int:
        """How ``tx`` moved ``account``'s available balance (held funds are not available)."""
        message = tx.message
        change = 0
        if isinstance(message, SplitSettlement):
            hold = self.hold(message.hold_id)
            if hold is not None:
                if hold.payer == account:
                    change += hold.amount - message.amount
                if hold.payee == account:
                    change += message.fee
            if message.provider == account:
                change += message.provider_amount
            return change
        if isinstance(message, Redeem | Refund):
            return (-message.value if from_ == account else 0) + (message.value if to == account else 0)
        if isinstance(message, Permit2Authorization):
            return -message.amount if from_ == account else 0
        if isinstance(message, Mint | Authorization | Charge):
            amount = message.value if isinstance(message, Mint | Authorization) else message.amount
            if from_ == account and tx.kind != "mint":
                change -= amount  # a transfer leaves; a hold or charge moves to held
            if to == account and tx.kind in ("mint", "transfer"):
                change += amount
        elif isinstance(message, HoldResolution):
            hold = self.hold(message.hold_id)
            if hold is not None:
                if hold.payer == account:
                    change += hold.amount - message.amount  # what is released comes back
                if hold.payee == account:
                    change += message.amount  # what is captured arrives
        return change

    # ---- one transaction in full ----

    def view(self, stored: StoredTx) -> TxView:
        tx = stored.tx
        row = self.row(stored)
        parties = self._parties(tx, row)
        facts: list[tuple[str, str]] = [("signed by", tx.signer)]
        message = tx.message
        if isinstance(message, Authorization):
            facts += [
                ("valid after (s)", str(message.valid_after)),
                ("valid before (s)", str(message.valid_before)),
                ("nonce", message.nonce),
            ]
        elif isinstance(message, Allowance):
            facts += [("valid before (s)", str(message.valid_before)), ("nonce", message.nonce)]
        elif isinstance(message, Mint):
            facts += [("nonce", message.nonce)]
        elif isinstance(message, Charge):
            facts += [("allowance", message.allowance_id), ("request id", message.request_id)]
        else:
            facts += _pool_facts(message)
        if tx.hold_expires_at_s is not None:
            facts.append(("hold expires at (s)", str(tx.hold_expires_at_s)))
        story = self._story(stored, row) if row.hold_id else []
        return TxView(stored, row, parties, facts, story, self.proof(stored))

    def _parties(self, tx: Transaction, row: HistoryRow) -> list[tuple[str, Address]]:
        roles = {
            "mint": ("issuer", "recipient"),
            "transfer": ("payer", "payee"),
            "hold": ("payer", "payee"),
            "permit2_hold": ("payer", "payee"),
            "charge": ("payer (key owner)", "payee (allowance spender)"),
            "settle": ("payer", "payee"),
            "void": ("payer", "payee"),
            "expire": ("payer", "payee"),
            "allowance": ("owner", "spender"),
            "split_settle": ("payer", "provider"),
            "provider_registration": ("provider", "(none)"),
            "provider_approval": ("operator (sealer)", "provider"),
            "pool_fee": ("operator (sealer)", "(none)"),
            "redeem": ("holder", "(burnt)"),
            "refund": ("payee refunding", "payer refunded"),
        }[tx.kind]
        return [(roles[0], row.from_), (roles[1], row.to)]

    def _story(self, stored: StoredTx, row: HistoryRow) -> list[StoryStep]:
        assert row.hold_id is not None
        hold = self.hold(row.hold_id)
        placed = stored if stored.tx_id == row.hold_id else self.ledger.store.get(row.hold_id)
        if hold is None or placed is None:
            return []
        steps: list[StoryStep] = []
        if isinstance(placed.tx.message, Charge):
            steps.append(
                StoryStep(
                    "allowance",
                    "charged against an allowance the payer signed (an API key)",
                    placed.tx.message.allowance_id,
                    None,
                )
            )
        steps.append(
            StoryStep(
                "held",
                f"{tokens_text(hold.amount)} moved from available to held, until {utc_s(hold.expires_at_s)}",
                hold.hold_id,
                placed.tx.accepted_at_ms,
                current=stored.tx_id == hold.hold_id,
            )
        )
        if hold.status == "open":
            steps.append(
                StoryStep("open", f"not resolved yet; it expires by itself at {utc_s(hold.expires_at_s)}", None, None)
            )
            return steps
        resolution = self.ledger.store.get(hold.resolution_tx) if hold.resolution_tx else None
        released = hold.amount - hold.captured
        split = resolution.tx.message if resolution is not None else None
        text = {
            "settle": (
                f"{tokens_text(hold.captured)} captured for the payee, {tokens_text(released)} released to the payer"
            ),
            "void": f"voided: all {tokens_text(hold.amount)} released to the payer, nothing charged",
            "expire": f"expired unresolved: all {tokens_text(hold.amount)} released to the payer",
        }[hold.status]
        if isinstance(split, SplitSettlement):
            text = (
                f"{tokens_text(hold.captured)} captured: {tokens_text(split.provider_amount)} to provider"
                f" {split.provider}, {tokens_text(split.fee)} pool fee to the payee;"
                f" {tokens_text(released)} released to the payer"
            )
        steps.append(
            StoryStep(
                {"settle": "settled", "void": "voided", "expire": "expired"}[hold.status],
                text,
                hold.resolution_tx,
                resolution.tx.accepted_at_ms if resolution else None,
                current=stored.tx_id == hold.resolution_tx,
            )
        )
        return steps

    def proof(self, stored: StoredTx) -> ProofCheck | None:
        """The inclusion proof the ledger API serves, checked here end to end (the same check as
        ``inferpay tx`` and the SDK's ``verify_receipt_inclusion``)."""
        if stored.block_height is None:
            return None
        try:
            proof = self.ledger.inclusion_proof(stored.tx_id)
            block = verify_inclusion(proof, self.ledger.chain)
        except InferpayError as exc:
            return ProofCheck(False, f"The inclusion proof does not check: {exc.message}")
        path = proof["auditPath"]
        assert isinstance(path, list)
        words = (
            f"Verified: this transaction hashes to leaf {proof['leafHash']}, number {proof['leafIndex']} of "
            f"{block.header.tx_count} in block {block.header.height}; its audit path of {len(path)} "
            f"hash{'es' if len(path) != 1 else ''} leads to that block's Merkle root {block.header.merkle_root}; "
            f"and the block's hash {block.block_hash} is signed by the chain's sealer {block.sealer}."
        )
        return ProofCheck(True, words, proof)

    # ---- blocks ----

    def check_block(self, block: SignedBlock) -> BlockCheck:
        """The sealer's signature, the Merkle root of the block's own transactions, and the link to
        the block before: what ``inferpay verify`` checks for this one block."""
        lines: list[tuple[bool, str]] = []
        sealer = self.ledger.chain.sealer
        try:
            check_block_signature(block, sealer)
            lines.append((True, f"the header hashes to {block.block_hash}, signed by the chain's sealer {sealer}"))
        except InferpayError as exc:
            lines.append((False, f"signature check failed: {exc.message}"))
        txs = self.ledger.store.block_transactions(block.header.height)
        if block.header.height == 0:
            lines.append((True, "the genesis block: it commits to the chain's identity and holds no transactions"))
        else:
            root = "0x" + merkle_root([t.leaf_hash for t in txs]).hex()
            ok = root == block.header.merkle_root and len(txs) == block.header.tx_count
            lines.append(
                (ok, f"its {len(txs)} transactions' leaf hashes give the Merkle root {root}")
                if ok
                else (False, f"its {len(txs)} transactions give the Merkle root {root}, not the header's")
            )
            previous = self.ledger.store.block(block.header.height - 1)
            linked = previous is not None and previous.block_hash == block.header.prev_hash
            lines.append(
                (linked, f"it links to block {block.header.height - 1} by that block's hash {block.header.prev_hash}")
                if linked
                else (False, f"its previous hash {block.header.prev_hash} is not block {block.header.height - 1}'s")
            )
        return BlockCheck(all(ok for ok, _ in lines), lines)

    def sealed_in_last(self, window_ms: int, now_ms: int) -> int:
        """Transactions sealed into blocks stamped in the last ``window_ms``: the head's log size
        minus that of the newest block older than the window (found by bisection on heights)."""
        head = self.ledger.head()
        cutoff = now_ms - window_ms
        if head.header.timestamp_ms <= cutoff:
            return 0
        low, high = 0, head.header.height  # invariant: block ``high`` is inside the window
        while high - low > 1:
            middle = (low + high) // 2
            block = self.ledger.store.block(middle)
            if block is not None and block.header.timestamp_ms <= cutoff:
                low = middle
            else:
                high = middle
        start = self.ledger.store.block(low)
        before = start.header.tree_size if start is not None and start.header.timestamp_ms <= cutoff else 0
        return head.header.tree_size - before

    # ---- charts ----

    def walk_history(self, account: Address, since_ms: int) -> Iterator[StoredTx]:
        """The account's history newest first, back to ``since_ms`` or ``SCAN_LIMIT`` entries."""
        before: int | None = None
        seen = 0
        while seen < SCAN_LIMIT:
            page = self.ledger.store.history(account, min(500, SCAN_LIMIT - seen), before)
            for stored in page:
                if stored.tx.accepted_at_ms < since_ms:
                    return
                yield stored
            seen += len(page)
            if len(page) < 500:
                return
            before = page[-1].seq

    def spend_per_hour(self, account: Address, now_ms: int, hours: int = 24) -> list[int]:
        """Base units ``account`` paid (captured from its holds by settles) in each of the last
        ``hours`` hours, oldest first; the last bucket is the hour up to now."""
        start = now_ms - hours * HOUR_MS
        buckets = [0] * hours
        for stored in self.walk_history(account, start):
            message = stored.tx.message
            if isinstance(message, HoldResolution | SplitSettlement) and message.amount:
                hold = self.hold(message.hold_id)
                if hold is not None and hold.payer == account:
                    index = (stored.tx.accepted_at_ms - start) // HOUR_MS
                    buckets[min(max(index, 0), hours - 1)] += message.amount
        return buckets

    def recent_transactions(self) -> Iterator[StoredTx]:
        """The last ``SCAN_LIMIT`` transactions (sealed or not), oldest first."""
        waiting, _ = self.ledger.store.unsealed()
        total = self.ledger.head().header.tree_size + waiting  # seq is gap-free from 1
        for raw in self.ledger.store.iter_raw_transactions(after_seq=max(0, total - SCAN_LIMIT)):
            yield StoredTx(
                raw.seq, raw.tx_id, Transaction.from_dict(json.loads(raw.record)), raw.leaf_hash, raw.block_height
            )


def _pool_facts(message: object) -> list[tuple[str, str]]:
    """What the explorer shows of a compute-pool entry beyond its parties and amount."""
    if isinstance(message, ProviderRegistration):
        return [
            ("endpoint", message.endpoint),
            ("models", ", ".join(message.models)),
            ("price per call", tokens_text(message.price_per_call)),
            ("price per 1k input tokens", tokens_text(message.price_per_1k_input)),
            ("price per 1k output tokens", tokens_text(message.price_per_1k_output)),
            ("capacity", str(message.capacity) if message.capacity else "unstated"),
            ("status", message.status),
            ("nonce", message.nonce),
        ]
    if isinstance(message, ProviderApproval):
        return [("approved", "yes" if message.approved else "no"), ("nonce", message.nonce)]
    if isinstance(message, PoolFee):
        return [("fee (basis points)", str(message.fee_bps)), ("flat fee", tokens_text(message.flat_fee))]
    if isinstance(message, SplitSettlement):
        return [
            ("registration", message.registration_id),
            ("input / output tokens", f"{message.input_tokens} / {message.output_tokens}"),
            ("usage capped", "yes" if message.usage_capped else "no"),
            ("to the provider", tokens_text(message.provider_amount)),
            ("pool fee", tokens_text(message.fee)),
            ("pool fee entry", message.fee_id),
        ]
    if isinstance(message, Redeem):
        return [("payout reference", message.payout_reference), ("nonce", message.nonce)]
    if isinstance(message, Refund):
        return [("refund of settle", message.settle_id), ("nonce", message.nonce)]
    return []


@dataclass(frozen=True)
class RouteUsage:
    label: str  # the route path(s) offering these terms
    authorized: int  # what a call authorizes (the flat price, or a metered route's max_amount)
    calls: int
    revenue: int  # base units captured


def route_usage(reader: Reader, routes: tuple[Route, ...], pay_to: Address, since_ms: int) -> list[RouteUsage]:
    """Settled calls and revenue per route since ``since_ms``, derived from the ledger alone.

    The ledger does not record which route a call was for (a bound payment commits to the
    request only through a hash in its nonce). What it does record is the amount each hold
    reserved, and every route announces in its 402 offer the amount a call must authorize: the
    flat price, or a metered route's ``max_amount``. So a settled hold made out to this gateway
    is counted for the route(s) whose authorized amount it reserved; routes with the same terms
    share one line (labelled with all their paths), and a hold matching no route (an API key's
    charge capped below the route's maximum by what the key had left, or terms changed since) is
    counted under "other amounts".
    """
    by_amount: dict[int, list[str]] = {}
    for route in routes:
        if not route.free:
            by_amount.setdefault(route.authorized_amount, []).append(route.path)
    reserved: dict[TxId, int] = {}
    counts: dict[int | None, list[int]] = {}
    for stored in reader.recent_transactions():
        tx, message = stored.tx, stored.tx.message
        if isinstance(message, Authorization) and tx.kind == "hold" and message.to == pay_to:
            reserved[stored.tx_id] = message.value
        elif isinstance(message, Charge):
            allowance = reader.allowance(message.allowance_id)
            if allowance is not None and allowance.spender == pay_to:
                reserved[stored.tx_id] = message.amount
        elif (
            tx.kind in SETTLE_KINDS
            and tx.accepted_at_ms >= since_ms
            and isinstance(message, HoldResolution | SplitSettlement)
        ):
            amount = reserved.get(message.hold_id)
            if amount is None:  # held before the window
                hold = reader.hold(message.hold_id)
                amount = hold.amount if hold is not None and hold.payee == pay_to else None
            if amount is None:
                continue
            key = amount if amount in by_amount else None
            tally = counts.setdefault(key, [0, 0])
            tally[0] += 1
            tally[1] += message.amount
    usage = [
        RouteUsage(", ".join(paths), amount, *counts.get(amount, [0, 0])) for amount, paths in sorted(by_amount.items())
    ]
    if None in counts:
        usage.append(RouteUsage("other amounts", 0, *counts[None]))
    return usage

"""The ledger's domain objects: frozen dataclasses with strict ``to_dict`` / ``from_dict``.

``from_dict`` rejects unknown keys, missing keys and wrong types with ``MalformedRecord``
(or a more specific error), so nothing half-understood ever reaches the ledger. On the wire
and in stored records amounts and times are decimal strings (as x402 sends them), in memory
they are ``int``. Bytes that are hashed or signed are made in ``ledger.encoding``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ledger.amounts import INT64_MAX
from ledger.errors import MalformedRecord

# The field parsers live in ledger.parsing; re-exported here, where callers have always found them.
from ledger.parsing import UINT256_MAX as UINT256_MAX
from ledger.parsing import exact_keys as exact_keys
from ledger.parsing import parse_address as parse_address
from ledger.parsing import parse_bytes32 as parse_bytes32
from ledger.parsing import parse_signature as parse_signature
from ledger.parsing import parse_str as parse_str
from ledger.parsing import parse_uint as parse_uint
from ledger.parsing import parse_value as parse_value

# The compute pool's records (ledger.pool_types), re-exported: this is where callers find types.
from ledger.pool_types import NO_FEE_ID as NO_FEE_ID
from ledger.pool_types import NO_POOL_FEE as NO_POOL_FEE
from ledger.pool_types import POOL_CONFIG_KINDS as POOL_CONFIG_KINDS
from ledger.pool_types import POOL_KINDS as POOL_KINDS
from ledger.pool_types import POOL_MESSAGE_BY_KIND
from ledger.pool_types import PoolFee as PoolFee
from ledger.pool_types import PoolFeeInForce as PoolFeeInForce
from ledger.pool_types import PoolMessage as PoolMessage
from ledger.pool_types import ProviderApproval as ProviderApproval
from ledger.pool_types import ProviderEarnings as ProviderEarnings
from ledger.pool_types import ProviderRecord as ProviderRecord
from ledger.pool_types import ProviderRegistration as ProviderRegistration
from ledger.pool_types import Redeem as Redeem
from ledger.pool_types import Refund as Refund
from ledger.pool_types import SplitSettlement as SplitSettlement

Address = str  # EIP-55 checksummed "0x" + 40 hex
Amount = int  # base units, 6 decimals
TxId = str  # "0x" + 64 hex: SHA-256 of the transaction's signed content
Bytes32Hex = str  # "0x" + 64 hex
SignatureHex = str  # "0x" + 130 hex: r || s || v (v = 27 or 28)

TxKind = Literal[
    "mint",
    "transfer",
    "hold",
    "permit2_hold",
    "settle",
    "void",
    "expire",
    "allowance",
    "charge",
    "provider_registration",
    "provider_approval",
    "pool_fee",
    "split_settle",
    "redeem",
    "refund",
]
TX_KINDS: tuple[str, ...] = (
    "mint",
    "transfer",
    "hold",
    "permit2_hold",
    "settle",
    "void",
    "expire",
    "allowance",
    "charge",
    *POOL_KINDS,
)
# Each ends a hold (once): what is captured goes to the payee(s), the rest back to the payer.
RESOLUTION_KINDS = frozenset({"settle", "split_settle", "void", "expire"})
# A refund may name one of these: the entries that credit a payee from a payer's hold.
SETTLE_KINDS = frozenset({"settle", "split_settle"})
# Each reserves funds until settled, voided or expired.
HOLD_KINDS = frozenset({"hold", "permit2_hold", "charge"})

# x402's `upto` scheme signs Permit2 (Uniswap's, the same address on every EVM chain) for the
# x402 upto proxy contract to spend. On this ledger neither is a contract: they are names inside
# the signed struct, and the ledger itself plays the proxy (hold up to the permitted amount,
# capture what the call cost, release the rest). Written here, not imported from the x402 SDK:
# the ledger depends on no client library; tests check they equal the SDK's constants.
PERMIT2_ADDRESS: Address = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_PERMIT2_PROXY_ADDRESS: Address = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
PERMIT2_NONCE_PREFIX = "permit2:"


# ---- what users and the operator sign ----


@dataclass(frozen=True)
class Authorization:
    """EIP-3009 TransferWithAuthorization: exactly what x402 clients sign (times in seconds)."""

    from_: Address
    to: Address
    value: Amount
    valid_after: int
    valid_before: int
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {
            "from": self.from_,
            "to": self.to,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, data: object) -> Authorization:
        d = exact_keys(data, {"from", "to", "value", "validAfter", "validBefore", "nonce"}, "authorization")
        return cls(
            from_=parse_address(d["from"], "from"),
            to=parse_address(d["to"], "to"),
            value=parse_value(d["value"], "value"),
            valid_after=parse_uint(d["validAfter"], "validAfter"),
            valid_before=parse_uint(d["validBefore"], "validBefore"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class Permit2Authorization:
    """A Permit2 ``PermitWitnessTransferFrom`` with x402's upto witness: exactly what the official
    x402 ``upto`` client signs, under Permit2's own EIP-712 domain (``ledger.encoding``).

    ``from_`` lets ``spender`` (the x402 upto proxy) move at most ``amount`` of ``token`` to
    ``to``, settled only by ``facilitator``, from ``valid_after`` until ``deadline`` (seconds).
    ``from_`` is not part of the signed struct (Permit2 recovers the owner from the signature);
    the ledger requires the signature to recover to it. ``nonce`` is Permit2's uint256, once
    ever per owner (``nonce_key``). The dict form is the x402 payload's ``permit2Authorization``.
    """

    from_: Address
    token: Address
    amount: Amount  # the most that may be captured (permitted.amount)
    spender: Address
    nonce: int  # uint256
    deadline: int  # seconds, uint256
    to: Address  # witness.to: the payee
    facilitator: Address  # witness.facilitator: the only party that may settle it
    valid_after: int  # witness.validAfter, seconds, uint256

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_,
            "permitted": {"token": self.token, "amount": str(self.amount)},
            "spender": self.spender,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
            "witness": {"to": self.to, "facilitator": self.facilitator, "validAfter": str(self.valid_after)},
        }

    @classmethod
    def from_dict(cls, data: object) -> Permit2Authorization:
        d = exact_keys(data, {"from", "permitted", "spender", "nonce", "deadline", "witness"}, "permit2Authorization")
        permitted = exact_keys(d["permitted"], {"token", "amount"}, "permit2Authorization.permitted")
        witness = exact_keys(d["witness"], {"to", "facilitator", "validAfter"}, "permit2Authorization.witness")
        return cls(
            from_=parse_address(d["from"], "from"),
            token=parse_address(permitted["token"], "permitted.token"),
            amount=parse_value(permitted["amount"], "permitted.amount"),
            spender=parse_address(d["spender"], "spender"),
            nonce=parse_uint(d["nonce"], "nonce"),
            deadline=parse_uint(d["deadline"], "deadline"),
            to=parse_address(witness["to"], "witness.to"),
            facilitator=parse_address(witness["facilitator"], "witness.facilitator"),
            valid_after=parse_uint(witness["validAfter"], "witness.validAfter"),
        )

    @property
    def nonce_key(self) -> str:
        """How the ledger's nonce table keeps this nonce: ``permit2:<decimal>``, a namespace of its
        own, so that Permit2 nonce N can never collide with an EIP-3009 nonce (always 0x + 64
        hex) of the same payer, whatever the numbers."""
        return f"{PERMIT2_NONCE_PREFIX}{self.nonce}"


@dataclass(frozen=True)
class Mint:
    """Operator-signed issuance of new tokens."""

    to: Address
    value: Amount
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {"to": self.to, "value": str(self.value), "nonce": self.nonce}

    @classmethod
    def from_dict(cls, data: object) -> Mint:
        d = exact_keys(data, {"to", "value", "nonce"}, "mint")
        return cls(
            to=parse_address(d["to"], "to"),
            value=parse_value(d["value"], "value"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class HoldResolution:
    """Operator-signed end of a hold: settle (capture ``amount``), void, or expire (amount 0)."""

    hold_id: TxId
    outcome: Literal["settle", "void", "expire"]
    amount: Amount

    def to_dict(self) -> dict[str, str]:
        return {"holdId": self.hold_id, "outcome": self.outcome, "amount": str(self.amount)}

    @classmethod
    def from_dict(cls, data: object) -> HoldResolution:
        d = exact_keys(data, {"holdId", "outcome", "amount"}, "resolution")
        outcome = parse_str(d["outcome"], "outcome", ("settle", "void", "expire"))
        return cls(
            hold_id=parse_bytes32(d["holdId"], "holdId"),
            outcome=outcome,  # type: ignore[arg-type]
            amount=parse_value(d["amount"], "amount"),
        )


@dataclass(frozen=True)
class Allowance:
    """A payer-signed spending allowance: ``spender`` may charge ``owner`` up to ``cap`` in total,
    until ``valid_before`` (seconds). What an API key stands for."""

    owner: Address
    spender: Address
    cap: Amount
    valid_before: int
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {
            "owner": self.owner,
            "spender": self.spender,
            "cap": str(self.cap),
            "validBefore": str(self.valid_before),
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, data: object) -> Allowance:
        d = exact_keys(data, {"owner", "spender", "cap", "validBefore", "nonce"}, "allowance")
        return cls(
            owner=parse_address(d["owner"], "owner"),
            spender=parse_address(d["spender"], "spender"),
            cap=parse_value(d["cap"], "cap"),
            valid_before=parse_uint(d["validBefore"], "validBefore", INT64_MAX),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class Charge:
    """A sealer-signed charge against an allowance for one request (``request_id``): it holds
    ``amount`` (the most the request may cost) of the owner's balance and of the allowance, and
    is then settled, voided or expired like any hold."""

    allowance_id: TxId
    amount: Amount
    request_id: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {"allowanceId": self.allowance_id, "amount": str(self.amount), "requestId": self.request_id}

    @classmethod
    def from_dict(cls, data: object) -> Charge:
        d = exact_keys(data, {"allowanceId", "amount", "requestId"}, "charge")
        return cls(
            allowance_id=parse_bytes32(d["allowanceId"], "allowanceId"),
            amount=parse_value(d["amount"], "amount"),
            request_id=parse_bytes32(d["requestId"], "requestId"),
        )


Message = Authorization | Permit2Authorization | Mint | HoldResolution | Allowance | Charge | PoolMessage
_MESSAGE_BY_KIND: dict[str, Any] = {
    **POOL_MESSAGE_BY_KIND,
    "allowance": Allowance,
    "charge": Charge,
    "mint": Mint,
    "transfer": Authorization,
    "hold": Authorization,
    "permit2_hold": Permit2Authorization,
    "settle": HoldResolution,
    "void": HoldResolution,
    "expire": HoldResolution,
}


@dataclass(frozen=True)
class Transaction:
    """One ledger entry: a signed message, who signed it, and what the ledger added.

    ``hold_expires_at_s`` is set only on holds; the operator chooses it, the payer's
    signature bounds it (never after the authorization's validBefore, or a Permit2's deadline). ``accepted_at_ms``
    is the ledger's clock when the entry was accepted; it is not part of the transaction id,
    so a retried submission maps to the same id.
    """

    kind: TxKind
    message: Message
    signer: Address
    signature: SignatureHex
    accepted_at_ms: int = 0
    hold_expires_at_s: int | None = None

    def __post_init__(self) -> None:
        # A transaction whose kind disagrees with its message could never be read back.
        if self.kind not in _MESSAGE_BY_KIND or not isinstance(self.message, _MESSAGE_BY_KIND[self.kind]):
            raise MalformedRecord(f"a {self.kind!r} transaction cannot carry a {type(self.message).__name__}")
        if isinstance(self.message, HoldResolution) and self.message.outcome != self.kind:
            raise MalformedRecord(f"transaction kind {self.kind!r} carries a {self.message.outcome!r} resolution")
        if (self.kind in HOLD_KINDS) != (self.hold_expires_at_s is not None):
            raise MalformedRecord("holdExpiresAt is required on holds and charges, and only on them")
        if self.hold_expires_at_s is not None and not 0 <= self.hold_expires_at_s <= INT64_MAX:
            raise MalformedRecord("holdExpiresAt must be between 0 and 2**63-1 seconds")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "message": self.message.to_dict(),
            "signer": self.signer,
            "signature": self.signature,
            "acceptedAt": str(self.accepted_at_ms),
        }
        if self.hold_expires_at_s is not None:
            out["holdExpiresAt"] = str(self.hold_expires_at_s)
        return out

    @classmethod
    def from_dict(cls, data: object) -> Transaction:
        d = exact_keys(
            data,
            {"kind", "message", "signer", "signature", "acceptedAt"},
            "transaction",
            frozenset({"holdExpiresAt"}),
        )
        kind = parse_str(d["kind"], "kind", TX_KINDS)
        message = _MESSAGE_BY_KIND[kind].from_dict(d["message"])
        if isinstance(message, HoldResolution) and message.outcome != kind:
            raise MalformedRecord(f"transaction kind {kind!r} carries a {message.outcome!r} resolution")
        expires = d.get("holdExpiresAt")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            message=message,
            signer=parse_address(d["signer"], "signer"),
            signature=parse_signature(d["signature"]),
            accepted_at_ms=parse_uint(d["acceptedAt"], "acceptedAt", INT64_MAX),
            hold_expires_at_s=None if expires is None else parse_uint(expires, "holdExpiresAt", INT64_MAX),
        )


def used_nonce(message: Message) -> str | None:
    """The key of its signer's nonce that ``message`` uses, once ever (the store's nonce table
    and the auditor key on it); None for the sealer's resolutions (split ones too) and charges,
    which use none: a hold is resolved once, a charge names its request."""
    if isinstance(message, Permit2Authorization):
        return message.nonce_key
    if isinstance(message, Authorization | Mint | Allowance):
        return message.nonce
    if isinstance(message, ProviderRegistration | ProviderApproval | PoolFee | Redeem | Refund):
        return message.nonce
    return None


@dataclass(frozen=True)
class BlockHeader:
    """What the sealer signs. ``merkle_root`` covers this block's transactions; ``tree_size`` and
    ``tree_root`` cover every transaction since genesis (one RFC 6962 log), which is what makes
    consistency proofs between two heads possible. ``timestamp`` is in milliseconds."""

    height: int
    prev_hash: Bytes32Hex
    merkle_root: Bytes32Hex
    timestamp_ms: int
    tx_count: int
    tree_size: int
    tree_root: Bytes32Hex

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "prevHash": self.prev_hash,
            "merkleRoot": self.merkle_root,
            "timestamp": self.timestamp_ms,
            "txCount": self.tx_count,
            "treeSize": self.tree_size,
            "treeRoot": self.tree_root,
        }

    @classmethod
    def from_dict(cls, data: object) -> BlockHeader:
        d = exact_keys(
            data,
            {"height", "prevHash", "merkleRoot", "timestamp", "txCount", "treeSize", "treeRoot"},
            "block header",
        )
        return cls(
            height=parse_uint(d["height"], "height", INT64_MAX),
            prev_hash=parse_bytes32(d["prevHash"], "prevHash"),
            merkle_root=parse_bytes32(d["merkleRoot"], "merkleRoot"),
            timestamp_ms=parse_uint(d["timestamp"], "timestamp", INT64_MAX),
            tx_count=parse_uint(d["txCount"], "txCount", INT64_MAX),
            tree_size=parse_uint(d["treeSize"], "treeSize", INT64_MAX),
            tree_root=parse_bytes32(d["treeRoot"], "treeRoot"),
        )


@dataclass(frozen=True)
class SignedBlock:
    """A header, its hash and the sealer's signature over that hash. The latest one is the head."""

    header: BlockHeader
    block_hash: Bytes32Hex
    sealer: Address
    signature: SignatureHex

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "hash": self.block_hash,
            "sealer": self.sealer,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: object) -> SignedBlock:
        d = exact_keys(data, {"header", "hash", "sealer", "signature"}, "block")
        return cls(
            header=BlockHeader.from_dict(d["header"]),
            block_hash=parse_bytes32(d["hash"], "hash"),
            sealer=parse_address(d["sealer"], "sealer"),
            signature=parse_signature(d["signature"]),
        )


@dataclass(frozen=True)
class ChainInfo:
    """Fixed at ``init``: the EIP-712 domain every signature is made under, and the operator."""

    chain_id: int
    token_address: Address
    operator: Address  # the issuer: signs mints; its keystore is password-protected
    sealer: Address  # the service key: seals blocks, resolves holds, signs receipts unattended
    name: str = "inferpay"
    version: str = "1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chainId": self.chain_id,
            "tokenAddress": self.token_address,
            "operator": self.operator,
            "sealer": self.sealer,
            "name": self.name,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: object) -> ChainInfo:
        d = exact_keys(data, {"chainId", "tokenAddress", "operator", "sealer", "name", "version"}, "chain info")
        return cls(
            chain_id=parse_uint(d["chainId"], "chainId"),
            token_address=parse_address(d["tokenAddress"], "tokenAddress"),
            operator=parse_address(d["operator"], "operator"),
            sealer=parse_address(d["sealer"], "sealer"),
            name=parse_str(d["name"], "name"),
            version=parse_str(d["version"], "version"),
        )


@dataclass(frozen=True)
class Account:
    address: Address
    available: Amount
    held: Amount

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "available": str(self.available), "held": str(self.held)}

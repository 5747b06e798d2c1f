"""The compute pool's domain objects: what providers, the operator and payees sign, and what the
ledger answers about providers. Re-exported from ``ledger.types``, where every caller finds them.

Dict forms follow the ledger's other records: camelCase keys, integers as decimal strings, booleans
as JSON booleans, and ``from_dict`` rejects unknown, missing and mistyped fields
(``MalformedRecord``). What a field may hold beyond its type (an endpoint that is a URL, models
that are printable, a fee of at most 100 %) is checked in ``ledger.validation``, so the auditor
reports a stored record that breaks it by rule rather than as unreadable.
This module must never make signed bytes (``ledger.encoding``) or touch balances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ledger.amounts import INT64_MAX
from ledger.errors import MalformedRecord
from ledger.parsing import exact_keys, parse_address, parse_bytes32, parse_str, parse_uint

if TYPE_CHECKING:  # the aliases live at the top of ledger.types, which imports this module
    from ledger.types import Address, Amount, Bytes32Hex, TxId

ProviderStatus = Literal["active", "withdrawn"]
PROVIDER_STATUSES: tuple[str, ...] = ("active", "withdrawn")
NO_FEE_ID = "0x" + "00" * 32  # the feeId a split names when no pool_fee was ever recorded
MAX_MODELS = 64
MAX_MODEL_NAME = 128
MAX_ENDPOINT = 2048
MAX_PAYOUT_REFERENCE = 256
MAX_FEE_BPS = 10_000


def parse_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedRecord(f"{field}: expected true or false, got {value!r}")
    return value


def _int64(value: object, field: str) -> int:
    return parse_uint(value, field, INT64_MAX)


def _models(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
        raise MalformedRecord(f"models: expected a list of model names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ProviderRegistration:
    """A provider's signed offer: where it serves (an OpenAI-compatible base URL), which models,
    at what prices (base units per call, per 1000 input and per 1000 output tokens), how many
    concurrent calls (0: unstated). Its newest registration in log order is in force; status
    "withdrawn" takes it out of the pool."""

    provider: Address
    endpoint: str
    models: tuple[str, ...]
    price_per_call: Amount
    price_per_1k_input: Amount
    price_per_1k_output: Amount
    capacity: int
    status: ProviderStatus
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "models": list(self.models),
            "pricePerCall": str(self.price_per_call),
            "pricePer1kInput": str(self.price_per_1k_input),
            "pricePer1kOutput": str(self.price_per_1k_output),
            "capacity": str(self.capacity),
            "status": self.status,
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, data: object) -> ProviderRegistration:
        d = exact_keys(
            data,
            {
                "provider",
                "endpoint",
                "models",
                "pricePerCall",
                "pricePer1kInput",
                "pricePer1kOutput",
                "capacity",
                "status",
                "nonce",
            },
            "provider registration",
        )
        return cls(
            provider=parse_address(d["provider"], "provider"),
            endpoint=parse_str(d["endpoint"], "endpoint"),
            models=_models(d["models"]),
            price_per_call=_int64(d["pricePerCall"], "pricePerCall"),
            price_per_1k_input=_int64(d["pricePer1kInput"], "pricePer1kInput"),
            price_per_1k_output=_int64(d["pricePer1kOutput"], "pricePer1kOutput"),
            capacity=_int64(d["capacity"], "capacity"),
            status=parse_str(d["status"], "status", PROVIDER_STATUSES),  # type: ignore[arg-type]
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class ProviderApproval:
    """The operator's (sealer-signed) word on whether a provider may be routed to when the
    gateway accepts only listed providers; the newest per provider is in force."""

    provider: Address
    approved: bool
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "approved": self.approved, "nonce": self.nonce}

    @classmethod
    def from_dict(cls, data: object) -> ProviderApproval:
        d = exact_keys(data, {"provider", "approved", "nonce"}, "provider approval")
        return cls(
            provider=parse_address(d["provider"], "provider"),
            approved=parse_bool(d["approved"], "approved"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class PoolFee:
    """The operator's fee on every later split: ``flat_fee`` base units plus ``fee_bps``
    hundredths of a percent of the provider's price (``ledger.pool.pool_fee_amount``)."""

    fee_bps: int
    flat_fee: Amount
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {"feeBps": str(self.fee_bps), "flatFee": str(self.flat_fee), "nonce": self.nonce}

    @classmethod
    def from_dict(cls, data: object) -> PoolFee:
        d = exact_keys(data, {"feeBps", "flatFee", "nonce"}, "pool fee")
        return cls(
            fee_bps=_int64(d["feeBps"], "feeBps"),
            flat_fee=_int64(d["flatFee"], "flatFee"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class SplitSettlement:
    """The sealer's end of a pool call's hold: capture ``amount`` from the payer, of which
    ``provider_amount`` goes to ``provider`` (its price under ``registration_id`` for the usage
    recorded) and ``fee`` to the hold's payee (the operator, under the pool fee ``fee_id``); the
    rest of the hold goes back to the payer. ``usage_capped``: the provider reported more usage
    than the request allowed and was charged at the bounds."""

    hold_id: TxId
    amount: Amount
    provider: Address
    registration_id: TxId
    input_tokens: int
    output_tokens: int
    usage_capped: bool
    provider_amount: Amount
    fee: Amount
    fee_id: TxId

    def to_dict(self) -> dict[str, Any]:
        return {
            "holdId": self.hold_id,
            "amount": str(self.amount),
            "provider": self.provider,
            "registrationId": self.registration_id,
            "inputTokens": str(self.input_tokens),
            "outputTokens": str(self.output_tokens),
            "usageCapped": self.usage_capped,
            "providerAmount": str(self.provider_amount),
            "fee": str(self.fee),
            "feeId": self.fee_id,
        }

    @classmethod
    def from_dict(cls, data: object) -> SplitSettlement:
        d = exact_keys(
            data,
            {
                "holdId",
                "amount",
                "provider",
                "registrationId",
                "inputTokens",
                "outputTokens",
                "usageCapped",
                "providerAmount",
                "fee",
                "feeId",
            },
            "split settlement",
        )
        return cls(
            hold_id=parse_bytes32(d["holdId"], "holdId"),
            amount=_int64(d["amount"], "amount"),
            provider=parse_address(d["provider"], "provider"),
            registration_id=parse_bytes32(d["registrationId"], "registrationId"),
            input_tokens=_int64(d["inputTokens"], "inputTokens"),
            output_tokens=_int64(d["outputTokens"], "outputTokens"),
            usage_capped=parse_bool(d["usageCapped"], "usageCapped"),
            provider_amount=_int64(d["providerAmount"], "providerAmount"),
            fee=_int64(d["fee"], "fee"),
            fee_id=parse_bytes32(d["feeId"], "feeId"),
        )


@dataclass(frozen=True)
class Redeem:
    """A holder burns ``value`` of its balance for an off-ledger payout the operator makes under
    ``payout_reference``; total supply goes down by ``value``."""

    from_: Address
    value: Amount
    payout_reference: str
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {
            "from": self.from_,
            "value": str(self.value),
            "payoutReference": self.payout_reference,
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, data: object) -> Redeem:
        d = exact_keys(data, {"from", "value", "payoutReference", "nonce"}, "redeem")
        return cls(
            from_=parse_address(d["from"], "from"),
            value=_int64(d["value"], "value"),
            payout_reference=parse_str(d["payoutReference"], "payoutReference"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


@dataclass(frozen=True)
class Refund:
    """A payee of the settle ``settle_id`` gives ``value`` back to that settle's payer: never more,
    in total, than the settle credited it."""

    settle_id: TxId
    from_: Address
    value: Amount
    nonce: Bytes32Hex

    def to_dict(self) -> dict[str, str]:
        return {"settleId": self.settle_id, "from": self.from_, "value": str(self.value), "nonce": self.nonce}

    @classmethod
    def from_dict(cls, data: object) -> Refund:
        d = exact_keys(data, {"settleId", "from", "value", "nonce"}, "refund")
        return cls(
            settle_id=parse_bytes32(d["settleId"], "settleId"),
            from_=parse_address(d["from"], "from"),
            value=_int64(d["value"], "value"),
            nonce=parse_bytes32(d["nonce"], "nonce"),
        )


PoolMessage = ProviderRegistration | ProviderApproval | PoolFee | SplitSettlement | Redeem | Refund
POOL_MESSAGE_BY_KIND: dict[str, type] = {
    "provider_registration": ProviderRegistration,
    "provider_approval": ProviderApproval,
    "pool_fee": PoolFee,
    "split_settle": SplitSettlement,
    "redeem": Redeem,
    "refund": Refund,
}
POOL_KINDS: tuple[str, ...] = tuple(POOL_MESSAGE_BY_KIND)
# Entries after which a gateway reloads its provider table (``Ledger.pool_version``).
POOL_CONFIG_KINDS = frozenset({"provider_registration", "provider_approval", "pool_fee"})


# ---- what the ledger answers about the pool ----


@dataclass(frozen=True)
class ProviderRecord:
    """A provider as the ledger knows it now: its registration in force (which may be withdrawn),
    whether the operator approved it, and when it first and last registered (ms)."""

    address: Address
    registration_id: TxId
    registration: ProviderRegistration
    approved: bool
    registered_at_ms: int
    updated_at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "registrationId": self.registration_id,
            "registration": self.registration.to_dict(),
            "approved": self.approved,
            "registeredAt": str(self.registered_at_ms),
            "updatedAt": str(self.updated_at_ms),
        }

    @classmethod
    def from_dict(cls, data: object) -> ProviderRecord:
        d = exact_keys(
            data,
            {"address", "registrationId", "registration", "approved", "registeredAt", "updatedAt"},
            "provider record",
        )
        return cls(
            address=parse_address(d["address"], "address"),
            registration_id=parse_bytes32(d["registrationId"], "registrationId"),
            registration=ProviderRegistration.from_dict(d["registration"]),
            approved=parse_bool(d["approved"], "approved"),
            registered_at_ms=_int64(d["registeredAt"], "registeredAt"),
            updated_at_ms=_int64(d["updatedAt"], "updatedAt"),
        )


@dataclass(frozen=True)
class PoolFeeInForce:
    """The pool fee every new split must carry; ``fee_id`` is ``NO_FEE_ID`` before any."""

    fee_bps: int
    flat_fee: Amount
    fee_id: TxId

    def to_dict(self) -> dict[str, str]:
        return {"feeBps": str(self.fee_bps), "flatFee": str(self.flat_fee), "feeId": self.fee_id}

    @classmethod
    def from_dict(cls, data: object) -> PoolFeeInForce:
        d = exact_keys(data, {"feeBps", "flatFee", "feeId"}, "pool fee in force")
        return cls(
            fee_bps=_int64(d["feeBps"], "feeBps"),
            flat_fee=_int64(d["flatFee"], "flatFee"),
            fee_id=parse_bytes32(d["feeId"], "feeId"),
        )


NO_POOL_FEE = PoolFeeInForce(0, 0, NO_FEE_ID)


@dataclass(frozen=True)
class ProviderEarnings:
    """What an address earned as a pool provider: how many splits paid it and how much in total;
    what it refunded (against any settle) and redeemed. All in base units except ``calls``."""

    calls: int
    earned: Amount
    refunded: Amount
    redeemed: Amount

    def to_dict(self) -> dict[str, str]:
        return {
            "calls": str(self.calls),
            "earned": str(self.earned),
            "refunded": str(self.refunded),
            "redeemed": str(self.redeemed),
        }

    @classmethod
    def from_dict(cls, data: object) -> ProviderEarnings:
        d = exact_keys(data, {"calls", "earned", "refunded", "redeemed"}, "provider earnings")
        return cls(
            calls=_int64(d["calls"], "calls"),
            earned=_int64(d["earned"], "earned"),
            refunded=_int64(d["refunded"], "refunded"),
            redeemed=_int64(d["redeemed"], "redeemed"),
        )

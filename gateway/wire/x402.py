"""The x402 v2 wire format (and v1 header names), shared by the gateway and the client SDK.

Headers carry base64 of JSON. ``PAYMENT-REQUIRED`` (402) lists what the gateway accepts;
``PAYMENT-SIGNATURE`` (v1: ``X-PAYMENT``) carries the client's signed authorization: an EIP-3009
``authorization`` (scheme ``exact``, and inferpay's own ``upto``), or the Permit2
``permit2Authorization`` the official x402 ``upto`` client signs; ``PAYMENT-RESPONSE`` (v1:
``X-PAYMENT-RESPONSE``) carries the settlement and a gateway-signed receipt. Parsing is strict
and bounded: anything malformed is a ``MalformedPayment`` (HTTP 400), never a 500. Must not
import Flask or the ledger's storage.

inferpay additions, all optional and ignored by plain x402 clients:
- ``extensions.inferpay.offer``: the sealer's signature over the offered terms.
- ``extra.inferpayBinding = "v1"``: the route accepts request-bound payments; a client binds
  one by signing ``nonce = request_binding_nonce(method, path, body, salt)`` and sending
  ``payload.binding = {"salt": salt}``.
- ``PAYMENT-RESPONSE`` also holds ``charged``, ``balanceAfter`` (left out when unknown) and ``receipt``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from gateway.wire.errors import MalformedPayment, WrongAsset, WrongFacilitator, WrongSpender
from ledger.errors import InferpayError
from ledger.types import (
    UPTO_PERMIT2_PROXY_ADDRESS,
    Address,
    Authorization,
    ChainInfo,
    Permit2Authorization,
    SignatureHex,
    parse_bytes32,
    parse_signature,
)

PAYMENT_REQUIRED_HEADER = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE_HEADER = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE_HEADER = "PAYMENT-RESPONSE"
V1_PAYMENT_HEADER = "X-PAYMENT"
V1_PAYMENT_RESPONSE_HEADER = "X-PAYMENT-RESPONSE"
X402_VERSION = 2
MAX_HEADER_BYTES = 8192
SCHEME_EXACT = "exact"
SCHEME_UPTO = "upto"
BINDING_VERSION = "v1"
# x402 upto terms name the facilitator a client's Permit2 binds (witness.facilitator) in
# extra.facilitatorAddress, and say Permit2 is how the asset moves.
FACILITATOR_ADDRESS = "facilitatorAddress"
ASSET_TRANSFER_METHOD = "assetTransferMethod"
PERMIT2 = "permit2"


def encode_header(data: Any) -> str:
    return base64.b64encode(json.dumps(data, separators=(",", ":"), sort_keys=True).encode()).decode("ascii")


def decode_header(text: str, what: str = "payment header") -> Any:
    """base64(JSON) -> object; bounded in size, strict about encoding."""
    if len(text) > MAX_HEADER_BYTES:
        raise MalformedPayment(f"{what} is larger than {MAX_HEADER_BYTES} bytes")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayment(f"{what} is not base64-encoded JSON") from exc
    except RecursionError as exc:  # json recurses once per nesting level; 8 KiB of "[" is enough
        raise MalformedPayment(f"{what} is nested too deeply") from exc


def network_id(chain_id: int) -> str:
    return f"eip155:{chain_id}"


def facilitator_address(chain: ChainInfo) -> Address:
    """Whom an x402 upto Permit2 on this ledger must name as its facilitator: the sealer, which
    signs every capture (the ledger refuses a Permit2 naming anyone else). The paid proxy's
    offers and the facilitator's /supported both advertise it."""
    return chain.sealer


def check_permit2_terms(permit: Permit2Authorization, chain: ChainInfo) -> None:
    """Raise the first reason ``permit`` is not an x402 upto Permit2 for this ledger: the token
    it permits, the spender (x402's upto proxy, which the ledger plays) and the facilitator it
    binds. The ledger checks them again when it holds (and its auditor when it replays); here
    they get the reasons a payer can act on."""
    if permit.token.lower() != chain.token_address.lower():
        raise WrongAsset(
            f"the Permit2 permits token {permit.token}, this ledger's is {chain.token_address}",
            expected=chain.token_address,
            got=permit.token,
        )
    if permit.spender.lower() != UPTO_PERMIT2_PROXY_ADDRESS.lower():
        raise WrongSpender(
            f"the Permit2 lets {permit.spender} spend, not x402's upto proxy {UPTO_PERMIT2_PROXY_ADDRESS}",
            expected=UPTO_PERMIT2_PROXY_ADDRESS,
            got=permit.spender,
        )
    ours = facilitator_address(chain)
    if permit.facilitator.lower() != ours.lower():
        raise WrongFacilitator(
            f"the Permit2 names facilitator {permit.facilitator}, this ledger's is {ours}",
            expected=ours,
            got=permit.facilitator,
        )


@dataclass(frozen=True)
class PaymentRequirement:
    scheme: str
    network: str
    amount: int  # base units; for "upto", the most the call may cost
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "network": self.network,
            "amount": str(self.amount),
            "asset": self.asset,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: object) -> PaymentRequirement:
        if not isinstance(data, dict):
            raise MalformedPayment("payment requirement must be an object")
        try:
            amount = data["amount"]
            if not (isinstance(amount, str) and amount.isascii() and amount.isdigit() and len(amount) <= 20):
                raise MalformedPayment(f"requirement amount must be base units as text, got {amount!r}")
            extra = data.get("extra") or {}
            if not isinstance(extra, dict):
                raise MalformedPayment("requirement extra must be an object")
            timeout = data["maxTimeoutSeconds"]
            if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
                raise MalformedPayment("maxTimeoutSeconds must be a non-negative integer")
            return cls(
                scheme=str(data["scheme"]),
                network=str(data["network"]),
                amount=int(amount),
                asset=str(data["asset"]),
                pay_to=str(data["payTo"]),
                max_timeout_seconds=timeout,
                extra=extra,
            )
        except KeyError as exc:
            raise MalformedPayment(f"payment requirement lacks {exc.args[0]!r}") from exc


@dataclass(frozen=True)
class PaymentPayload:
    """What a client sends: its signed authorization (EIP-3009, or x402 upto's Permit2), and
    which offered terms it accepts."""

    version: int
    authorization: Authorization | Permit2Authorization
    signature: SignatureHex
    scheme: str
    network: str
    accepted: PaymentRequirement | None  # v2 echoes the requirement it accepts; v1 does not
    binding_salt: str | None = None

    @classmethod
    def from_header(cls, text: str) -> PaymentPayload:
        return cls.from_dict(decode_header(text))

    @classmethod
    def from_dict(cls, data: object) -> PaymentPayload:
        if not isinstance(data, dict):
            raise MalformedPayment("payment payload must be a JSON object")
        version = data.get("x402Version")
        inner = data.get("payload")
        if version not in (1, 2) or isinstance(version, bool):
            raise MalformedPayment(f"unsupported x402Version {version!r} (this gateway speaks 2 and 1)")
        permit2 = isinstance(inner, dict) and "permit2Authorization" in inner
        signed = "permit2Authorization" if permit2 else "authorization"
        if not isinstance(inner, dict) or not {signed, "signature"} <= set(inner):
            raise MalformedPayment(
                "payload must hold an EIP-3009 authorization (or a Permit2 permit2Authorization) and its signature"
            )
        unknown = set(inner) - (
            {"permit2Authorization", "signature"} if permit2 else {"authorization", "signature", "binding"}
        )
        if unknown:
            raise MalformedPayment(f"unknown payload field(s): {', '.join(sorted(unknown))}")
        try:
            authorization: Authorization | Permit2Authorization = (
                Permit2Authorization.from_dict(inner[signed]) if permit2 else Authorization.from_dict(inner[signed])
            )
            signature = parse_signature(inner["signature"])
            salt = None
            if "binding" in inner:
                binding = inner["binding"]
                if not isinstance(binding, dict) or set(binding) != {"salt"}:
                    raise MalformedPayment('payload.binding must be {"salt": <bytes32 hex>}')
                salt = parse_bytes32(binding["salt"], "binding.salt")
        except MalformedPayment:
            raise
        except InferpayError as exc:
            raise MalformedPayment(f"payment payload: {exc.message}") from exc
        if version == 2:
            accepted = PaymentRequirement.from_dict(data.get("accepted"))
            scheme, network = accepted.scheme, accepted.network
        else:
            scheme, network, accepted = str(data.get("scheme")), str(data.get("network")), None
        return cls(version, authorization, signature, scheme, network, accepted, salt)

    @property
    def payer(self) -> Address:
        return self.authorization.from_

    @property
    def pay_to(self) -> Address:
        """Whom it pays: EIP-3009's ``to``, a Permit2's ``witness.to``."""
        return self.authorization.to

    @property
    def authorized(self) -> int:
        """The most it lets be captured: EIP-3009's ``value``, a Permit2's ``permitted.amount``."""
        auth = self.authorization
        return auth.value if isinstance(auth, Authorization) else auth.amount

    @property
    def receipt_nonce(self) -> str:
        """The nonce a receipt names (bytes32 hex), binding it to this payment: EIP-3009's own,
        or a Permit2's uint256 nonce as 32 big-endian bytes."""
        auth = self.authorization
        return auth.nonce if isinstance(auth, Authorization) else "0x" + auth.nonce.to_bytes(32, "big").hex()

    def to_dict(self) -> dict[str, Any]:
        signed = "authorization" if isinstance(self.authorization, Authorization) else "permit2Authorization"
        inner: dict[str, Any] = {signed: self.authorization.to_dict(), "signature": self.signature}
        if self.binding_salt is not None:
            inner["binding"] = {"salt": self.binding_salt}
        if self.version == 1:
            return {"x402Version": 1, "scheme": self.scheme, "network": self.network, "payload": inner}
        assert self.accepted is not None
        return {"x402Version": 2, "accepted": self.accepted.to_dict(), "payload": inner}

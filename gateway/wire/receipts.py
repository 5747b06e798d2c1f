"""Gateway-signed statements: the receipt returned with every paid call, and signed offers.

A receipt says "for this request, transaction ``txId`` charged ``charged`` of the ``authorized``
amount from ``payer`` to ``payTo``; the payer's available balance after it is ``balanceAfter``".
``balanceAfter`` is left out when the ledger could not be read once the charge had committed
(its database went away just then): the charge stands and the receipt still proves it, so the
call is answered as served, with what is known, never as refused.
The sealer signs it, so a client can hold the gateway to it; ``txId`` later resolves to a block
and an inclusion proof (``GET /ledger/transactions/<txId>``), which the client checks against
the sealer-signed block. A pool call's receipt also names the split (``provider``,
``providerAmount``, ``fee``): what the provider got, and what the operator (``payTo``) kept;
the two sum to ``charged``, as the ``split_settle`` entry ``txId`` records. Offers (the terms
in a 402) are signed the same way, under another purpose, so one can never be replayed as the
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.wire.errors import ReceiptInvalid
from ledger import crypto
from ledger.blocks import Signer
from ledger.encoding import statement_digest
from ledger.errors import InferpayError
from ledger.types import Address, exact_keys, parse_address, parse_bytes32, parse_signature, parse_uint

_RECEIPT_FIELDS = {
    "txId",
    "holdId",
    "payer",
    "payTo",
    "network",
    "authorized",
    "charged",
    "method",
    "path",
    "issuedAt",
    "nonce",
}
_SPLIT_FIELDS = frozenset({"provider", "providerAmount", "fee"})  # pool calls only
_OPTIONAL_FIELDS = _SPLIT_FIELDS | {"balanceAfter"}


@dataclass(frozen=True)
class Receipt:
    tx_id: str  # the settling transaction
    hold_id: str  # the hold (or API-key charge) it resolved
    payer: Address
    pay_to: Address
    network: str
    authorized: int
    charged: int
    balance_after: int | None  # None: unknown when signed (module docstring)
    method: str
    path: str
    issued_at_ms: int  # ms
    nonce: str = ""  # the paying authorization's EIP-3009 nonce ("" for API-key calls): binds receipt to payment
    provider: Address = ""  # a pool call's provider ("" for a route with one upstream)
    provider_amount: int = 0  # what the provider got; charged - provider_amount is the operator's fee
    fee: int = 0
    sealer: Address = ""
    signature: str = ""

    def body(self) -> dict[str, Any]:
        split = (
            {"provider": self.provider, "providerAmount": str(self.provider_amount), "fee": str(self.fee)}
            if self.provider
            else {}
        )
        return {
            "txId": self.tx_id,
            "holdId": self.hold_id,
            "payer": self.payer,
            "payTo": self.pay_to,
            "network": self.network,
            "authorized": str(self.authorized),
            "charged": str(self.charged),
            **({} if self.balance_after is None else {"balanceAfter": str(self.balance_after)}),
            "method": self.method,
            "path": self.path,
            "issuedAt": self.issued_at_ms,
            "nonce": self.nonce,
            **split,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "sealer": self.sealer, "signature": self.signature}

    def signed(self, signer: Signer) -> Receipt:
        signature = signer.sign_digest(statement_digest("receipt", self.body()))
        return Receipt(**{**self.__dict__, "sealer": signer.address, "signature": signature})

    @classmethod
    def from_dict(cls, data: object) -> Receipt:
        try:
            d = exact_keys(data, _RECEIPT_FIELDS | {"sealer", "signature"}, "receipt", optional=_OPTIONAL_FIELDS)
            if any(k in d for k in _SPLIT_FIELDS) and not all(k in d for k in _SPLIT_FIELDS):
                raise ReceiptInvalid("receipt: a split names provider, providerAmount and fee together")
            hold_id = d["holdId"]
            return cls(
                tx_id=parse_bytes32(d["txId"], "txId"),
                hold_id=parse_bytes32(hold_id, "holdId") if hold_id else "",
                payer=parse_address(d["payer"], "payer"),
                pay_to=parse_address(d["payTo"], "payTo"),
                network=str(d["network"]),
                authorized=parse_uint(d["authorized"], "authorized"),
                charged=parse_uint(d["charged"], "charged"),
                balance_after=parse_uint(d["balanceAfter"], "balanceAfter") if "balanceAfter" in d else None,
                method=str(d["method"]),
                path=str(d["path"]),
                issued_at_ms=parse_uint(d["issuedAt"], "issuedAt"),
                nonce=parse_bytes32(d["nonce"], "nonce") if d["nonce"] else "",
                provider=parse_address(d["provider"], "provider") if "provider" in d else "",
                provider_amount=parse_uint(d["providerAmount"], "providerAmount") if "provider" in d else 0,
                fee=parse_uint(d["fee"], "fee") if "provider" in d else 0,
                sealer=parse_address(d["sealer"], "sealer"),
                signature=parse_signature(d["signature"]),
            )
        except InferpayError as exc:
            raise ReceiptInvalid(f"receipt: {exc.message}") from exc

    def verify(self, sealer: Address) -> None:
        """The receipt is signed by ``sealer`` and charges no more than was authorized."""
        if self.sealer != sealer:
            raise ReceiptInvalid(f"receipt is signed by {self.sealer}, not the ledger's sealer {sealer}")
        try:
            crypto.verify_signed_by(statement_digest("receipt", self.body()), self.signature, sealer, "receipt")
        except InferpayError as exc:
            raise ReceiptInvalid(f"receipt signature is not the gateway's: {exc.message}") from exc
        if self.charged > self.authorized:
            raise ReceiptInvalid(f"receipt charges {self.charged}, more than the {self.authorized} authorized")
        if self.provider and self.provider_amount + self.fee != self.charged:
            raise ReceiptInvalid(
                f"receipt's split ({self.provider_amount} + {self.fee}) does not sum to the {self.charged} charged"
            )


def sign_offer(signer: Signer, resource: str, accepts: list[dict[str, Any]]) -> dict[str, Any]:
    digest = statement_digest("offer", {"resource": resource, "accepts": accepts})
    return {"signer": signer.address, "signature": signer.sign_digest(digest)}


def verify_offer(sealer: Address, resource: str, accepts: list[dict[str, Any]], offer: object) -> None:
    if not isinstance(offer, dict) or set(offer) != {"signer", "signature"}:
        raise ReceiptInvalid("the 402 carries no inferpay offer signature")
    if offer["signer"] != sealer:
        raise ReceiptInvalid(f"offer signed by {offer['signer']}, not the ledger's sealer {sealer}")
    digest = statement_digest("offer", {"resource": resource, "accepts": accepts})
    try:
        crypto.verify_signed_by(digest, str(offer["signature"]), sealer, "offer")
    except InferpayError as exc:
        raise ReceiptInvalid(f"the offered terms are not signed by the gateway: {exc.message}") from exc

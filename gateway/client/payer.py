"""The transport-free core of the client SDK: choosing and checking the offered terms, signing
a request-bound payment, and checking what the gateway answers.

``gateway.client`` documents the contract and re-exports everything here; the caps live in
``gateway.client.spend_policy`` (re-exported here as ``SpendPolicy``); the transports
(``gateway.client.requests_auth``, ``gateway.client.httpx_auth``) drive a ``Payer`` through its three
steps: ``challenge`` (parse a 402), ``pay`` (reserve, then sign), ``finish`` (verify the
receipt, settle the reservation). It must never import Flask, requests or httpx.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.client.spend_policy import SpendPolicy
from gateway.wire.errors import (
    ERRORS,
    MalformedPayment,
    ReceiptInvalid,
    UnsupportedScheme,
    error_from_body,
    error_from_code,
)
from gateway.wire.receipts import Receipt, verify_offer
from gateway.wire.x402 import (
    BINDING_VERSION,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    SCHEME_EXACT,
    SCHEME_UPTO,
    V1_PAYMENT_RESPONSE_HEADER,
    X402_VERSION,
    PaymentPayload,
    PaymentRequirement,
    decode_header,
    encode_header,
)
from ledger.clock import ms_to_s, system_now_ms
from ledger.crypto import recover_address
from ledger.encoding import request_binding_nonce, signing_digest
from ledger.errors import CommitOutcomeUnknown, InferpayError, InvalidSignature
from ledger.types import (
    Address,
    Authorization,
    ChainInfo,
    SignatureHex,
    parse_address,
    parse_signature,
)
from wallets.wallet import VALID_AFTER_SLACK_SECONDS, Wallet

MAX_VALIDITY_SECONDS = 600  # never sign an authorization that lives longer, whatever the 402 asks
RECENT_RECEIPTS = 1000
RECEIPT_KEY = "inferpay_receipt"  # requests: response attribute; httpx: response.extensions key
_NETWORK = re.compile(r"eip155:([1-9][0-9]{0,18})")
_NO_ADDRESS = "0x" + "00" * 20  # ChainInfo's operator/sealer are not part of the EIP-712 domain


def receipt_of(response: Any) -> Receipt | None:
    """The verified receipt on a paid response, requests' or httpx's (None if there is none)."""
    extensions = getattr(response, "extensions", None)
    if isinstance(extensions, dict) and RECEIPT_KEY in extensions:
        return extensions[RECEIPT_KEY]
    return getattr(response, RECEIPT_KEY, None)


def request_target(url: str) -> str:
    """The request target a binding nonce commits to: ``path + ("?" + query if query else "")``."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def gateway_error(body: bytes) -> InferpayError | None:
    """The inferpay error a failure body ``{"error": {"code", "message", ...}}`` stands for
    (``gateway.wire.errors.error_from_body``: only codes inferpay defines are mapped)."""
    return error_from_body(body)


@dataclass(frozen=True)
class Challenge:
    """A 402 this client can pay: the chosen terms, and who vouches for them."""

    resource: str
    requirement: PaymentRequirement
    chain_id: int
    sealer: Address | None  # the gateway's sealer, when the 402 names one
    ledger_url: str | None


@dataclass(frozen=True)
class Payment:
    """One signed payment, in flight; carries per-request state so the auth object holds none."""

    header: str  # the PAYMENT-SIGNATURE value
    authorization: Authorization
    requirement: PaymentRequirement
    sealer: Address | None
    method: str
    target: str
    binding_salt: str | None


class Payer:
    """The transport-free payment logic shared by ``PaymentAuth`` and ``HttpxPaymentAuth``.

    ``wallet`` is a ``wallets.Wallet`` or an eth-account ``LocalAccount``. One payer may serve
    any number of threads: its only mutable state is the spend policy (locked) and the list of
    recent receipts (locked); everything about one request travels in its ``Payment``.
    """

    def __init__(
        self,
        wallet: Any,
        *,
        max_per_call: int | None = None,
        max_total: int | None = None,
        trusted_sealer: str | None = None,
        verify_receipts: bool = True,
    ) -> None:
        self.address, self._sign = _signer_for(wallet)
        self.policy = SpendPolicy(max_per_call, max_total)
        self.trusted_sealer = None if trusted_sealer is None else parse_address(trusted_sealer, "trusted_sealer")
        self.verify_receipts = verify_receipts
        self._receipts: deque[Receipt] = deque(maxlen=RECENT_RECEIPTS)
        self._receipts_lock = threading.Lock()

    @property
    def spent(self) -> int:
        """Base units charged so far, plus whatever in-flight payments have authorized."""
        return self.policy.committed

    @property
    def receipts(self) -> list[Receipt]:
        """The most recent verified receipts (up to 1000), oldest first."""
        with self._receipts_lock:
            return list(self._receipts)

    # ---- the three steps a transport calls ----

    def challenge(self, headers: Mapping[str, str], body: bytes = b"") -> Challenge | None:
        """Parse a 402 (the PAYMENT-REQUIRED header, else the JSON body). None if it is not x402 v2;
        raises ``UnsupportedScheme`` if no offered terms can be paid, ``ReceiptInvalid`` if the
        offered terms are not signed by the gateway's sealer."""
        header = headers.get(PAYMENT_REQUIRED_HEADER)
        try:
            data = decode_header(header, PAYMENT_REQUIRED_HEADER) if header else json.loads(body)
        except (MalformedPayment, ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("x402Version") != X402_VERSION:
            return None
        accepts = data.get("accepts")
        if not isinstance(accepts, list):
            return None
        resource = data.get("resource")
        resource_url = str(resource.get("url", "")) if isinstance(resource, dict) else ""
        extensions = data.get("extensions")
        inferpay = extensions.get("inferpay") if isinstance(extensions, dict) else None
        sealer, ledger_url = self._check_offer(inferpay, resource_url, accepts)
        for entry in accepts:
            chosen = _payable(entry)
            if chosen is not None:
                requirement, chain_id = chosen
                return Challenge(resource_url, requirement, chain_id, sealer, ledger_url)
        raise UnsupportedScheme("the gateway offers no terms this client can pay (exact or upto on an eip155 network)")

    def pay(self, challenge: Challenge, method: str, url: str, body: bytes | None) -> Payment:
        """Reserve the amount under the spend policy, then sign. ``body=None`` means the body is
        streamed and cannot be hashed, so the payment is not bound to the request."""
        requirement = challenge.requirement
        self.policy.reserve(requirement.amount)  # refuses before anything is signed
        try:
            now = ms_to_s(system_now_ms())
            method, target = method.upper(), request_target(url)
            salt = None
            if requirement.extra.get("inferpayBinding") == BINDING_VERSION and body is not None:
                salt = "0x" + secrets.token_bytes(32).hex()
                nonce = request_binding_nonce(method, target, body, salt)
            else:
                nonce = "0x" + secrets.token_bytes(32).hex()
            authorization = Authorization.from_dict(
                {
                    "from": self.address,
                    "to": requirement.pay_to,
                    "value": str(requirement.amount),
                    "validAfter": str(now - VALID_AFTER_SLACK_SECONDS),
                    "validBefore": str(now + min(requirement.max_timeout_seconds, MAX_VALIDITY_SECONDS)),
                    "nonce": nonce,
                }
            )
            domain = ChainInfo(
                chain_id=challenge.chain_id,
                token_address=parse_address(requirement.asset, "asset"),
                operator=_NO_ADDRESS,
                sealer=challenge.sealer or _NO_ADDRESS,
                name=str(requirement.extra["name"]),
                version=str(requirement.extra["version"]),
            )
            signature = self._sign(domain, authorization)
            payload = PaymentPayload(
                X402_VERSION,
                authorization,
                signature,
                requirement.scheme,
                requirement.network,
                requirement,
                salt,
            )
        except BaseException:
            self.policy.release(requirement.amount)
            raise
        return Payment(
            encode_header(payload.to_dict()), authorization, requirement, challenge.sealer, method, target, salt
        )

    def finish(self, payment: Payment, status: int, headers: Mapping[str, str], body: bytes = b"") -> Receipt | None:
        """Account for the paid retry's answer and return its verified receipt.

        ``body`` is needed only when the answer is not 2xx (to map the gateway's error). Raises
        the gateway's error, or ``ReceiptInvalid`` when the receipt is missing, forged or lies."""
        value = payment.authorization.value
        header = headers.get(PAYMENT_RESPONSE_HEADER) or headers.get(V1_PAYMENT_RESPONSE_HEADER)
        if header is None:
            if 200 <= status < 300:
                if self.verify_receipts:
                    raise ReceiptInvalid("the paid response carries no PAYMENT-RESPONSE receipt")
                return None  # charge unknown: the whole authorization stays counted
            error = gateway_error(body)
            # Refused: nothing was captured. A commit whose outcome is unknown may have captured
            # the whole authorization: it stays counted.
            if (error is not None and not isinstance(error, CommitOutcomeUnknown)) or status == 402:
                self.policy.release(value)
            if error is not None:
                raise error
            return None
        try:
            settlement = decode_header(header, PAYMENT_RESPONSE_HEADER)
        except MalformedPayment as exc:
            raise ReceiptInvalid(f"the gateway's PAYMENT-RESPONSE is unreadable: {exc.message}") from exc
        receipt = self._check_settlement(payment, settlement)
        if receipt is not None:
            self.policy.release(value - receipt.charged)
            with self._receipts_lock:
                self._receipts.append(receipt)
        return receipt

    # ---- checks ----

    def _check_offer(
        self, inferpay: object, resource_url: str, accepts: list[Any]
    ) -> tuple[Address | None, str | None]:
        if not isinstance(inferpay, dict):
            if self.trusted_sealer is not None:
                raise ReceiptInvalid("the 402 carries no inferpay offer, so its terms are not the gateway's")
            return None, None
        try:
            sealer = parse_address(inferpay.get("sealer"), "extensions.inferpay.sealer")
        except InferpayError as exc:
            raise ReceiptInvalid(f"the 402 names no valid sealer: {exc.message}") from exc
        if self.trusted_sealer is not None and sealer != self.trusted_sealer:
            raise ReceiptInvalid(f"the 402 names sealer {sealer}, not the trusted {self.trusted_sealer}")
        if "offer" in inferpay or self.trusted_sealer is not None:
            verify_offer(sealer, resource_url, accepts, inferpay.get("offer"))
        ledger_url = inferpay.get("ledger")
        return sealer, ledger_url if isinstance(ledger_url, str) else None

    def _check_settlement(self, payment: Payment, settlement: object) -> Receipt | None:
        if not isinstance(settlement, dict) or settlement.get("success") is not True:
            reason = settlement.get("errorReason") if isinstance(settlement, dict) else None
            self.policy.release(payment.authorization.value)  # a failed settlement captured nothing
            error = (
                error_from_code(reason, f"the gateway reports a failed settlement ({reason})")
                if isinstance(reason, str) and reason in ERRORS
                else None
            )
            raise error or ReceiptInvalid(f"the gateway reports a failed settlement ({reason!r})")
        if settlement.get("status") == "pending" and "receipt" not in settlement:
            # A streamed call: the charge is settled when the stream ends, and the signed receipt
            # arrives in-stream as an SSE comment (read it with ``stream_receipt``). Until then
            # the whole authorization stays counted against the spend policy.
            return None
        if "receipt" not in settlement:
            if self.verify_receipts:
                raise ReceiptInvalid("PAYMENT-RESPONSE carries no inferpay receipt")
            return None
        receipt = Receipt.from_dict(settlement["receipt"])
        if self.verify_receipts:
            if payment.sealer is None:
                raise ReceiptInvalid("the 402 named no sealer, so the receipt cannot be verified")
            receipt.verify(payment.sealer)
        value = payment.authorization.value
        if receipt.payer != self.address:
            raise ReceiptInvalid(f"the receipt names payer {receipt.payer}, not this wallet {self.address}")
        if receipt.charged > value:
            raise ReceiptInvalid(f"the receipt charges {receipt.charged}, more than the {value} authorized")
        if receipt.nonce != payment.authorization.nonce:  # a receipt replayed from another payment
            raise ReceiptInvalid("the receipt is for another payment (its nonce is not this authorization's)")
        if receipt.pay_to != payment.authorization.to:
            raise ReceiptInvalid(f"the receipt pays {receipt.pay_to}, not {payment.authorization.to}")
        if settlement.get("transaction", receipt.tx_id) != receipt.tx_id:
            raise ReceiptInvalid("PAYMENT-RESPONSE names another transaction than its receipt")
        return receipt


def _payable(entry: object) -> tuple[PaymentRequirement, int] | None:
    """The requirement and chain id if this client can pay ``entry``, else None."""
    try:
        requirement = PaymentRequirement.from_dict(entry)
    except MalformedPayment:
        return None
    match = _NETWORK.fullmatch(requirement.network)
    extra = requirement.extra
    if (
        requirement.scheme not in (SCHEME_EXACT, SCHEME_UPTO)
        or match is None
        or not isinstance(extra.get("name"), str)
        or not isinstance(extra.get("version"), str)
        or requirement.max_timeout_seconds <= 0
    ):
        return None
    try:
        parse_address(requirement.asset, "asset")
        parse_address(requirement.pay_to, "payTo")
    except InferpayError:
        return None
    return requirement, int(match.group(1))


def _signer_for(wallet: Any) -> tuple[Address, Callable[[ChainInfo, Authorization], SignatureHex]]:
    if isinstance(wallet, Wallet):
        return wallet.address, wallet.sign
    sign_hash = getattr(wallet, "unsafe_sign_hash", None)
    if sign_hash is None or not hasattr(wallet, "address"):
        raise TypeError(f"wallet must be a wallets.Wallet or an eth-account LocalAccount, not {wallet!r}")
    address = parse_address(wallet.address, "wallet address")

    def sign(chain: ChainInfo, authorization: Authorization) -> SignatureHex:
        digest = signing_digest(chain, authorization)
        raw = bytes(sign_hash(digest).signature)
        if len(raw) == 65 and raw[64] in (0, 1):  # some signers give the bare recovery id
            raw = raw[:64] + bytes([raw[64] + 27])
        signature = parse_signature("0x" + raw.hex())
        # Recovering checks v in {27, 28} and low-S, and that the account signed what we asked.
        if recover_address(digest, signature) != address:
            raise InvalidSignature(f"the account's signature does not recover to {address}")
        return signature

    return address, sign


STREAM_RECEIPT_PREFIX = ": inferpay-receipt "


def stream_receipt(line: str, sealer: Address) -> Receipt | None:
    """The verified receipt carried by one SSE line of a streamed paid call, or None if the line
    is not the receipt comment (the gateway sends it just before ``data: [DONE]``)."""
    if not line.startswith(STREAM_RECEIPT_PREFIX):
        return None
    from gateway.wire.x402 import decode_header

    settlement = decode_header(line[len(STREAM_RECEIPT_PREFIX) :].strip(), "stream receipt")
    if not isinstance(settlement, dict) or "receipt" not in settlement:
        raise ReceiptInvalid("the stream's receipt comment carries no receipt")
    receipt = Receipt.from_dict(settlement["receipt"])
    receipt.verify(sealer)
    return receipt

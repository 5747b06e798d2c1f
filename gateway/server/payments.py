"""What a paid route asks for, and whether a presented payment meets it.

``requirements_for`` builds the x402 terms of a route (signed by the sealer, so clients can
tell they are the gateway's): a flat route takes ``exact``; a metered one ``upto`` (an EIP-3009
authorization from inferpay's client, or the official x402 upto client's Permit2) and
``exact`` of its maximum, the metered cost captured either way. ``check_payment`` decides
whether a decoded payment pays for this request: network, asset, payee, scheme, amount, for a
Permit2 its spender and facilitator, and (when the client bound it) the request itself.
Signatures, windows and nonces are the ledger's to check when it places the hold. Nothing here
touches storage or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.server.config import Route
from gateway.wire.errors import (
    AmountTooLow,
    BindingMismatch,
    UnsupportedPayloadType,
    UnsupportedScheme,
    WrongAsset,
    WrongNetwork,
    WrongPayee,
)
from gateway.wire.receipts import sign_offer
from gateway.wire.x402 import (
    ASSET_TRANSFER_METHOD,
    BINDING_VERSION,
    FACILITATOR_ADDRESS,
    PERMIT2,
    SCHEME_EXACT,
    SCHEME_UPTO,
    X402_VERSION,
    PaymentPayload,
    PaymentRequirement,
    check_permit2_terms,
    facilitator_address,
    network_id,
)
from ledger.blocks import Signer
from ledger.encoding import request_binding_nonce
from ledger.types import Address, Authorization, ChainInfo, Permit2Authorization


@dataclass(frozen=True)
class RequestFacts:
    """The parts of an HTTP request a payment can be bound to."""

    method: str
    path: str  # path plus "?query" when there is one; exactly what the client SDK binds
    body: bytes
    url: str


def requirements_for(
    route: Route, chain: ChainInfo, pay_to: Address, max_timeout_seconds: int
) -> list[PaymentRequirement]:
    """The terms a route offers, in the order a client should prefer them. A metered route's
    ``upto`` comes first (amount = the most one call may cost) and names what the official
    x402 upto client needs to sign a Permit2 (extra.facilitatorAddress, assetTransferMethod);
    its ``exact`` of the same maximum serves x402 clients that sign EIP-3009 only."""
    extra = {"name": chain.name, "version": chain.version, "inferpayBinding": BINDING_VERSION}

    def offer(scheme: str, more: dict[str, str]) -> PaymentRequirement:
        return PaymentRequirement(
            scheme=scheme,
            network=network_id(chain.chain_id),
            amount=route.authorized_amount,
            asset=chain.token_address,
            pay_to=pay_to,
            max_timeout_seconds=max_timeout_seconds,
            extra={**extra, **more},
        )

    if not route.metered:
        return [offer(SCHEME_EXACT, {})]
    upto = {ASSET_TRANSFER_METHOD: PERMIT2, FACILITATOR_ADDRESS: facilitator_address(chain)}
    return [offer(SCHEME_UPTO, upto), offer(SCHEME_EXACT, {})]


def payment_required_body(
    route: Route,
    chain: ChainInfo,
    pay_to: Address,
    resource_url: str,
    signer: Signer,
    ledger_url: str,
    max_timeout_seconds: int,
    error: str = "payment required",
    *,
    checkpoint_key: str | None = None,
) -> dict[str, Any]:
    accepts = [r.to_dict() for r in requirements_for(route, chain, pay_to, max_timeout_seconds)]
    inferpay: dict[str, Any] = {
        "offer": sign_offer(signer, resource_url, accepts),
        "sealer": signer.address,
        "ledger": ledger_url,
    }
    if checkpoint_key is not None:  # the log's C2SP checkpoint vkey: receipts prove against it
        inferpay["checkpointKey"] = checkpoint_key
    return {
        "x402Version": X402_VERSION,
        "error": error,
        "resource": {
            "url": resource_url,
            "description": route.description or f"{route.path} via inferpay",
            "mimeType": "application/json",
        },
        "accepts": accepts,
        "extensions": {"inferpay": inferpay},
    }


def check_payment(
    payment: PaymentPayload, route: Route, chain: ChainInfo, pay_to: Address, request: RequestFacts
) -> None:
    """Raise the first reason ``payment`` does not pay for ``request`` on ``route``."""
    expected_network = network_id(chain.chain_id)
    if payment.network != expected_network:
        raise WrongNetwork(
            f"this gateway takes payments on {expected_network}, not {payment.network}",
            expected=expected_network,
            got=payment.network,
        )
    offered = SCHEME_UPTO if route.metered else SCHEME_EXACT
    # A metered route also takes an `exact` payment of its maximum (plain x402 clients sign
    # EIP-3009 only for `exact`); either way the gateway captures the metered cost.
    if payment.scheme not in (offered, SCHEME_EXACT):
        raise UnsupportedScheme(f"{route.path} is paid with scheme {offered!r}, not {payment.scheme!r}")
    auth = payment.authorization
    if isinstance(auth, Permit2Authorization) and payment.scheme != SCHEME_UPTO:
        raise UnsupportedPayloadType(
            f"a Permit2 authorization pays scheme {SCHEME_UPTO!r} only, not {payment.scheme!r}"
        )
    if payment.accepted is not None:
        if payment.accepted.asset.lower() != chain.token_address.lower():
            raise WrongAsset(
                f"this gateway takes asset {chain.token_address}, not {payment.accepted.asset}",
                expected=chain.token_address,
                got=payment.accepted.asset,
            )
        if payment.accepted.pay_to.lower() != pay_to.lower():
            raise WrongPayee(f"payments here go to {pay_to}, not {payment.accepted.pay_to}")
    if isinstance(auth, Permit2Authorization):
        check_permit2_terms(auth, chain)
    if payment.pay_to != pay_to:
        raise WrongPayee(
            f"the authorization pays {payment.pay_to}, but this gateway's payee is {pay_to}",
            expected=pay_to,
            got=payment.pay_to,
        )
    needed = route.authorized_amount
    if payment.authorized < needed:
        raise AmountTooLow(
            f"{route.path} needs an authorization of {needed} base units, got {payment.authorized}",
            needed=str(needed),
            got=str(payment.authorized),
        )
    if payment.binding_salt is not None and isinstance(auth, Authorization):
        expected_nonce = request_binding_nonce(request.method, request.path, request.body, payment.binding_salt)
        if expected_nonce != auth.nonce:
            raise BindingMismatch("this payment is bound to a different request (method, path or body)")

"""What a payment must meet at the x402 facilitator, per scheme: ``exact`` (EIP-3009, the value
is the price) and ``upto`` (x402's Permit2: at /verify the permitted maximum is what the
requirements ask; at /settle they ask the cost, at most that maximum). Each check raises the
first reason in the SDK facilitator's order; the reason strings come from the tables in
``gateway.wire.facilitator``. Signatures, windows, nonces and funds are the ledger's to check
when it places the hold. Must not import Flask or the ledger's storage.
"""

from __future__ import annotations

from gateway.wire import errors as gw
from gateway.wire.x402 import (
    SCHEME_EXACT,
    SCHEME_UPTO,
    PaymentPayload,
    PaymentRequirement,
    check_permit2_terms,
    network_id,
)
from ledger import errors as le
from ledger.types import Authorization, ChainInfo, Permit2Authorization


def check_payment(
    payment: PaymentPayload, requirement: PaymentRequirement, chain: ChainInfo, *, settling: bool
) -> None:
    """Raise the first reason ``payment`` does not meet ``requirement`` on this ledger, under
    the scheme the requirements name (any but ``exact`` and ``upto`` is unsupported)."""
    if requirement.scheme == SCHEME_UPTO:
        check_upto_payment(payment, requirement, chain, settling=settling)
    else:
        check_exact_payment(payment, requirement, chain)


def _check_network_and_asset(payment: PaymentPayload, requirement: PaymentRequirement, chain: ChainInfo) -> None:
    ours = network_id(chain.chain_id)
    for network in (requirement.network, payment.network):
        if network != ours:
            raise gw.WrongNetwork(
                f"this facilitator settles on {ours}, not {network[:64]}", expected=ours, got=network[:64]
            )
    if requirement.asset.lower() != chain.token_address.lower():
        raise gw.WrongAsset(
            f"this facilitator settles asset {chain.token_address}, not {requirement.asset[:64]}",
            expected=chain.token_address,
            got=requirement.asset[:64],
        )


def check_exact_payment(payment: PaymentPayload, requirement: PaymentRequirement, chain: ChainInfo) -> None:
    """``exact`` (EIP-3009), in the SDK facilitator's order: scheme, network, asset, recipient,
    amount. Signatures, windows, nonces and funds are the ledger's to check when it holds."""
    if requirement.scheme != SCHEME_EXACT:
        raise gw.UnsupportedScheme(
            f"this facilitator settles schemes {SCHEME_EXACT!r} and {SCHEME_UPTO!r}, not {requirement.scheme[:64]!r}"
        )
    if payment.scheme != SCHEME_EXACT:
        raise gw.UnsupportedScheme(f"the requirements are {SCHEME_EXACT!r}, the payment {payment.scheme[:64]!r}")
    auth = payment.authorization
    if not isinstance(auth, Authorization):
        raise gw.UnsupportedPayloadType("scheme exact is paid here with an EIP-3009 authorization, not a Permit2")
    _check_network_and_asset(payment, requirement, chain)
    if auth.to.lower() != requirement.pay_to.lower():
        raise gw.WrongPayee(
            f"the authorization pays {auth.to}, but the requirements pay {requirement.pay_to[:64]}",
            expected=requirement.pay_to[:64],
            got=auth.to,
        )
    # `exact` as the SDK's own EVM facilitator checks it: the authorized value is the price.
    if auth.value < requirement.amount:
        raise gw.AmountTooLow(
            f"the requirements ask {requirement.amount} base units, the authorization gives {auth.value}",
            needed=str(requirement.amount),
            got=str(auth.value),
        )
    if auth.value > requirement.amount:
        raise gw.AmountMismatch(
            f"scheme exact: the authorization must be for exactly {requirement.amount} base units, not {auth.value}",
            needed=str(requirement.amount),
            got=str(auth.value),
        )


def check_upto_payment(
    payment: PaymentPayload, requirement: PaymentRequirement, chain: ChainInfo, *, settling: bool
) -> None:
    """``upto`` (x402's Permit2), in the SDK upto facilitator's order: payload type, scheme,
    network, spender, recipient, facilitator, amount, token. At /verify the requirements ask
    the permitted maximum itself; at /settle they ask what the call cost, at most that maximum
    (the SDK's resource server sends its settlement override as the amount). Signature,
    validAfter, deadline, nonce and funds are the ledger's to check when it holds."""
    permit = payment.authorization
    if not isinstance(permit, Permit2Authorization):
        raise gw.UnsupportedPayloadType("scheme upto is paid with a Permit2 permit2Authorization, not EIP-3009")
    if payment.scheme != SCHEME_UPTO:
        raise gw.UnsupportedScheme(f"the requirements are {SCHEME_UPTO!r}, the payment {payment.scheme[:64]!r}")
    _check_network_and_asset(payment, requirement, chain)
    if permit.to.lower() != requirement.pay_to.lower():
        raise gw.WrongPayee(
            f"the Permit2 pays {permit.to}, but the requirements pay {requirement.pay_to[:64]}",
            expected=requirement.pay_to[:64],
            got=permit.to,
        )
    check_permit2_terms(permit, chain)  # token, spender, facilitator: this ledger's
    if settling and requirement.amount > permit.amount:
        raise le.SettleExceedsHold(
            f"cannot settle {requirement.amount} base units: the Permit2 authorizes at most {permit.amount}",
            held=str(permit.amount),
            requested=str(requirement.amount),
        )
    if not settling and requirement.amount != permit.amount:
        raise gw.AmountMismatch(
            f"scheme upto: the Permit2 must permit the requirements' {requirement.amount} base units, "
            f"not {permit.amount}",
            needed=str(requirement.amount),
            got=str(permit.amount),
        )

"""Checks a transaction on its own: who must sign it, the signature, the amounts, the window.

Shared by the live ledger (before it writes) and the chain auditor (as it replays), so both
apply the same rules. Validators raise the first specific error they find; they never touch
balances or storage (that is ``ledger.state`` and ``ledger.storage.base``).
"""

from __future__ import annotations

from ledger import crypto
from ledger.amounts import check_amount
from ledger.encoding import signing_digest
from ledger.errors import (
    AllowanceExpired,
    AuthorizationExpired,
    InvalidInput,
    InvalidSignature,
    NotYetValid,
    Unauthorized,
    WrongDomain,
)
from ledger.pool_validation import check_pool_message
from ledger.types import (
    UPTO_PERMIT2_PROXY_ADDRESS,
    Address,
    Allowance,
    Authorization,
    ChainInfo,
    Charge,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
    Transaction,
)


def required_signer(chain: ChainInfo, tx: Transaction) -> Address:
    """Users sign their own transfers, holds, redeems and refunds, providers their registrations;
    the issuer mints; the sealer resolves holds (split ones too), approves providers and sets the
    pool fee."""
    if isinstance(tx.message, Authorization | Permit2Authorization | Redeem | Refund):
        return tx.message.from_
    if isinstance(tx.message, Allowance):
        return tx.message.owner
    if isinstance(tx.message, ProviderRegistration):
        return tx.message.provider
    if isinstance(tx.message, Mint):
        return chain.operator
    return chain.sealer  # hold resolutions, allowance charges, approvals, the pool fee


def check_signature(chain: ChainInfo, tx: Transaction) -> None:
    expected = required_signer(chain, tx)
    if tx.signer != expected:
        raise Unauthorized(
            f"a {tx.kind} must be signed by {expected}, not {tx.signer}",
            expected=expected,
            signer=tx.signer,
        )
    crypto.verify_signed_by(signing_digest(chain, tx.message), tx.signature, expected, tx.kind)


def check_window(auth: Authorization, now_seconds: int) -> None:
    """EIP-3009: valid strictly after validAfter and strictly before validBefore."""
    if now_seconds <= auth.valid_after:
        raise NotYetValid(
            f"authorization is valid only after {auth.valid_after} (now {now_seconds})",
            valid_after=str(auth.valid_after),
            now=str(now_seconds),
        )
    if now_seconds >= auth.valid_before:
        raise AuthorizationExpired(
            f"authorization expired at {auth.valid_before} (now {now_seconds})",
            valid_before=str(auth.valid_before),
            now=str(now_seconds),
        )


def check_permit2(chain: ChainInfo, permit: Permit2Authorization, now_seconds: int) -> None:
    """A Permit2 (x402 upto) authorization is this ledger's only if it permits this ledger's token,
    to the x402 upto proxy (the part the ledger plays), settled by this ledger's sealer (the
    facilitator that signs every capture); the chain id is in its signed domain. It is usable
    from validAfter (inclusive, as the proxy's ``block.timestamp < validAfter`` check) until its
    deadline."""
    for field, named, ours in (
        ("permitted.token", permit.token, chain.token_address),
        ("spender", permit.spender, UPTO_PERMIT2_PROXY_ADDRESS),
        ("witness.facilitator", permit.facilitator, chain.sealer),
    ):
        if named.lower() != ours.lower():
            raise WrongDomain(f"this Permit2 names {field} {named}, this ledger's is {ours}", field=field, got=named)
    check_amount(permit.amount)
    if permit.from_ == permit.to:
        raise InvalidInput("a payment to oneself is refused", address=permit.from_)
    if now_seconds < permit.valid_after:
        raise NotYetValid(
            f"permit is valid only from {permit.valid_after} (now {now_seconds})",
            valid_after=str(permit.valid_after),
            now=str(now_seconds),
        )
    if now_seconds >= permit.deadline:
        raise AuthorizationExpired(
            f"permit deadline passed at {permit.deadline} (now {now_seconds})",
            deadline=str(permit.deadline),
            now=str(now_seconds),
        )


def check_transaction(chain: ChainInfo, tx: Transaction, now_seconds: int, *, signature: bool = True) -> None:
    """Everything that can be said about ``tx`` without the ledger's state. ``signature=False``
    is for the ledger's own sealer-signed transactions only, signed a moment ago in this process
    (recovering the key of a signature we just made costs ~50 µs and proves nothing new; the
    auditor still verifies every signature in the chain)."""
    message = tx.message
    if isinstance(message, Authorization):
        check_amount(message.value)
        if message.from_ == message.to:
            raise InvalidInput("a payment to oneself is refused", address=message.from_)
        check_window(message, now_seconds)
        if tx.kind == "hold" and tx.hold_expires_at_s is not None and tx.hold_expires_at_s <= now_seconds:
            raise InvalidInput(
                f"a hold expiring at {tx.hold_expires_at_s} would be expired already (now {now_seconds})"
            )
        if tx.kind == "hold" and (tx.hold_expires_at_s is None or tx.hold_expires_at_s > message.valid_before):
            raise InvalidInput("a hold must expire no later than its authorization's validBefore")
    elif isinstance(message, Permit2Authorization):
        check_permit2(chain, message, now_seconds)
        if tx.hold_expires_at_s is None or not now_seconds < tx.hold_expires_at_s <= message.deadline:
            raise InvalidInput("a Permit2 hold must expire after now and no later than the permit's deadline")
    elif isinstance(message, Mint):
        check_amount(message.value)
    elif isinstance(message, HoldResolution):
        check_amount(message.amount, allow_zero=True)
        if message.outcome != "settle" and message.amount != 0:
            raise InvalidInput(f"a {message.outcome} captures nothing; amount must be 0")
    elif isinstance(message, Allowance):
        check_amount(message.cap)
        if message.owner == message.spender:
            raise InvalidInput("an allowance to oneself is refused", address=message.owner)
        if now_seconds >= message.valid_before:
            raise AllowanceExpired(f"allowance expired at {message.valid_before} (now {now_seconds})")
    elif isinstance(message, Charge):
        check_amount(message.amount)
        if tx.hold_expires_at_s is None or tx.hold_expires_at_s <= now_seconds:
            raise InvalidInput("a charge must hold its amount until a time in the future")
    elif isinstance(message, ProviderRegistration | ProviderApproval | PoolFee | SplitSettlement | Redeem | Refund):
        check_pool_message(message)
    else:  # pragma: no cover - Transaction.from_dict admits no other message
        raise InvalidSignature("unknown message type")
    if signature:
        check_signature(chain, tx)

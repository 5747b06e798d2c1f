"""The compute pool's stateless rules: what a registration, approval, fee, split, redeem or
refund must be on its own, before the ledger's state is consulted (``ledger.state`` and the
stores check what depends on history: the registration and fee in force, balances, credits).

Shared, like ``ledger.validation`` (which calls it), by the live ledger and every auditor.
Raises the first specific error; never touches balances or storage.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ledger.amounts import check_amount
from ledger.errors import InvalidAmount, InvalidInput, SplitMispriced
from ledger.pool_types import (
    MAX_ENDPOINT,
    MAX_FEE_BPS,
    MAX_MODEL_NAME,
    MAX_MODELS,
    MAX_PAYOUT_REFERENCE,
    PROVIDER_STATUSES,
    PoolFee,
    PoolMessage,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
)


def _printable_ascii(text: str, *, low: int = 0x20) -> bool:
    return all(low <= ord(ch) <= 0x7E for ch in text)


def check_endpoint(endpoint: str) -> None:
    """An http(s) base URL of an OpenAI-compatible server: a host, maybe a port and a path; no
    credentials (they would be published on the ledger), no query, no fragment."""
    if not 0 < len(endpoint) <= MAX_ENDPOINT or not _printable_ascii(endpoint, low=0x21):
        raise InvalidInput(
            f"endpoint must be 1 to {MAX_ENDPOINT} printable ASCII characters without spaces", field="endpoint"
        )
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise InvalidInput(f"endpoint is not a URL: {exc}", field="endpoint") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"endpoint must be an http:// or https:// URL with a host, got {endpoint!r}", field="endpoint"
        )
    if "@" in parts.netloc or parts.username is not None:
        raise InvalidInput("endpoint must not carry a user name or password", field="endpoint")
    if parts.query or parts.fragment or "?" in endpoint or "#" in endpoint:
        raise InvalidInput("endpoint must have no query and no fragment", field="endpoint")
    if port == 0:
        raise InvalidInput("endpoint port must be between 1 and 65535", field="endpoint")


def check_models(models: tuple[str, ...]) -> None:
    if not 1 <= len(models) <= MAX_MODELS:
        raise InvalidInput(f"a provider serves 1 to {MAX_MODELS} models, got {len(models)}", field="models")
    for name in models:
        if not 1 <= len(name) <= MAX_MODEL_NAME or not _printable_ascii(name):
            raise InvalidInput(
                f"model names are 1 to {MAX_MODEL_NAME} printable ASCII characters, got {name!r}", field="models"
            )
    if len(set(models)) != len(models):
        raise InvalidInput("each model is listed once", field="models")


def check_registration(reg: ProviderRegistration) -> None:
    check_endpoint(reg.endpoint)
    check_models(reg.models)
    for value in (reg.price_per_call, reg.price_per_1k_input, reg.price_per_1k_output, reg.capacity):
        check_amount(value, allow_zero=True)
    if reg.status not in PROVIDER_STATUSES:
        raise InvalidInput(f"status must be active or withdrawn, got {reg.status!r}", field="status")


def check_split(split: SplitSettlement) -> None:
    for value in (split.amount, split.provider_amount, split.fee, split.input_tokens, split.output_tokens):
        check_amount(value, allow_zero=True)
    if split.amount != split.provider_amount + split.fee:
        raise SplitMispriced(
            f"a split captures its parts: {split.provider_amount} + {split.fee} is not {split.amount}",
            amount=str(split.amount),
            provider_amount=str(split.provider_amount),
            fee=str(split.fee),
        )


def check_pool_message(message: PoolMessage) -> None:
    """Everything that can be said about a pool record without the ledger's state."""
    if isinstance(message, ProviderRegistration):
        check_registration(message)
    elif isinstance(message, PoolFee):
        check_amount(message.flat_fee, allow_zero=True)
        if not 0 <= message.fee_bps <= MAX_FEE_BPS:
            raise InvalidAmount(f"feeBps must be between 0 and {MAX_FEE_BPS}, got {message.fee_bps}")
    elif isinstance(message, SplitSettlement):
        check_split(message)
    elif isinstance(message, Redeem):
        check_amount(message.value)
        reference = message.payout_reference
        if not 1 <= len(reference) <= MAX_PAYOUT_REFERENCE or not _printable_ascii(reference):
            raise InvalidInput(
                f"payoutReference must be 1 to {MAX_PAYOUT_REFERENCE} printable ASCII characters",
                field="payoutReference",
            )
    elif isinstance(message, Refund):
        check_amount(message.value)
    # ProviderApproval: a provider, a flag and a nonce, each checked as it was parsed.

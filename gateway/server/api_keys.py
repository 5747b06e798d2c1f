"""API keys: bearer secrets for clients that cannot sign (e.g. the official openai client).

``inferpay key create`` has the wallet sign a spending allowance (cap, expiry, this gateway's
payee) that the ledger records; the key is a random secret standing for it, stored only as a
SHA-256 hash. A call with ``Authorization: Bearer <key>`` places a sealer-signed charge-hold
against the allowance (never past its cap, its expiry or the owner's balance, all enforced by
the ledger), and is then settled or voided exactly like a signed payment.
"""

from __future__ import annotations

import hashlib
import secrets

from gateway.wire.errors import InvalidApiKey
from ledger import ApiKeyRow
from ledger.errors import AllowanceExpired
from ledger.ledger import Ledger, TxResult
from ledger.types import Address, Allowance, SignatureHex

KEY_PREFIX = "ipk_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def register_key(
    ledger: Ledger, allowance: Allowance, signature: SignatureHex, label: str = ""
) -> tuple[str, TxResult]:
    """Record the signed allowance and a new key for it; returns (the key, shown once; the tx)."""
    result = ledger.grant_allowance(allowance, signature)
    key = new_api_key()
    ledger.store.api_keys.register(key_hash(key), key[:12], result.tx_id, label, ledger.now_ms())
    return key, result


def lookup_key(ledger: Ledger, token: str, pay_to: Address) -> ApiKeyRow:
    """The live key for ``token``: known, not revoked, made out to this gateway, not expired."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        raise InvalidApiKey("unknown API key")
    row = ledger.store.api_keys.get(key_hash(token))
    if row is None or row.revoked:
        raise InvalidApiKey("unknown or revoked API key")
    if row.allowance.spender != pay_to:
        raise InvalidApiKey("this API key's allowance is for another payee")
    if ledger.now_s() >= row.allowance.valid_before:
        raise AllowanceExpired(f"this API key expired at {row.allowance.valid_before}")
    return row

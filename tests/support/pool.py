"""Test helpers for the compute pool on a real ledger: providers that sign registrations,
holders that sign redeems and refunds, the sealer's own pool records, and a paid-for hold.

Signed with raw keys through ``ledger.crypto`` (as ``tests.support.ledger`` does), so ledger
tests do not depend on the wallets package.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from ledger.crypto import KeySigner
from ledger.encoding import signing_digest
from ledger.ledger import TxResult
from ledger.pool import split_amounts
from ledger.types import (
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
    Transaction,
    TxKind,
)
from tests.support.ledger import LedgerFixture, Party


def new_nonce() -> str:
    return "0x" + secrets.token_hex(32)


def registration(provider: Party, **fields: Any) -> ProviderRegistration:
    values: dict[str, Any] = {
        "provider": provider.address,
        "endpoint": "http://127.0.0.1:8101/v1",
        "models": ("tiny-chat",),
        "price_per_call": 1000,
        "price_per_1k_input": 10,
        "price_per_1k_output": 30,
        "capacity": 4,
        "status": "active",
        "nonce": new_nonce(),
        **fields,
    }
    return ProviderRegistration(**values)


def signed(lf: LedgerFixture, kind: TxKind, message: Any, key: bytes) -> Transaction:
    signer = KeySigner(key)
    return Transaction(kind, message, signer.address, signer.sign_digest(signing_digest(lf.chain, message)))


def register(lf: LedgerFixture, provider: Party, **fields: Any) -> tuple[TxResult, ProviderRegistration]:
    reg = registration(provider, **fields)
    return lf.ledger.submit(signed(lf, "provider_registration", reg, provider.key)), reg


def sealer_tx(lf: LedgerFixture, kind: TxKind, message: Any) -> Transaction:
    return signed(lf, kind, message, lf.sealer_key)


def redeem(lf: LedgerFixture, holder: Party, value: int, reference: str = "payout-1") -> TxResult:
    message = Redeem(holder.address, value, reference, new_nonce())
    return lf.ledger.submit(signed(lf, "redeem", message, holder.key))


def refund(lf: LedgerFixture, payee: Party, settle_id: str, value: int) -> TxResult:
    message = Refund(settle_id, payee.address, value, new_nonce())
    return lf.ledger.submit(signed(lf, "refund", message, payee.key))


def hold(lf: LedgerFixture, payer: Party, payee: Party, value: int, ttl: int = 600) -> TxResult:
    auth, signature = lf.authorization(payer, payee.address, value, ttl=ttl)
    return lf.ledger.hold(auth, signature)


def split_of(lf: LedgerFixture, hold_id: str, provider: Party, registration_id: str, **fields: Any) -> SplitSettlement:
    """A correctly priced split (as ``settle_split`` would make it), ``fields`` overriding any part."""
    record = lf.ledger.provider(provider.address)
    fee = lf.ledger.pool_fee_in_force()

    tokens_in, tokens_out = fields.pop("input_tokens", 100), fields.pop("output_tokens", 50)
    amount, provider_amount, fee_units = split_amounts(record.registration, fee, tokens_in, tokens_out)
    base = SplitSettlement(
        hold_id,
        amount,
        provider.address,
        registration_id,
        tokens_in,
        tokens_out,
        False,
        provider_amount,
        fee_units,
        fee.fee_id,
    )
    return replace(base, **fields)

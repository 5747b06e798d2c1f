"""A pool call's receipt names the split (provider, providerAmount, fee), signed with the rest."""

from __future__ import annotations

import pytest

from gateway.wire.errors import ReceiptInvalid
from gateway.wire.receipts import Receipt
from ledger.crypto import KeySigner, new_private_key

SEALER = KeySigner(new_private_key())
PROVIDER = KeySigner(new_private_key()).address


def receipt(**fields: object) -> Receipt:
    values: dict[str, object] = {
        "tx_id": "0x" + "11" * 32,
        "hold_id": "0x" + "22" * 32,
        "payer": KeySigner(new_private_key()).address,
        "pay_to": KeySigner(new_private_key()).address,
        "network": "eip155:1",
        "authorized": 1000,
        "charged": 420,
        "balance_after": 5,
        "method": "POST",
        "path": "/v1/chat/completions",
        "issued_at_ms": 1,
        "provider": PROVIDER,
        "provider_amount": 400,
        "fee": 20,
        **fields,
    }
    return Receipt(**values).signed(SEALER)  # type: ignore[arg-type]


def test_a_split_receipt_round_trips_and_verifies() -> None:
    signed = receipt()
    data = signed.to_dict()
    assert (data["provider"], data["providerAmount"], data["fee"]) == (PROVIDER, "400", "20")
    again = Receipt.from_dict(data)
    assert again == signed
    again.verify(SEALER.address)


def test_a_receipt_without_a_split_is_unchanged() -> None:
    plain = receipt(provider="", provider_amount=0, fee=0)
    assert "provider" not in plain.to_dict()
    Receipt.from_dict(plain.to_dict()).verify(SEALER.address)


def test_an_edited_split_breaks_the_signature_and_a_split_must_sum() -> None:
    data = receipt().to_dict()
    with pytest.raises(ReceiptInvalid, match="signature"):
        Receipt.from_dict({**data, "providerAmount": "410", "fee": "10"}).verify(SEALER.address)
    with pytest.raises(ReceiptInvalid, match="does not sum"):
        receipt(fee=21).verify(SEALER.address)
    partial = {k: v for k, v in data.items() if k != "fee"}
    with pytest.raises(ReceiptInvalid, match="together"):
        Receipt.from_dict(partial)

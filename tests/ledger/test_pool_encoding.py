"""The compute pool's signed records: their EIP-712 digests equal eth-account's generic encoder
(each of the six structs, and any value Hypothesis draws), and their dict forms round-trip and
are strict (unknown, missing and mistyped fields refused), in a transaction as well."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import recover_address
from ledger.encoding import signing_digest, struct_hash, transaction_id, typed_data
from ledger.errors import InvalidInput, MalformedRecord
from ledger.types import (
    ChainInfo,
    PoolFee,
    PoolMessage,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
    Transaction,
)
from tests.strategies import chain_infos, pool_messages, private_keys

CHAIN = ChainInfo(
    chain_id=4242,
    token_address="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    operator="0x5B38Da6a701c568545dCfcB03FcB875f56beddC4",
    sealer="0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2",
)
A = "0x4B20993Bc481177ec7E8f571ceCaE8A9e22C02db"
ID = "0x" + "12" * 32
NONCE = "0x" + "34" * 32

EXAMPLES: dict[str, PoolMessage] = {
    "ProviderRegistration": ProviderRegistration(
        A, "http://127.0.0.1:8101/v1", ("tiny-chat", "tiny-embed"), 1000, 10, 30, 4, "active", NONCE
    ),
    "ProviderApproval": ProviderApproval(A, True, NONCE),
    "PoolFee": PoolFee(250, 7, NONCE),
    "SplitSettlement": SplitSettlement(ID, 1036, A, ID, 100, 50, True, 1003, 33, ID),
    "Redeem": Redeem(A, 2_000_000, "bank-transfer-42", NONCE),
    "Refund": Refund(ID, A, 5, NONCE),
}
KINDS = {
    "ProviderRegistration": "provider_registration",
    "ProviderApproval": "provider_approval",
    "PoolFee": "pool_fee",
    "SplitSettlement": "split_settle",
    "Redeem": "redeem",
    "Refund": "refund",
}
# The struct types exactly as the pool contract (docs of issue #13) writes them.
CONTRACT_TYPES = {
    "ProviderRegistration": "ProviderRegistration(address provider,string endpoint,string[] models,"
    "uint256 pricePerCall,uint256 pricePer1kInput,uint256 pricePer1kOutput,uint256 capacity,string status,"
    "bytes32 nonce)",
    "ProviderApproval": "ProviderApproval(address provider,bool approved,bytes32 nonce)",
    "PoolFee": "PoolFee(uint256 feeBps,uint256 flatFee,bytes32 nonce)",
    "SplitSettlement": "SplitSettlement(bytes32 holdId,uint256 amount,address provider,bytes32 registrationId,"
    "uint256 inputTokens,uint256 outputTokens,bool usageCapped,uint256 providerAmount,uint256 fee,bytes32 feeId)",
    "Redeem": "Redeem(address from,uint256 value,string payoutReference,bytes32 nonce)",
    "Refund": "Refund(bytes32 settleId,address from,uint256 value,bytes32 nonce)",
}


def eip712_digest(chain: ChainInfo, message: PoolMessage) -> bytes:
    signable = encode_typed_data(full_message=typed_data(chain, message))
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_pool_struct_is_the_contracts_and_matches_eth_account(name: str) -> None:
    message = EXAMPLES[name]
    full = typed_data(CHAIN, message)
    assert full["primaryType"] == name
    fields = ",".join(f"{f['type']} {f['name']}" for f in full["types"][name])
    assert f"{name}({fields})" == CONTRACT_TYPES[name]
    assert encode_typed_data(full_message=full).body == struct_hash(message)
    assert signing_digest(CHAIN, message) == eip712_digest(CHAIN, message)


@given(chain_infos, pool_messages)
@settings(max_examples=300, deadline=None)
def test_pool_digests_match_eth_account_for_any_value(chain: ChainInfo, message: PoolMessage) -> None:
    assert signing_digest(chain, message) == eip712_digest(chain, message)


@given(private_keys, pool_messages)
@settings(max_examples=50, deadline=None)
def test_eth_account_signatures_of_pool_records_recover(key: bytes, message: PoolMessage) -> None:
    signed = Account.sign_typed_data(key, full_message=typed_data(CHAIN, message))
    assert (
        recover_address(signing_digest(CHAIN, message), "0x" + bytes(signed.signature).hex())
        == Account.from_key(key).address
    )


@given(pool_messages)
@settings(max_examples=200, deadline=None)
def test_pool_records_round_trip_through_their_dicts(message: PoolMessage) -> None:
    assert type(message).from_dict(message.to_dict()) == message
    kind = KINDS[type(message).__name__]
    tx = Transaction(kind, message, A, "0x" + "11" * 65, 1234)  # type: ignore[arg-type]
    assert Transaction.from_dict(tx.to_dict()) == tx
    assert transaction_id(Transaction.from_dict(tx.to_dict())) == transaction_id(tx)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_pool_dicts_are_strict(name: str) -> None:
    message = EXAMPLES[name]
    cls = type(message)
    good: dict[str, Any] = message.to_dict()
    with pytest.raises(MalformedRecord, match="unknown"):
        cls.from_dict({**good, "extra": "1"})
    for key in good:
        with pytest.raises(MalformedRecord, match="missing"):
            cls.from_dict({k: v for k, v in good.items() if k != key})
        wrong = 1.5 if isinstance(good[key], str) else "yes"
        with pytest.raises(InvalidInput):  # MalformedRecord, or InvalidAddress for an address
            cls.from_dict({**good, key: wrong})


def test_wire_forms_are_camel_case_with_decimal_strings_and_json_booleans() -> None:
    assert EXAMPLES["SplitSettlement"].to_dict() == {
        "holdId": ID,
        "amount": "1036",
        "provider": A,
        "registrationId": ID,
        "inputTokens": "100",
        "outputTokens": "50",
        "usageCapped": True,
        "providerAmount": "1003",
        "fee": "33",
        "feeId": ID,
    }
    assert EXAMPLES["ProviderRegistration"].to_dict()["models"] == ["tiny-chat", "tiny-embed"]
    with pytest.raises(MalformedRecord):
        ProviderApproval.from_dict({"provider": A, "approved": "true", "nonce": NONCE})
    with pytest.raises(MalformedRecord):
        PoolFee.from_dict({"feeBps": str(2**63), "flatFee": "0", "nonce": NONCE})


def test_a_transaction_kind_must_carry_its_own_pool_record() -> None:
    with pytest.raises(MalformedRecord):
        Transaction("redeem", EXAMPLES["Refund"], A, "0x" + "11" * 65)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_pool_parsers_refuse_any_malformed_input_with_a_ledger_error(name: str, data: st.DataObject) -> None:
    """Whatever JSON arrives (each field replaced by anything, or the whole object), a parser
    either returns the record or raises the error tree's ``InvalidInput``: never a TypeError."""
    cls = type(EXAMPLES[name])
    good = EXAMPLES[name].to_dict()
    if data.draw(st.booleans()):
        candidate: Any = {**good, **data.draw(st.dictionaries(st.sampled_from(sorted(good)), _json_values, max_size=3))}
    else:
        candidate = data.draw(_json_values)
    try:
        parsed = cls.from_dict(candidate)
    except InvalidInput:
        return
    assert cls.from_dict(parsed.to_dict()) == parsed

"""x402 ``upto``'s Permit2 authorization on the ledger: its bytes, its rules, its money.

- Encoding: ``ledger.encoding`` makes the same EIP-712 digest as eth-account's generic encoder
  given the SDK's own typed data, and what the unmodified official x402 upto client signs
  verifies with ``ledger.crypto`` (and the independent verifier).
- The record: strict ``from_dict`` (unknown, missing, mistyped, out-of-range fields refused).
- Money: a ``permit2_hold`` reserves the permitted amount, a settle captures the actual cost and
  releases the rest; every refusal (wrong token, spender, facilitator, chain, window, high-S,
  another signer, a reused nonce) raises its specific error and leaves the database
  byte-for-byte unchanged; Permit2 nonces never collide with EIP-3009 nonces of the same payer.
- Export/import round-trips a ledger holding Permit2 holds.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from x402.mechanisms.evm import constants as sdk
from x402.mechanisms.evm.upto import UptoEvmScheme
from x402.schemas import PaymentRequirements

from ledger.amounts import INT64_MAX
from ledger.audit import audit
from ledger.audit.independent_verifier import independent_digest, recover_address_independently
from ledger.crypto import recover_address, sign_digest
from ledger.encoding import (
    PERMIT_WITNESS_TRANSFER_TYPE,
    permit2_domain_separator,
    signing_digest,
    struct_hash,
    transaction_id,
)
from ledger.errors import (
    AuthorizationExpired,
    HighSSignature,
    InferpayError,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    InvalidSignature,
    MalformedRecord,
    NonceReused,
    NotYetValid,
    SettleExceedsHold,
    WrongDomain,
)
from ledger.storage import open_store
from ledger.storage.dump import export_ledger, import_ledger
from ledger.types import (
    PERMIT2_ADDRESS,
    UPTO_PERMIT2_PROXY_ADDRESS,
    ChainInfo,
    Permit2Authorization,
    Transaction,
)
from tests.strategies import chain_infos, permit2_authorizations
from tests.support.ledger import UNIT, LedgerFixture, Party, dump
from tests.support.signatures import high_s_twin

MAX = 5 * UNIT  # what the permit allows; the settle captures less


@pytest.fixture(autouse=True)
def _whole_second_clock(lf: LedgerFixture) -> None:
    lf.clock.set_s(lf.clock.now_s() + 1)


def refused(lf: LedgerFixture, error: type[InferpayError], action: Callable[[], object]) -> InferpayError:
    before = dump(lf.path)
    with pytest.raises(error) as caught:
        action()
    assert dump(lf.path) == before
    return caught.value


def funded(lf: LedgerFixture, name: str, value: int = 10 * UNIT) -> Party:
    party = lf.party(name)
    lf.mint(party.address, value)
    return party


def balances(lf: LedgerFixture, party: Party) -> tuple[int, int]:
    account = lf.ledger.balance(party.address)
    return account.available, account.held


def sdk_requirements(chain: ChainInfo, pay_to: str, amount: int, timeout: int = 60) -> PaymentRequirements:
    """What an x402 resource server offers for upto on this ledger (``facilitatorAddress`` as
    our facilitator's /supported names it: the sealer)."""
    return PaymentRequirements(
        scheme="upto",
        network=f"eip155:{chain.chain_id}",
        asset=chain.token_address,
        amount=str(amount),
        pay_to=pay_to,
        max_timeout_seconds=timeout,
        extra={"facilitatorAddress": chain.sealer, "assetTransferMethod": "permit2"},
    )


def sdk_signed(party: Party, requirements: PaymentRequirements) -> tuple[Permit2Authorization, str]:
    """The unmodified official x402 upto client's payload, parsed by the ledger."""
    payload = UptoEvmScheme(Account.from_key(party.key)).create_payment_payload(requirements)
    assert set(payload) == {"permit2Authorization", "signature"}
    permit = Permit2Authorization.from_dict(payload["permit2Authorization"])
    assert permit.to_dict() == payload["permit2Authorization"]  # the record is the wire form, exactly
    return permit, payload["signature"]


# ---- the bytes: our encoder, eth-account's, the SDK's ----


def test_the_constants_and_struct_are_the_sdks() -> None:
    assert (PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS) == (sdk.PERMIT2_ADDRESS, sdk.X402_UPTO_PERMIT2_PROXY_ADDRESS)
    types = sdk.UPTO_PERMIT2_WITNESS_TYPES

    def encode(name: str) -> str:
        return name + "(" + ",".join(f"{f['type']} {f['name']}" for f in types[name]) + ")"

    assert (
        "".join(encode(n) for n in ("PermitWitnessTransferFrom", "TokenPermissions", "Witness"))
        == PERMIT_WITNESS_TRANSFER_TYPE
    )


@given(chain_infos, permit2_authorizations())
@settings(max_examples=150, deadline=None)
def test_digest_equals_eth_account_on_the_sdks_own_typed_data(chain: ChainInfo, permit: Permit2Authorization) -> None:
    from x402.mechanisms.evm.types import UptoPermit2Payload
    from x402.mechanisms.evm.upto.client import _build_upto_permit2_typed_data

    wire = permit.to_dict()
    sdk_auth = UptoPermit2Payload.from_dict({"permit2Authorization": wire}).permit2_authorization
    domain, fields, primary, message = _build_upto_permit2_typed_data(sdk_auth, chain.chain_id)
    types = {name: [{"name": f.name, "type": f.type} for f in fs] for name, fs in fields.items()}
    signable = encode_typed_data(domain_data=domain, message_types=types, message_data=message)
    assert primary == "PermitWitnessTransferFrom"
    assert signable.header == permit2_domain_separator(chain.chain_id)
    assert signable.body == struct_hash(permit)
    assert independent_digest(chain, permit) == signing_digest(chain, permit)


def test_what_the_official_upto_client_signs_verifies_here(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    permit, signature = sdk_signed(alice, sdk_requirements(lf.chain, bob.address, MAX))
    assert (permit.token, permit.spender, permit.facilitator, permit.to) == (
        lf.chain.token_address,
        UPTO_PERMIT2_PROXY_ADDRESS,
        lf.chain.sealer,
        bob.address,
    )
    digest = signing_digest(lf.chain, permit)
    assert recover_address(digest, signature) == alice.address
    assert recover_address_independently(digest, signature) == alice.address
    assert sign_digest(alice.key, digest) == signature  # RFC 6979 and low-S on both sides: the same bytes
    held = lf.ledger.hold(permit, signature)
    assert lf.ledger.transaction(held.tx_id).tx.kind == "permit2_hold"
    assert balances(lf, alice) == (10 * UNIT - MAX, MAX)


# ---- the record ----


def test_the_record_round_trips_and_is_strict(lf: LedgerFixture) -> None:
    permit, _ = lf.permit2(lf.party("alice"), lf.party("bob").address, MAX)
    wire = permit.to_dict()
    assert Permit2Authorization.from_dict(wire) == permit
    assert permit.nonce_key == f"permit2:{permit.nonce}"

    def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {**wire, "permitted": {**wire["permitted"]}, "witness": {**wire["witness"]}}
        target = out
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return out

    bad: list[tuple[dict[str, Any], type[InferpayError]]] = [
        ({**wire, "extra": "1"}, MalformedRecord),
        (changed(("witness", "facilitator"), KeyError), MalformedRecord),
        (changed(("permitted", "decimals"), "6"), MalformedRecord),
        (changed(("permitted", "amount"), str(INT64_MAX + 1)), InvalidAmount),
        (changed(("permitted", "amount"), "-1"), InvalidAmount),
        (changed(("nonce",), str(2**256)), MalformedRecord),
        (changed(("nonce",), "0x10"), MalformedRecord),
        (changed(("deadline",), True), MalformedRecord),
        (changed(("witness", "validAfter"), "1e3"), MalformedRecord),
        (changed(("witness", "to"), "0x1234"), InvalidInput),
        (changed(("permitted",), "token"), MalformedRecord),
    ]
    for data, error in bad:
        with pytest.raises(error):
            Permit2Authorization.from_dict(data)


def test_a_permit2_hold_record_reads_back_as_itself(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    held = lf.ledger.hold(*lf.permit2(alice, bob.address, MAX))
    stored = lf.ledger.transaction(held.tx_id)
    assert Transaction.from_dict(stored.tx.to_dict()) == stored.tx
    assert transaction_id(stored.tx) == held.tx_id
    with pytest.raises(MalformedRecord):  # a permit cannot ride on an EIP-3009 kind, nor the reverse
        Transaction("hold", stored.tx.message, alice.address, stored.tx.signature, 0, 1)


# ---- money: hold the most, capture the cost, release the rest ----


def test_hold_the_most_then_capture_the_cost_and_release_the_rest(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    permit, signature = lf.permit2(alice, bob.address, MAX)
    held = lf.ledger.hold(permit, signature, expires_at_s=lf.clock.now_s() + 60)
    assert balances(lf, alice) == (10 * UNIT - MAX, MAX)
    row = lf.ledger.store.hold(held.tx_id)
    assert row is not None and (row.payer, row.payee, row.amount, row.status) == (
        alice.address,
        bob.address,
        MAX,
        "open",
    )
    refused(lf, SettleExceedsHold, lambda: lf.ledger.settle(held.tx_id, MAX + 1))
    lf.ledger.settle(held.tx_id, 1234)
    assert balances(lf, alice) == (10 * UNIT - 1234, 0)
    assert balances(lf, bob) == (1234, 0)
    assert lf.ledger.hold(permit, signature, expires_at_s=lf.clock.now_s() + 60).duplicate  # a retry, not a second hold
    assert audit(lf.ledger.store).ok


def test_the_deadline_bounds_the_hold(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    permit, signature = lf.permit2(alice, bob.address, UNIT, ttl=30)
    held = lf.ledger.hold(permit, signature, expires_at_s=lf.clock.now_s() + 3600)
    assert lf.ledger.transaction(held.tx_id).tx.hold_expires_at_s == permit.deadline
    far, far_signature = lf.permit2(alice, bob.address, UNIT, deadline=2**256 - 1)
    assert lf.ledger.transaction(lf.ledger.hold(far, far_signature).tx_id).tx.hold_expires_at_s == INT64_MAX
    lf.clock.advance(30)
    assert [r.tx_id for r in lf.ledger.expire_holds()] and balances(lf, alice)[1] == UNIT
    # A hand-made hold outliving its permit's deadline is refused, whoever signs it.
    late, late_signature = lf.permit2(alice, bob.address, UNIT, ttl=10)
    tx = Transaction("permit2_hold", late, alice.address, late_signature, 0, late.deadline + 1)
    refused(lf, InvalidInput, lambda: lf.ledger.submit(tx))


def test_valid_from_valid_after_inclusive_until_the_deadline(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    now = lf.clock.now_s()
    early = lf.permit2(alice, bob.address, UNIT, valid_after=now + 1)
    refused(lf, NotYetValid, lambda: lf.ledger.hold(*early))
    assert not lf.ledger.hold(*lf.permit2(alice, bob.address, UNIT, valid_after=now)).duplicate
    expired = lf.permit2(alice, bob.address, UNIT, ttl=0)
    error = refused(lf, AuthorizationExpired, lambda: lf.ledger.hold(*expired))
    assert error.details["deadline"] == str(now)


def test_insufficient_funds_for_the_most_refuses_the_hold(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice", UNIT), lf.party("bob")
    refused(lf, InsufficientFunds, lambda: lf.ledger.hold(*lf.permit2(alice, bob.address, UNIT + 1)))


# ---- forged or altered permits ----


FORGERIES: dict[str, Callable[[LedgerFixture, Party, Party], tuple[Permit2Authorization, str, type]]] = {}


def forgery(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(make: Callable[..., Any]) -> Callable[..., Any]:
        FORGERIES[name] = make
        return make

    return register


@forgery("another token")
def _token(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, bob.address, UNIT, token=bob.address), WrongDomain)


@forgery("another spender")
def _spender(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, bob.address, UNIT, spender=sdk.X402_EXACT_PERMIT2_PROXY_ADDRESS), WrongDomain)


@forgery("another facilitator")
def _facilitator(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, bob.address, UNIT, facilitator=lf.chain.operator), WrongDomain)


@forgery("signed for another chain")
def _chain(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, bob.address, UNIT, chain=dataclasses.replace(lf.chain, chain_id=8453)), InvalidSignature)


@forgery("witness.to changed after signing")
def _to(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    permit, signature = lf.permit2(alice, bob.address, UNIT)
    return dataclasses.replace(permit, to=lf.party("mallory").address), signature, InvalidSignature


@forgery("amount raised after signing")
def _amount(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    permit, signature = lf.permit2(alice, bob.address, UNIT)
    return dataclasses.replace(permit, amount=2 * UNIT), signature, InvalidSignature


@forgery("signed by another key")
def _key(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    permit, _ = lf.permit2(alice, bob.address, UNIT)
    return permit, sign_digest(lf.party("mallory").key, signing_digest(lf.chain, permit)), InvalidSignature


@forgery("high-S twin")
def _high_s(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    permit, signature = lf.permit2(alice, bob.address, UNIT)
    return permit, high_s_twin(signature), HighSSignature


@forgery("to oneself")
def _self(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, alice.address, UNIT), InvalidInput)


@forgery("zero amount")
def _zero(lf: LedgerFixture, alice: Party, bob: Party) -> tuple[Permit2Authorization, str, type]:
    return (*lf.permit2(alice, bob.address, 0), InvalidAmount)


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_or_altered_permit_is_refused_and_changes_nothing(lf: LedgerFixture, name: str) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    permit, signature, error = FORGERIES[name](lf, alice, bob)
    refused(lf, error, lambda: lf.ledger.hold(permit, signature))
    assert balances(lf, alice) == (10 * UNIT, 0)


# ---- nonces: once ever per payer, in a namespace of their own ----


def test_a_permit2_nonce_is_used_once_ever(lf: LedgerFixture) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    first = lf.permit2(alice, bob.address, UNIT, nonce=7)
    held = lf.ledger.hold(*first)
    lf.ledger.settle(held.tx_id, 1)
    again = lf.permit2(alice, bob.address, 2 * UNIT, nonce=7)  # another permit, the same nonce
    refused(lf, NonceReused, lambda: lf.ledger.hold(*again))
    carol = funded(lf, "carol")  # nonces are per payer: another payer's 7 is another nonce
    assert not lf.ledger.hold(*lf.permit2(carol, alice.address, 1, nonce=7)).duplicate
    assert sorted(n for s, n in lf.ledger.store.iter_nonces() if s == alice.address and n.startswith("permit2:")) == [
        "permit2:7"
    ]


def test_a_permit2_nonce_never_collides_with_the_same_payers_eip3009_nonce(lf: LedgerFixture) -> None:
    """EIP-3009 nonce 0x00..07 and Permit2 nonce 7 (and the reverse order) are different nonces."""
    alice, bob = funded(lf, "alice"), lf.party("bob")
    for number in (7, 2**256 - 1):
        as_bytes32 = "0x" + number.to_bytes(32, "big").hex()
        lf.transfer(alice, bob.address, 1, nonce=as_bytes32)
        assert not lf.ledger.hold(*lf.permit2(alice, bob.address, 1, nonce=number)).duplicate
    held = lf.ledger.hold(*lf.permit2(alice, bob.address, 1, nonce=42))
    assert not lf.ledger.transfer(*lf.authorization(alice, bob.address, 1, nonce="0x" + f"{42:064x}")).duplicate
    assert lf.ledger.transaction(held.tx_id).tx.kind == "permit2_hold"
    assert audit(lf.ledger.store).ok


# ---- export and import ----


def test_export_and_import_round_trip_permit2_holds(lf: LedgerFixture, tmp_path: Path) -> None:
    alice, bob = funded(lf, "alice"), lf.party("bob")
    settled = lf.ledger.hold(*lf.permit2(alice, bob.address, MAX))
    lf.ledger.settle(settled.tx_id, 999)
    lf.ledger.seal_all()
    lf.ledger.hold(*lf.permit2(alice, bob.address, UNIT, nonce=1))  # still open, not yet sealed
    out = io.StringIO()
    export_ledger(lf.ledger.store, out)
    target = open_store(tmp_path / "copy.db")
    try:
        result = import_ledger(target, io.StringIO(out.getvalue()))
        assert result.head == lf.ledger.head() and result.transactions == 4  # mint, hold, settle, hold
        assert list(target.accounts()) == list(lf.ledger.store.accounts())
        assert target.open_holds() == lf.ledger.store.open_holds()
        assert sorted(target.iter_nonces()) == sorted(lf.ledger.store.iter_nonces())
        again = io.StringIO()
        export_ledger(target, again)
        assert again.getvalue() == out.getvalue()
        assert audit(target, independent=True, workers=1).ok
    finally:
        target.close()

"""Hypothesis on the parsers tests/ did not fuzz yet (``reliability.fuzz_surfaces`` runs the same
inputs in the suite): Permit2 authorizations, facilitator request bodies, and mutations of a
valid tlog policy. Each may refuse an input only with an ``InferpayError``."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire.facilitator import FacilitatorRequest, parse_payment
from ledger.errors import InferpayError
from ledger.tlog.policy import parse_policy
from ledger.types import Permit2Authorization
from reliability.fuzz import JSON, mutated
from reliability.fuzz_surfaces import mutated_bytes, policy_text
from tests.strategies import permit2_authorizations

REQUIREMENT = {
    "scheme": "exact",
    "network": "eip155:4242",
    "asset": "0x" + "11" * 20,
    "amount": "1000",
    "payTo": "0x" + "22" * 20,
    "maxTimeoutSeconds": 60,
    "extra": {"name": "inferpay", "version": "1"},
}


@st.composite
def facilitator_bodies(draw: st.DrawFn) -> bytes:
    permit = draw(permit2_authorizations()).to_dict()
    inner: dict[str, Any] = {"permit2Authorization": permit, "signature": "0x" + "ab" * 65}
    payload = {"x402Version": 2, "accepted": REQUIREMENT, "payload": inner}
    body = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": REQUIREMENT}
    return json.dumps(draw(mutated(body))).encode()


@settings(max_examples=150)
@given(st.one_of(permit2_authorizations().map(Permit2Authorization.to_dict).flatmap(mutated), JSON))
def test_permit2_from_dict_raises_only_inferpay_errors(data: Any) -> None:
    with contextlib.suppress(InferpayError):
        parsed = Permit2Authorization.from_dict(data)
        assert Permit2Authorization.from_dict(parsed.to_dict()) == parsed


@settings(max_examples=150)
@given(st.one_of(facilitator_bodies(), st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode())))
def test_facilitator_bodies_raise_only_inferpay_errors(body: bytes) -> None:
    with contextlib.suppress(InferpayError):
        request = FacilitatorRequest.from_body(body)
        request.payer_hint()
        parse_payment(request, settling=True)


@settings(max_examples=150)
@given(mutated_bytes(policy_text()))
def test_a_mutated_policy_raises_only_malformed_policy(text: bytes) -> None:
    with contextlib.suppress(InferpayError):
        parse_policy(text)

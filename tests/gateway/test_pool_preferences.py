"""The request's ``provider`` object: what parses, what is refused, and that nothing else escapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.server.pool.preferences import KEYS, ProviderPreferences
from gateway.wire.errors import MalformedProviderPreferences
from tests.strategies import addresses, provider_preferences

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)


@given(provider_preferences())
def test_every_well_formed_object_parses_to_what_it_says(data: dict[str, Any]) -> None:
    prefs = ProviderPreferences.from_dict(data)
    assert prefs.allow_fallbacks is data.get("allow_fallbacks", True)
    assert prefs.sort == data.get("sort")
    assert prefs.order == tuple(data.get("order", []))
    assert prefs.only == (tuple(data["only"]) if "only" in data else None)
    assert prefs.max_price == (int(data["max_price"]) if "max_price" in data else None)
    assert ProviderPreferences.from_dict(prefs.to_dict()) == prefs


@given(json_values)
def test_any_json_value_parses_or_is_refused_with_the_one_error(value: Any) -> None:
    try:
        prefs = ProviderPreferences.from_dict(value)
    except MalformedProviderPreferences as exc:
        assert exc.message.startswith("provider")
        return
    assert value is None or (isinstance(value, dict) and set(value) <= set(KEYS))
    assert isinstance(prefs, ProviderPreferences)


@given(provider_preferences(), st.text(min_size=1, max_size=20).filter(lambda k: k not in KEYS), json_values)
def test_an_unknown_key_is_refused_by_name(data: dict[str, Any], key: str, value: Any) -> None:
    with pytest.raises(MalformedProviderPreferences, match="unknown key"):
        ProviderPreferences.from_dict({**data, key: value})


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"sort": "cheapest"}, "provider.sort"),
        ({"max_price": 0.5}, "provider.max_price"),  # money is never a float
        ({"max_price": -1}, "provider.max_price"),
        ({"max_price": str(2**63)}, "provider.max_price"),
        ({"max_price": True}, "provider.max_price"),
        ({"allow_fallbacks": 0}, "provider.allow_fallbacks"),
        ({"order": "0xabc"}, "provider.order"),
        ({"only": ["nope"]}, "provider.only[0]"),
        ({"ignore": [None]}, "provider.ignore[0]"),
        ([], "provider:"),
    ],
)
def test_a_wrong_value_names_its_key(data: Any, names: str) -> None:
    with pytest.raises(MalformedProviderPreferences) as caught:
        ProviderPreferences.from_dict(data)
    assert names in caught.value.message


@given(addresses)
def test_an_address_listed_twice_in_any_case_is_refused(address: str) -> None:
    with pytest.raises(MalformedProviderPreferences, match="twice"):
        ProviderPreferences.from_dict({"order": [address, address.lower()]})

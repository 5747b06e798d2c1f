"""Shared Hypothesis strategies for inferpay's domain values.

One place for "an address", "an amount", "an authorization", ... so every test draws them the
same way. Add new strategies here rather than in a test module.
"""

from __future__ import annotations

from eth_utils import to_checksum_address
from hypothesis import strategies as st

from ledger.amounts import MAX_AMOUNT
from ledger.crypto import SECP256K1_N
from ledger.types import (
    UINT256_MAX,
    Address,
    Authorization,
    Bytes32Hex,
    ChainInfo,
    HoldResolution,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
)

# Times as signed in authorizations: seconds, anywhere in uint256 (the ledger must not assume
# they fit in 64 bits), but mostly around now so that ordering bugs show up.
_NOW_ISH = st.integers(min_value=1_600_000_000, max_value=2_200_000_000)

addresses: st.SearchStrategy[Address] = st.binary(min_size=20, max_size=20).map(
    lambda raw: Address(to_checksum_address(raw))
)
"""EIP-55 checksummed addresses."""

bytes32_hex: st.SearchStrategy[Bytes32Hex] = st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex())
"""Lowercase 0x + 64 hex digits: nonces, hold ids, hashes."""

nonces = bytes32_hex

amounts: st.SearchStrategy[int] = st.one_of(
    st.integers(min_value=1, max_value=MAX_AMOUNT),
    st.sampled_from([1, 999_999, 1_000_000, MAX_AMOUNT - 1, MAX_AMOUNT]),
)
"""Positive amounts in base units, edges included."""

amounts_or_zero: st.SearchStrategy[int] = st.one_of(st.just(0), amounts)

timestamps: st.SearchStrategy[int] = st.one_of(_NOW_ISH, st.integers(0, UINT256_MAX))

private_keys: st.SearchStrategy[bytes] = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(
    lambda k: k.to_bytes(32, "big")
)
"""Valid secp256k1 private keys, as 32 bytes."""

_domain_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # no lone surrogates: not encodable
    max_size=40,
)

chain_infos: st.SearchStrategy[ChainInfo] = st.builds(
    ChainInfo,
    chain_id=st.one_of(st.integers(1, 2**64), st.integers(0, UINT256_MAX)),
    token_address=addresses,
    operator=addresses,
    sealer=addresses,
    name=st.one_of(st.just("inferpay"), _domain_text),
    version=st.one_of(st.just("1"), _domain_text),
)


@st.composite
def authorizations(draw: st.DrawFn, from_: Address | None = None) -> Authorization:
    """EIP-3009 authorizations with validAfter < validBefore (from ``from_`` if given)."""
    valid_after = draw(timestamps.filter(lambda t: t < UINT256_MAX))
    valid_before = draw(st.integers(valid_after + 1, min(valid_after + 10**6, UINT256_MAX)))
    return Authorization(
        from_=from_ if from_ is not None else draw(addresses),
        to=draw(addresses),
        value=draw(amounts_or_zero),
        valid_after=valid_after,
        valid_before=valid_before,
        nonce=draw(nonces),
    )


@st.composite
def permit2_authorizations(draw: st.DrawFn, from_: Address | None = None) -> Permit2Authorization:
    """x402 upto Permit2 authorizations: any addresses, any uint256 nonce, deadline and validAfter
    (the encoding must not assume they fit in 64 bits), amounts in range."""
    return Permit2Authorization(
        from_=from_ if from_ is not None else draw(addresses),
        token=draw(addresses),
        amount=draw(amounts_or_zero),
        spender=draw(addresses),
        nonce=draw(st.integers(0, UINT256_MAX)),
        deadline=draw(timestamps),
        to=draw(addresses),
        facilitator=draw(addresses),
        valid_after=draw(timestamps),
    )


mints: st.SearchStrategy[Mint] = st.builds(Mint, to=addresses, value=amounts, nonce=nonces)

hold_resolutions: st.SearchStrategy[HoldResolution] = st.one_of(
    st.builds(HoldResolution, hold_id=bytes32_hex, outcome=st.just("settle"), amount=amounts_or_zero),
    st.builds(HoldResolution, hold_id=bytes32_hex, outcome=st.sampled_from(["void", "expire"]), amount=st.just(0)),
)

# ---- the compute pool's records ----

_printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)
prices: st.SearchStrategy[int] = st.one_of(
    st.integers(0, 10**9), st.sampled_from([0, 1, 999, 1000, 1001, MAX_AMOUNT]), st.integers(0, MAX_AMOUNT)
)
"""Prices and fees in base units, 0 and the 64-bit edge included."""

token_counts: st.SearchStrategy[int] = st.one_of(st.integers(0, 10**7), st.sampled_from([0, 1, 999, 1000, 1001]))

endpoints: st.SearchStrategy[str] = st.builds(
    lambda scheme, port, path: f"{scheme}://127.0.0.1:{port}{path}",
    st.sampled_from(["http", "https"]),
    st.integers(1, 65535),
    st.sampled_from(["", "/v1", "/openai/v1"]),
)

provider_registrations: st.SearchStrategy[ProviderRegistration] = st.builds(
    ProviderRegistration,
    provider=addresses,
    endpoint=endpoints,
    models=st.lists(_printable, min_size=1, max_size=5, unique=True).map(tuple),
    price_per_call=prices,
    price_per_1k_input=prices,
    price_per_1k_output=prices,
    capacity=st.integers(0, 1000),
    status=st.sampled_from(["active", "withdrawn"]),
    nonce=nonces,
)

pool_fees: st.SearchStrategy[PoolFee] = st.builds(
    PoolFee, fee_bps=st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 10_000])), flat_fee=prices, nonce=nonces
)

split_settlements: st.SearchStrategy[SplitSettlement] = st.builds(
    SplitSettlement,
    hold_id=bytes32_hex,
    amount=amounts_or_zero,
    provider=addresses,
    registration_id=bytes32_hex,
    input_tokens=token_counts,
    output_tokens=token_counts,
    usage_capped=st.booleans(),
    provider_amount=amounts_or_zero,
    fee=amounts_or_zero,
    fee_id=bytes32_hex,
)

pool_messages = st.one_of(
    provider_registrations,
    st.builds(ProviderApproval, provider=addresses, approved=st.booleans(), nonce=nonces),
    pool_fees,
    split_settlements,
    st.builds(Redeem, from_=addresses, value=amounts, payout_reference=_printable, nonce=nonces),
    st.builds(Refund, settle_id=bytes32_hex, from_=addresses, value=amounts, nonce=nonces),
)
"""Every record of the compute pool (not necessarily valid against any ledger's state)."""

messages: st.SearchStrategy[
    Authorization
    | Permit2Authorization
    | Mint
    | HoldResolution
    | ProviderRegistration
    | ProviderApproval
    | PoolFee
    | SplitSettlement
    | Redeem
    | Refund
] = st.one_of(authorizations(), permit2_authorizations(), mints, hold_resolutions, pool_messages)
"""Anything a user, a provider or the operator signs."""


# ---- transparency logs (ledger/tlog) ----

key_names: st.SearchStrategy[str] = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="+\u0085\u180e"),
    min_size=1,
    max_size=40,
).filter(lambda name: not any(ch.isspace() for ch in name))
"""signed-note key names: non-empty, no Unicode space, no '+'."""

note_lines: st.SearchStrategy[str] = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=60
).map(lambda text: "".join(ch for ch in text if ch >= " "))
"""One line a note may hold (possibly empty): no control character at all."""

note_texts: st.SearchStrategy[bytes] = st.lists(note_lines, min_size=1, max_size=6).map(
    lambda lines: "".join(line + "\n" for line in lines).encode("utf-8")
)
"""Note texts: lines ending in a newline (blank lines allowed)."""

hashes32: st.SearchStrategy[bytes] = st.binary(min_size=32, max_size=32)

tree_sizes: st.SearchStrategy[int] = st.one_of(
    st.integers(0, 5000), st.sampled_from([255, 256, 257, 65535, 65536, 65537, (1 << 63) - 1])
)
query_values: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e3",
            "9" * 30,
            "٣",
            "²",
            " 5",
            "5 ",
            "0x",
            "<script>alert(1)</script>",
            "%00",
            "\x00",
            "a" * 300,
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
"""What a client may put in a query parameter: anything, with the usual suspects for integer parsing."""


@st.composite
def provider_preferences(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed OpenRouter-style ``provider`` object, as a request body carries it
    (``gateway.server.pool.preferences``): any subset of its keys, addresses unique per list."""
    from gateway.server.pool.preferences import SORTS

    unique = st.lists(addresses, max_size=5, unique_by=lambda a: a.lower())
    fields: dict[str, st.SearchStrategy[object]] = {
        "order": unique,
        "sort": st.sampled_from(SORTS),
        "max_price": st.one_of(st.integers(0, MAX_AMOUNT), st.integers(0, MAX_AMOUNT).map(str)),
        "allow_fallbacks": st.booleans(),
        "only": unique,
        "ignore": unique,
    }
    chosen = draw(st.sets(st.sampled_from(sorted(fields))))
    return {key: draw(fields[key]) for key in sorted(chosen)}

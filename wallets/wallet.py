"""A wallet: a named private key that signs ledger messages.

What it is for: making the EIP-712 signatures users and the operator give the ledger (an
EIP-3009 transfer authorization, a mint, a hold resolution), with the digest from
``ledger.encoding`` and the signature from ``ledger.crypto``, and handing the same key to the
eth-account / x402 ecosystem when a caller asks for it.

It must never touch the curve itself (only ``ledger.crypto`` does), and never log, print,
pickle or ``repr`` its private key: the key leaves only through ``private_key_bytes()``,
which exists for export, and ``local_account()``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, NoReturn

from ledger.amounts import check_amount
from ledger.clock import ms_to_s, system_now_ms
from ledger.crypto import address_of, new_private_key, sign_digest
from ledger.encoding import signing_digest
from ledger.errors import InvalidInput
from ledger.types import (
    Address,
    Amount,
    Authorization,
    Bytes32Hex,
    ChainInfo,
    Message,
    SignatureHex,
    parse_address,
    parse_bytes32,
)
from wallets.keystore import check_private_key

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

DEFAULT_TTL_SECONDS = 600
# EIP-3009 accepts an authorization only when validAfter < now. Backdating by a few seconds
# keeps a fresh authorization valid on a verifier whose clock is slightly behind ours.
VALID_AFTER_SLACK_SECONDS = 5


class Wallet:
    """A name, an address and the private key behind it. Immutable once made."""

    __slots__ = ("_name", "_address", "_key")

    _name: str
    _address: Address
    _key: bytes

    def __init__(self, name: str, private_key: bytes) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput("wallet name must be non-empty text")
        key = check_private_key(private_key)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_address", address_of(key))

    @classmethod
    def from_private_key(cls, name: str, key: bytes) -> Wallet:
        return cls(name, key)

    @classmethod
    def generate(cls, name: str) -> Wallet:
        """A wallet with a fresh random key (from the operating system's CSPRNG)."""
        return cls(name, new_private_key())

    # ---- immutability, and keeping the key out of reprs and pickles ----

    def __setattr__(self, attr: str, value: object) -> NoReturn:
        raise AttributeError(f"Wallet is immutable; cannot set {attr!r}")

    def __delattr__(self, attr: str) -> NoReturn:
        raise AttributeError(f"Wallet is immutable; cannot delete {attr!r}")

    def __reduce__(self) -> NoReturn:
        # Pickling would write the raw key wherever the pickle goes (a cache, a task queue).
        raise TypeError("a Wallet holds a private key and cannot be pickled; export a keystore")

    def __repr__(self) -> str:
        return f"Wallet(name={self._name!r}, address={self._address!r})"

    def __copy__(self) -> Wallet:
        return self  # immutable, so a copy may be the object itself

    def __deepcopy__(self, memo: dict[int, object]) -> Wallet:
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wallet):
            return NotImplemented
        # The address stands for the key; comparing it keeps the key out of comparisons.
        return self._name == other._name and self._address == other._address

    def __hash__(self) -> int:
        return hash((self._name, self._address))

    # ---- what a wallet is ----

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> Address:
        return self._address

    def private_key_bytes(self) -> bytes:
        """The raw 32-byte key. For export only: never log it or send it anywhere."""
        return self._key

    def local_account(self) -> LocalAccount:
        """The same key as an eth-account ``LocalAccount`` (for x402 clients and eth-account)."""
        from eth_account import Account  # imported here: heavy, and most callers never need it

        account: LocalAccount = Account.from_key(self._key)  # eth-account's from_key is untyped
        return account

    # ---- signing ----

    def sign(self, chain: ChainInfo, message: Message) -> SignatureHex:
        """The EIP-712 signature of ``message`` under ``chain``'s domain (65 bytes, low-S)."""
        return sign_digest(self._key, signing_digest(chain, message))

    def authorize_transfer(
        self,
        chain: ChainInfo,
        to: Address,
        value: Amount,
        *,
        valid_after: int | None = None,
        valid_before: int | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        nonce: Bytes32Hex | bytes | None = None,
    ) -> tuple[Authorization, SignatureHex]:
        """Sign an EIP-3009 TransferWithAuthorization of ``value`` base units to ``to``.

        By default the authorization is valid from 5 s ago until ``ttl_seconds`` from now, and
        carries a random 32-byte nonce (EIP-3009 nonces are random, not sequential).
        """
        now = ms_to_s(system_now_ms())
        if valid_after is None:
            valid_after = now - VALID_AFTER_SLACK_SECONDS
        if valid_before is None:
            if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
                raise InvalidInput(f"ttl_seconds must be an integer, got {ttl_seconds!r}")
            if ttl_seconds <= 0:
                raise InvalidInput(f"ttl_seconds must be a positive integer, got {ttl_seconds!r}")
            valid_before = now + ttl_seconds
        if isinstance(nonce, bytes):
            if len(nonce) != 32:
                raise InvalidInput(f"nonce must be 32 bytes, got {len(nonce)}")
            nonce = "0x" + nonce.hex()
        elif nonce is None:
            nonce = "0x" + secrets.token_bytes(32).hex()
        fields: dict[str, Any] = {
            "from": self._address,
            "to": parse_address(to, "to"),
            "value": check_amount(value),
            "validAfter": valid_after,
            "validBefore": valid_before,
            "nonce": parse_bytes32(nonce, "nonce"),
        }
        # Through from_dict, so nothing is signed that the ledger would refuse to parse.
        authorization = Authorization.from_dict(fields)
        if authorization.valid_after >= authorization.valid_before:
            raise InvalidInput(
                f"validAfter ({authorization.valid_after}) must be before validBefore ({authorization.valid_before})"
            )
        return authorization, self.sign(chain, authorization)

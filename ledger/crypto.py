"""The only module that touches the curve: secp256k1 keys, signing and recovery.

Signing and recovery run on libsecp256k1 (through coincurve): constant-time, RFC 6979
deterministic nonces, and always low-S. Signatures are Ethereum's 65 bytes r || s || v with
v = 27 or 28. Recovery refuses high-S signatures (s > n/2): each (r, s) has a twin (r, n - s)
that also verifies, and accepting both would let anyone mint a second valid encoding of a
payment. This module must never log or return a private key anywhere but to its caller.
"""

from __future__ import annotations

import re
import secrets

from coincurve import PrivateKey, PublicKey

from ledger.addresses import to_checksum_address
from ledger.errors import HighSSignature, InvalidSignature
from ledger.keccak import keccak
from ledger.types import Address, SignatureHex

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2
_SIG65 = re.compile(r"0x[0-9a-fA-F]{130}")


def new_private_key() -> bytes:
    while True:
        candidate = secrets.token_bytes(32)
        if 0 < int.from_bytes(candidate, "big") < SECP256K1_N:
            return candidate


def address_of_public_key(uncompressed: bytes) -> Address:
    return Address(to_checksum_address(keccak(uncompressed[1:])[-20:]))


def address_of(private_key: bytes) -> Address:
    return address_of_public_key(PrivateKey(private_key).public_key.format(compressed=False))


def sign_digest(private_key: bytes, digest: bytes) -> SignatureHex:
    """Sign a 32-byte digest; returns 0x + r || s || v (v in {27, 28}), low-S by construction."""
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    raw = PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return "0x" + raw[:64].hex() + format(27 + raw[64], "02x")


def split_signature(signature: SignatureHex) -> tuple[int, int, int]:
    """(r, s, recovery id) of a 65-byte signature; rejects bad length, v, zero or high-S values."""
    if not isinstance(signature, str) or _SIG65.fullmatch(signature) is None:
        raise InvalidSignature("signature must be 0x + 130 hex digits (65 bytes)")
    raw = bytes.fromhex(signature[2:])
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    # Only Ethereum's v = 27/28: also accepting 0/1 would give each signature a second encoding.
    if v not in (27, 28):
        raise InvalidSignature(f"signature v must be 27 or 28, got {v}")
    recovery_id = v - 27
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise InvalidSignature("signature r or s out of range")
    if s > HALF_N:
        raise HighSSignature("high-S signature refused (malleable encoding; use s <= n/2)")
    return r, s, recovery_id


def recover_address(digest: bytes, signature: SignatureHex) -> Address:
    """The address whose key made ``signature`` over ``digest``; raises if it is not a valid one."""
    return Address(to_checksum_address(_recover_address_bytes(digest, signature)))


def _recover_address_bytes(digest: bytes, signature: SignatureHex) -> bytes:
    r, s, recovery_id = split_signature(signature)
    compact = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([recovery_id])
    try:
        public_key = PublicKey.from_signature_and_message(compact, digest, hasher=None)
    except Exception as exc:  # coincurve raises bare Exception for unrecoverable signatures
        raise InvalidSignature("signature does not recover to a public key") from exc
    return bytes(keccak(public_key.format(compressed=False)[1:])[-20:])


def verify_signed_by(digest: bytes, signature: SignatureHex, expected: Address, what: str) -> None:
    # Compare raw 20-byte addresses: the EIP-55 checksum costs more than the recovery's hashing.
    signer = _recover_address_bytes(digest, signature)
    if signer != bytes.fromhex(expected[2:]):
        raise InvalidSignature(
            f"{what} is not signed by {expected}", signer=to_checksum_address(signer), expected=expected
        )


class KeySigner:
    """A private key that signs digests; the ledger receives one for its sealer, never a path."""

    def __init__(self, private_key: bytes) -> None:
        self._key = PrivateKey(private_key)
        self.address: Address = address_of_public_key(self._key.public_key.format(compressed=False))

    def sign_digest(self, digest: bytes) -> SignatureHex:
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        raw = self._key.sign_recoverable(digest, hasher=None)
        return "0x" + raw[:64].hex() + format(27 + raw[64], "02x")

    def __repr__(self) -> str:
        return f"KeySigner({self.address})"

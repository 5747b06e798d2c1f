"""Ed25519 (RFC 8032) for the transparency-log formats: the one module that imports a crypto library for it.

What it is for: generating a 32-byte seed, deriving its public key, signing and verifying
bytes. Everything above it (note keys, cosignature keys) deals in these raw byte strings.

It must never do I/O, choose what is signed (the callers build the message), or raise on a bad
signature or key when verifying: ``VerifyKey.verify`` answers ``False`` to anything malformed.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed25519

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def new_seed() -> bytes:
    """A fresh private key seed from the operating system's CSPRNG."""
    return _ed25519.Ed25519PrivateKey.generate().private_bytes_raw()


class SigningKey:
    """An Ed25519 private key from its 32-byte seed. ``repr`` never shows the seed."""

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes")
        self._key = _ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        self.seed = seed
        self.public_key: bytes = self._key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key.hex()})"


class VerifyKey:
    """An Ed25519 public key. Raises ValueError if it is not 32 bytes."""

    def __init__(self, public_key: bytes) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
        self._key = _ed25519.Ed25519PublicKey.from_public_bytes(public_key)
        self.public_key = public_key

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"VerifyKey({self.public_key.hex()})"

"""Signature bytes tests need to forge: kept in one place."""

from __future__ import annotations

from ledger.crypto import SECP256K1_N


def high_s_twin(signature: str) -> str:
    """The other valid encoding of the same ECDSA signature: (r, n - s, v flipped), which also
    verifies and which every verifier here must refuse (malleability)."""
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    return "0x" + raw[:32].hex() + (SECP256K1_N - s).to_bytes(32, "big").hex() + format(55 - raw[64], "02x")

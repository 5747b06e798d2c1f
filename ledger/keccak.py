"""Keccak-256 (Ethereum's hash, not FIPS SHA3-256) for everything the ledger signs or derives.

libkeccak through safe-pysha3 (eth-hash's own ``pysha3`` backend), called directly: about
1 µs per digest against about 8 µs through ``eth_hash.auto``, which picks pycryptodome's
ctypes wrapper first. A paid call computes about ten digests. The independent verifier
(``ledger.audit.independent_verifier``) keeps using pycryptodome, so the two implementations check
each other in the tests.
"""

from __future__ import annotations

from sha3 import keccak_256  # safe-pysha3 (ships its own stub)


def keccak(data: bytes) -> bytes:
    digest: bytes = keccak_256(data).digest()
    return digest

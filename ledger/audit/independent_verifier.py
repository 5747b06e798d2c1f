"""A second, independent signature verifier: pure-Python ``ecdsa`` instead of libsecp256k1.

What it is for: checking ``ledger.crypto`` against an implementation that shares none of its
code (tests, and auditors who want a second opinion). It applies the same acceptance rules,
written out again here rather than imported: 65 bytes r || s || v, v = 27 or 28,
0 < r < n, 0 < s <= n/2 (low-S), and recovery of the public key from (r, s, v).

The x402 upto Permit2 authorization is signed under Permit2's domain with nested structs, the
one digest ``ledger.encoding`` makes that no other path checks: ``independent_digest``
computes it again with eth-account's generic EIP-712 encoder, from the struct and domain
written out again here, so the second opinion covers that encoding as well as the curve.

This is the one exception to "only ``ledger.crypto`` touches curves", and it is read-only:
it must never sign or hold a private key (the ``ecdsa`` package is not constant-time), and it
is slow (milliseconds per signature), so it must never sit on the ledger's hot path.
"""

from __future__ import annotations

import re
from hashlib import sha256
from typing import Any

from ecdsa import SECP256k1, VerifyingKey
from ecdsa.util import sigdecode_string
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from ledger.encoding import signing_digest
from ledger.errors import HighSSignature, InvalidSignature
from ledger.types import Address, ChainInfo, Message, Permit2Authorization

_N = SECP256k1.order
_SIGNATURE_TEXT = re.compile(r"0x[0-9a-fA-F]{130}")


def recover_address_independently(digest: bytes, signature: str) -> Address:
    """The address that made ``signature`` over the 32-byte ``digest``, or a ledger error."""
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise InvalidSignature("digest must be 32 bytes")
    if not isinstance(signature, str) or _SIGNATURE_TEXT.fullmatch(signature) is None:
        raise InvalidSignature("signature must be 0x + 130 hex digits (65 bytes)")
    raw = bytes.fromhex(signature[2:])
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v not in (27, 28):
        raise InvalidSignature(f"signature v must be 27 or 28, got {v}")
    if not (0 < r < _N and 0 < s < _N):
        raise InvalidSignature("signature r or s out of range")
    if s > _N // 2:
        raise HighSSignature("high-S signature refused (malleable encoding; use s <= n/2)")
    try:
        # ecdsa returns the key for R with even y first, then odd y: v - 27 is R's y parity.
        candidates = VerifyingKey.from_public_key_recovery_with_digest(
            raw[:64], digest, curve=SECP256k1, hashfunc=sha256, sigdecode=sigdecode_string
        )
        key = candidates[v - 27]
        # Belt and braces: the recovered key must verify the signature the ordinary way.
        key.verify_digest(raw[:64], digest, sigdecode=sigdecode_string)
    except Exception as exc:  # no point for r on the curve, or a failed verification
        raise InvalidSignature("signature does not recover to a public key") from exc
    return Address(to_checksum_address(keccak(key.to_string("uncompressed")[1:])[-20:]))


# Permit2's canonical deployment (the same on every EVM chain) and x402 upto's witness struct,
# written out again rather than taken from ledger.types / ledger.encoding.
_PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
_PERMIT2_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"},
    ],
    "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "Witness": [
        {"name": "to", "type": "address"},
        {"name": "facilitator", "type": "address"},
        {"name": "validAfter", "type": "uint256"},
    ],
}


def independent_digest(chain: ChainInfo, message: Message) -> bytes:
    """The digest the second opinion checks ``message``'s signature over: a Permit2
    authorization's from eth-account's encoder (module docstring), any other's from
    ``ledger.encoding`` (its direct digests are checked against eth-account in the tests)."""
    if not isinstance(message, Permit2Authorization):
        return signing_digest(chain, message)
    record = message.to_dict()
    permitted, witness = record["permitted"], record["witness"]
    full: dict[str, Any] = {
        "types": _PERMIT2_TYPES,
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": "Permit2", "chainId": chain.chain_id, "verifyingContract": _PERMIT2},
        "message": {
            "permitted": {"token": permitted["token"], "amount": int(permitted["amount"])},
            "spender": record["spender"],
            "nonce": int(record["nonce"]),
            "deadline": int(record["deadline"]),
            "witness": {
                "to": witness["to"],
                "facilitator": witness["facilitator"],
                "validAfter": int(witness["validAfter"]),
            },
        },
    }
    signable = encode_typed_data(full_message=full)
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))

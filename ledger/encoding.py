"""Every byte that inferpay hashes or signs is made here, each with its own domain separation.

- What users and the operator sign: EIP-712 digests under the ledger's domain
  ``{name, version, chainId, verifyingContract}``. The structs are fixed, so their digests are
  computed directly (keccak over ABI words) instead of through a generic typed-data encoder:
  about 10x faster, and ``tests/ledger/test_crypto_encoding.py`` checks them against eth-account's encoder.
  The one struct signed under another domain is x402 upto's Permit2 ``PermitWitnessTransferFrom``:
  Permit2's domain ``{name: "Permit2", chainId, verifyingContract: PERMIT2_ADDRESS}`` (no
  version), with this ledger's chain id, as the official x402 client signs it
  (``tests/ledger/test_permit2.py`` checks it against eth-account and against that client).
- What the ledger hashes: canonical JSON (sorted keys, no spaces, ASCII) behind a
  per-purpose prefix, so a transaction's bytes can never be read as a block header's.
  A transaction's id comes from its signed content, never from its signature bytes.
This module must never perform I/O or hold keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from ledger import merkle
from ledger.keccak import keccak
from ledger.types import (
    PERMIT2_ADDRESS,
    Allowance,
    Authorization,
    BlockHeader,
    ChainInfo,
    Charge,
    HoldResolution,
    Message,
    Mint,
    Permit2Authorization,
    PoolFee,
    ProviderApproval,
    ProviderRegistration,
    Redeem,
    Refund,
    SplitSettlement,
    Transaction,
)

EIP712_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
TRANSFER_TYPE = (
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    "uint256 validBefore,bytes32 nonce)"
)
MINT_TYPE = "Mint(address to,uint256 value,bytes32 nonce)"
RESOLUTION_TYPE = "HoldResolution(bytes32 holdId,string outcome,uint256 amount)"
ALLOWANCE_TYPE = "SpendingAllowance(address owner,address spender,uint256 cap,uint256 validBefore,bytes32 nonce)"
CHARGE_TYPE = "Charge(bytes32 allowanceId,uint256 amount,bytes32 requestId)"
# The compute pool's structs (ledger.pool_types), under the ledger's own domain.
PROVIDER_REGISTRATION_TYPE = (
    "ProviderRegistration(address provider,string endpoint,string[] models,uint256 pricePerCall,"
    "uint256 pricePer1kInput,uint256 pricePer1kOutput,uint256 capacity,string status,bytes32 nonce)"
)
PROVIDER_APPROVAL_TYPE = "ProviderApproval(address provider,bool approved,bytes32 nonce)"
POOL_FEE_TYPE = "PoolFee(uint256 feeBps,uint256 flatFee,bytes32 nonce)"
SPLIT_SETTLEMENT_TYPE = (
    "SplitSettlement(bytes32 holdId,uint256 amount,address provider,bytes32 registrationId,uint256 inputTokens,"
    "uint256 outputTokens,bool usageCapped,uint256 providerAmount,uint256 fee,bytes32 feeId)"
)
REDEEM_TYPE = "Redeem(address from,uint256 value,string payoutReference,bytes32 nonce)"
REFUND_TYPE = "Refund(bytes32 settleId,address from,uint256 value,bytes32 nonce)"
# Permit2's domain has no version; its referenced structs follow the primary one in name order.
PERMIT2_DOMAIN_TYPE = "EIP712Domain(string name,uint256 chainId,address verifyingContract)"
PERMIT2_DOMAIN_NAME = "Permit2"
TOKEN_PERMISSIONS_TYPE = "TokenPermissions(address token,uint256 amount)"
UPTO_WITNESS_TYPE = "Witness(address to,address facilitator,uint256 validAfter)"
PERMIT_WITNESS_TRANSFER_TYPE = (
    "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
    "Witness witness)" + TOKEN_PERMISSIONS_TYPE + UPTO_WITNESS_TYPE
)

_DOMAIN_TYPEHASH = keccak(EIP712_DOMAIN_TYPE.encode())
_TRANSFER_TYPEHASH = keccak(TRANSFER_TYPE.encode())
_MINT_TYPEHASH = keccak(MINT_TYPE.encode())
_RESOLUTION_TYPEHASH = keccak(RESOLUTION_TYPE.encode())
_ALLOWANCE_TYPEHASH = keccak(ALLOWANCE_TYPE.encode())
_CHARGE_TYPEHASH = keccak(CHARGE_TYPE.encode())
_PROVIDER_REGISTRATION_TYPEHASH = keccak(PROVIDER_REGISTRATION_TYPE.encode())
_PROVIDER_APPROVAL_TYPEHASH = keccak(PROVIDER_APPROVAL_TYPE.encode())
_POOL_FEE_TYPEHASH = keccak(POOL_FEE_TYPE.encode())
_SPLIT_SETTLEMENT_TYPEHASH = keccak(SPLIT_SETTLEMENT_TYPE.encode())
_REDEEM_TYPEHASH = keccak(REDEEM_TYPE.encode())
_REFUND_TYPEHASH = keccak(REFUND_TYPE.encode())
_PERMIT2_DOMAIN_TYPEHASH = keccak(PERMIT2_DOMAIN_TYPE.encode())
_TOKEN_PERMISSIONS_TYPEHASH = keccak(TOKEN_PERMISSIONS_TYPE.encode())
_UPTO_WITNESS_TYPEHASH = keccak(UPTO_WITNESS_TYPE.encode())
_PERMIT_WITNESS_TRANSFER_TYPEHASH = keccak(PERMIT_WITNESS_TRANSFER_TYPE.encode())

TXID_PREFIX = b"inferpay.txid.v1\x00"
LEAF_PREFIX = b"inferpay.tx.v1\x00"
BLOCK_PREFIX = b"inferpay.block.v1\x00"
ZERO_HASH = "0x" + "00" * 32


def _word(number: int) -> bytes:
    return number.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def _bytes32(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text[2:])


def _string(text: str) -> bytes:
    """EIP-712 encodes a string as the keccak of its UTF-8 bytes."""
    return keccak(text.encode())


def _bool(flag: bool) -> bytes:
    return _word(1 if flag else 0)


def _string_array(items: tuple[str, ...]) -> bytes:
    """EIP-712 encodes an array as the keccak of its members' encodings, concatenated."""
    return keccak(b"".join(_string(item) for item in items))


def _pool_struct_hash(
    message: ProviderRegistration | ProviderApproval | PoolFee | SplitSettlement | Redeem | Refund,
) -> bytes:
    if isinstance(message, ProviderRegistration):
        return keccak(
            _PROVIDER_REGISTRATION_TYPEHASH
            + _address_word(message.provider)
            + _string(message.endpoint)
            + _string_array(message.models)
            + _word(message.price_per_call)
            + _word(message.price_per_1k_input)
            + _word(message.price_per_1k_output)
            + _word(message.capacity)
            + _string(message.status)
            + _bytes32(message.nonce)
        )
    if isinstance(message, ProviderApproval):
        return keccak(
            _PROVIDER_APPROVAL_TYPEHASH
            + _address_word(message.provider)
            + _bool(message.approved)
            + _bytes32(message.nonce)
        )
    if isinstance(message, PoolFee):
        return keccak(_POOL_FEE_TYPEHASH + _word(message.fee_bps) + _word(message.flat_fee) + _bytes32(message.nonce))
    if isinstance(message, SplitSettlement):
        return keccak(
            _SPLIT_SETTLEMENT_TYPEHASH
            + _bytes32(message.hold_id)
            + _word(message.amount)
            + _address_word(message.provider)
            + _bytes32(message.registration_id)
            + _word(message.input_tokens)
            + _word(message.output_tokens)
            + _bool(message.usage_capped)
            + _word(message.provider_amount)
            + _word(message.fee)
            + _bytes32(message.fee_id)
        )
    if isinstance(message, Redeem):
        return keccak(
            _REDEEM_TYPEHASH
            + _address_word(message.from_)
            + _word(message.value)
            + _string(message.payout_reference)
            + _bytes32(message.nonce)
        )
    return keccak(
        _REFUND_TYPEHASH
        + _bytes32(message.settle_id)
        + _address_word(message.from_)
        + _word(message.value)
        + _bytes32(message.nonce)
    )


@functools.lru_cache(maxsize=64)  # ChainInfo is frozen; one ledger has one domain
def domain_separator(chain: ChainInfo) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(chain.name.encode())
        + keccak(chain.version.encode())
        + _word(chain.chain_id)
        + _address_word(chain.token_address)
    )


@functools.lru_cache(maxsize=64)
def permit2_domain_separator(chain_id: int) -> bytes:
    """Permit2's domain on ``chain_id``: what a Permit2 signature is bound to (the token is in the
    struct, ``permitted.token``, not in the domain)."""
    return keccak(
        _PERMIT2_DOMAIN_TYPEHASH
        + keccak(PERMIT2_DOMAIN_NAME.encode())
        + _word(chain_id)
        + _address_word(PERMIT2_ADDRESS)
    )


def message_domain_separator(chain: ChainInfo, message: Message) -> bytes:
    """The domain ``message`` is signed under on this chain: Permit2's for a Permit2
    authorization, the ledger's own for everything else."""
    if isinstance(message, Permit2Authorization):
        return permit2_domain_separator(chain.chain_id)
    return domain_separator(chain)


def struct_hash(message: Message) -> bytes:
    if isinstance(message, Permit2Authorization):
        permitted = keccak(_TOKEN_PERMISSIONS_TYPEHASH + _address_word(message.token) + _word(message.amount))
        witness = keccak(
            _UPTO_WITNESS_TYPEHASH
            + _address_word(message.to)
            + _address_word(message.facilitator)
            + _word(message.valid_after)
        )
        return keccak(
            _PERMIT_WITNESS_TRANSFER_TYPEHASH
            + permitted
            + _address_word(message.spender)
            + _word(message.nonce)
            + _word(message.deadline)
            + witness
        )
    if isinstance(message, Authorization):
        return keccak(
            _TRANSFER_TYPEHASH
            + _address_word(message.from_)
            + _address_word(message.to)
            + _word(message.value)
            + _word(message.valid_after)
            + _word(message.valid_before)
            + _bytes32(message.nonce)
        )
    if isinstance(message, Mint):
        return keccak(_MINT_TYPEHASH + _address_word(message.to) + _word(message.value) + _bytes32(message.nonce))
    if isinstance(message, Allowance):
        return keccak(
            _ALLOWANCE_TYPEHASH
            + _address_word(message.owner)
            + _address_word(message.spender)
            + _word(message.cap)
            + _word(message.valid_before)
            + _bytes32(message.nonce)
        )
    if isinstance(message, Charge):
        return keccak(
            _CHARGE_TYPEHASH + _bytes32(message.allowance_id) + _word(message.amount) + _bytes32(message.request_id)
        )
    if isinstance(message, ProviderRegistration | ProviderApproval | PoolFee | SplitSettlement | Redeem | Refund):
        return _pool_struct_hash(message)
    return keccak(
        _RESOLUTION_TYPEHASH + _bytes32(message.hold_id) + keccak(message.outcome.encode()) + _word(message.amount)
    )


def signing_digest(chain: ChainInfo, message: Message) -> bytes:
    """The EIP-712 digest ``keccak(0x1901 || domainSeparator || hashStruct(message))``."""
    return keccak(b"\x19\x01" + message_domain_separator(chain, message) + struct_hash(message))


# The EIP-712 struct of each message, in field order; names match each message's to_dict keys.
_EIP712_FIELDS: dict[type, tuple[str, list[tuple[str, str]]]] = {
    Authorization: (
        "TransferWithAuthorization",
        [
            ("from", "address"),
            ("to", "address"),
            ("value", "uint256"),
            ("validAfter", "uint256"),
            ("validBefore", "uint256"),
            ("nonce", "bytes32"),
        ],
    ),
    Mint: ("Mint", [("to", "address"), ("value", "uint256"), ("nonce", "bytes32")]),
    HoldResolution: ("HoldResolution", [("holdId", "bytes32"), ("outcome", "string"), ("amount", "uint256")]),
    Allowance: (
        "SpendingAllowance",
        [
            ("owner", "address"),
            ("spender", "address"),
            ("cap", "uint256"),
            ("validBefore", "uint256"),
            ("nonce", "bytes32"),
        ],
    ),
    Charge: ("Charge", [("allowanceId", "bytes32"), ("amount", "uint256"), ("requestId", "bytes32")]),
    ProviderRegistration: (
        "ProviderRegistration",
        [
            ("provider", "address"),
            ("endpoint", "string"),
            ("models", "string[]"),
            ("pricePerCall", "uint256"),
            ("pricePer1kInput", "uint256"),
            ("pricePer1kOutput", "uint256"),
            ("capacity", "uint256"),
            ("status", "string"),
            ("nonce", "bytes32"),
        ],
    ),
    ProviderApproval: ("ProviderApproval", [("provider", "address"), ("approved", "bool"), ("nonce", "bytes32")]),
    PoolFee: ("PoolFee", [("feeBps", "uint256"), ("flatFee", "uint256"), ("nonce", "bytes32")]),
    SplitSettlement: (
        "SplitSettlement",
        [
            ("holdId", "bytes32"),
            ("amount", "uint256"),
            ("provider", "address"),
            ("registrationId", "bytes32"),
            ("inputTokens", "uint256"),
            ("outputTokens", "uint256"),
            ("usageCapped", "bool"),
            ("providerAmount", "uint256"),
            ("fee", "uint256"),
            ("feeId", "bytes32"),
        ],
    ),
    Redeem: (
        "Redeem",
        [("from", "address"), ("value", "uint256"), ("payoutReference", "string"), ("nonce", "bytes32")],
    ),
    Refund: (
        "Refund",
        [("settleId", "bytes32"), ("from", "address"), ("value", "uint256"), ("nonce", "bytes32")],
    ),
}


def typed_data(chain: ChainInfo, message: Message) -> dict[str, Any]:
    """The full EIP-712 JSON for ``message``, as eth-account and wallets expect it."""
    if isinstance(message, Permit2Authorization):
        return _permit2_typed_data(chain.chain_id, message)
    domain = {
        "name": chain.name,
        "version": chain.version,
        "chainId": chain.chain_id,
        "verifyingContract": chain.token_address,
    }
    domain_fields = [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ]
    primary, fields = _EIP712_FIELDS[type(message)]
    as_dict = message.to_dict()
    values: dict[str, Any] = {}
    for name, kind in fields:
        raw = as_dict[name]
        values[name] = int(raw) if kind == "uint256" else _bytes32(raw) if kind == "bytes32" else raw
    return {
        "types": {"EIP712Domain": domain_fields, primary: [{"name": n, "type": t} for n, t in fields]},
        "primaryType": primary,
        "domain": domain,
        "message": values,
    }


def _permit2_typed_data(chain_id: int, permit: Permit2Authorization) -> dict[str, Any]:
    """What the x402 upto client hands its signer (x402.mechanisms.evm.upto.client)."""
    return {
        "types": {
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
        },
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": PERMIT2_DOMAIN_NAME, "chainId": chain_id, "verifyingContract": PERMIT2_ADDRESS},
        "message": {
            "permitted": {"token": permit.token, "amount": permit.amount},
            "spender": permit.spender,
            "nonce": permit.nonce,
            "deadline": permit.deadline,
            "witness": {"to": permit.to, "facilitator": permit.facilitator, "validAfter": permit.valid_after},
        },
    }


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def transaction_id(tx: Transaction) -> str:
    """SHA-256 of what was signed (kind, message, and a hold's expiry), not of the signature."""
    content: dict[str, Any] = {"kind": tx.kind, "message": tx.message.to_dict()}
    if tx.hold_expires_at_s is not None:
        content["holdExpiresAt"] = str(tx.hold_expires_at_s)
    return sha256_hex(TXID_PREFIX + canonical_json(content))


def leaf_bytes(tx: Transaction) -> bytes:
    """The Merkle leaf input: the whole stored record, signature and acceptance time included."""
    return LEAF_PREFIX + canonical_json(tx.to_dict())


def leaf_hash(tx: Transaction) -> bytes:
    return merkle.leaf_hash(leaf_bytes(tx))


def block_hash(header: BlockHeader) -> str:
    return sha256_hex(BLOCK_PREFIX + canonical_json(header.to_dict()))


STATEMENT_PREFIX = b"inferpay.statement.v1\x00"
BINDING_PREFIX = b"inferpay.binding.v1\x00"


def statement_digest(purpose: str, data: Any) -> bytes:
    """Digest of a gateway statement (an offer, a receipt) the sealer signs: SHA-256 over
    canonical JSON, separated by purpose so an offer's signature can never pass as a receipt's."""
    return hashlib.sha256(STATEMENT_PREFIX + purpose.encode() + b"\x00" + canonical_json(data)).digest()


def request_binding_nonce(method: str, path: str, body: bytes, salt: str) -> str:
    """An EIP-3009 nonce that commits to one HTTP request (method, path, body digest, salt).

    A client that signs this nonce binds its payment to that request: the gateway recomputes it
    from the request it receives and refuses the payment anywhere else. The salt keeps nonces
    unique when the same request is paid twice on purpose."""
    body_digest = hashlib.sha256(body).digest()
    material = BINDING_PREFIX + canonical_json(
        {"method": method.upper(), "path": path, "body": "0x" + body_digest.hex(), "salt": salt}
    )
    return "0x" + hashlib.sha256(material).hexdigest()

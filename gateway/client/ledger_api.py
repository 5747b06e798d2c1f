"""Client-side proofs against the ledger API: a receipt's charge is sealed, and history holds.

``verify_receipt_inclusion`` turns a gateway-signed receipt into a sealer-signed block that
provably contains the charging transaction; ``check_consistency`` proves that the ledger's
current head extends a head the client pinned earlier, so a rolled-back or rewritten ledger
is caught. Every proof failure is a ``ReceiptInvalid`` (the original error is its cause).

``session`` is anything with ``get(url, params=..., timeout=...)`` returning a response with
``status_code``, ``content`` and ``json()``: a ``requests.Session`` or an ``httpx.Client``.
Without one, a short-lived ``requests.Session`` is used. This module never imports Flask.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.client.payer import gateway_error
from gateway.wire.errors import ReceiptInvalid
from gateway.wire.receipts import Receipt
from ledger.blocks import check_block_signature, verify_consistency, verify_inclusion
from ledger.encoding import transaction_id
from ledger.errors import InferpayError, MalformedRecord, NotFound
from ledger.types import Authorization, ChainInfo, HoldResolution, SignedBlock, Transaction

HTTP_TIMEOUT_SECONDS = 10.0
_CHAIN_KEYS = ("chainId", "tokenAddress", "operator", "sealer", "name", "version")


def _get_json(session: Any, url: str, params: dict[str, Any] | None = None) -> Any:
    if session is None:
        import requests

        with requests.Session() as own:
            return _get_json(own, url, params)
    response = session.get(url, params=params, timeout=HTTP_TIMEOUT_SECONDS)
    if response.status_code != 200:
        error = gateway_error(response.content)
        raise error or InferpayError(f"GET {url} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise MalformedRecord(f"GET {url} did not answer JSON") from exc


def fetch_chain_info(ledger_url: str, session: Any = None, *, expected_sealer: str | None = None) -> ChainInfo:
    """The ledger's chain info (``GET <ledger>/info``). It is only as trustworthy as the server:
    pin ``expected_sealer`` (or keep a ChainInfo from a trusted source) for the proofs to mean much."""
    data = _get_json(session, f"{ledger_url.rstrip('/')}/info")
    if not isinstance(data, dict) or not set(_CHAIN_KEYS) <= set(data):
        raise MalformedRecord("ledger info: missing chain fields")
    chain = ChainInfo.from_dict({key: data[key] for key in _CHAIN_KEYS})
    if expected_sealer is not None and chain.sealer.lower() != expected_sealer.lower():
        raise ReceiptInvalid(f"the ledger's sealer is {chain.sealer}, not the expected {expected_sealer}")
    return chain


def fetch_head(ledger_url: str, chain: ChainInfo, session: Any = None) -> SignedBlock:
    """The ledger's current head (``GET <ledger>/head``), checked to be signed by the sealer."""
    data = _get_json(session, f"{ledger_url.rstrip('/')}/head")
    if isinstance(data, dict) and "header" not in data and "head" in data:
        data = data["head"]
    try:
        head = SignedBlock.from_dict(data)
        check_block_signature(head, chain.sealer)
    except InferpayError as exc:
        raise ReceiptInvalid(f"the ledger's head is not valid: {exc.message}") from exc
    return head


def verify_receipt_inclusion(
    ledger_url: str,
    receipt: Receipt,
    chain_info: ChainInfo,
    session: Any = None,
    *,
    timeout: float = 10.0,
    poll_interval: float = 0.25,
) -> SignedBlock:
    """Prove ``receipt``'s charge is sealed in the ledger; return the sealer-signed block.

    Polls ``GET <ledger>/transactions/<txId>`` until the transaction is sealed (``NotFound`` if it
    is not within ``timeout`` seconds), checks the inclusion proof up to the block's signature,
    and that the proven transaction is the receipt's and captures exactly ``charged``."""
    receipt.verify(chain_info.sealer)  # the receipt itself must be the chain's sealer's word
    url = f"{ledger_url.rstrip('/')}/transactions/{receipt.tx_id}"
    deadline = time.monotonic() + timeout
    while True:
        data = _get_json(session, url)
        proof = data.get("inclusionProof") if isinstance(data, dict) else None
        if proof is not None:
            break
        if time.monotonic() >= deadline:
            raise NotFound(f"transaction {receipt.tx_id} was not sealed within {timeout} s", tx_id=receipt.tx_id)
        time.sleep(poll_interval)
    try:
        block = verify_inclusion(proof, chain_info)
        tx = Transaction.from_dict(proof["transaction"])
    except InferpayError as exc:
        raise ReceiptInvalid(f"the inclusion proof for {receipt.tx_id} fails: {exc.message}") from exc
    if transaction_id(tx) != receipt.tx_id:
        raise ReceiptInvalid(f"the inclusion proof is for {transaction_id(tx)}, not the receipt's {receipt.tx_id}")
    _check_charge(tx, receipt)
    return block


def _check_charge(tx: Transaction, receipt: Receipt) -> None:
    message = tx.message
    if tx.kind == "settle" and isinstance(message, HoldResolution):
        ok = message.hold_id == receipt.hold_id and message.amount == receipt.charged
        captured = message.amount
    elif tx.kind == "transfer" and isinstance(message, Authorization):  # charges without a hold
        ok = (message.from_, message.to, message.value) == (receipt.payer, receipt.pay_to, receipt.charged)
        captured = message.value
    else:
        raise ReceiptInvalid(f"the receipt's transaction is a {tx.kind}, which charges nothing")
    if not ok:
        raise ReceiptInvalid(
            f"the sealed {tx.kind} captures {captured}, not the {receipt.charged} the receipt claims",
            tx_id=receipt.tx_id,
        )


def check_consistency(ledger_url: str, old_head: SignedBlock, chain: ChainInfo, session: Any = None) -> SignedBlock:
    """Prove the ledger's current head extends ``old_head`` (a head pinned earlier); return it.

    The proof is checked against the client's own copy of the old head, never the server's,
    so a ledger that was rolled back below it or rewrote anything up to it raises
    ``ReceiptInvalid``. Pin the returned head for the next check."""
    new_head = fetch_head(ledger_url, chain, session)
    old_height, new_height = old_head.header.height, new_head.header.height
    if new_height < old_height:
        raise ReceiptInvalid(
            f"the ledger was rolled back: its head is block {new_height}, but block {old_height} was seen"
        )
    data = _get_json(session, f"{ledger_url.rstrip('/')}/consistency", {"old": old_height, "new": new_height})
    try:
        if not isinstance(data, dict) or not isinstance(data.get("proof"), list):
            raise MalformedRecord("consistency proof: unexpected shape")
        served_old = SignedBlock.from_dict(data["old"])
        served_new = SignedBlock.from_dict(data["new"])
        if served_old.block_hash != old_head.block_hash:
            raise MalformedRecord(f"the ledger now serves a different block {old_height}")
        if served_new.block_hash != new_head.block_hash:
            raise MalformedRecord(f"the consistency proof ends at another block {new_height} than the head")
        verify_consistency(old_head, served_new, data["proof"], chain)
    except InferpayError as exc:
        raise ReceiptInvalid(f"the ledger's history is not consistent with block {old_height}: {exc.message}") from exc
    return served_new

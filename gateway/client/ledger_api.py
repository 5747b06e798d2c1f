"""The one client of the ledger API (``/ledger/...``), and the client-side proofs built on it.

``LedgerApiClient`` is the only code that GETs the ledger API: the SDK's proofs, the CLI's
``--node`` commands and ``RemoteChain`` (the auditor's source for ``inferpay verify --node``)
all go through it, so every failure reads the same way. It also POSTs the compute pool's signed
records (registrations, redeems, refunds) and operator-signed mints (``post_json``).
A node that cannot be reached (refused, timed out, reset) is
``StorageUnavailable("cannot reach URL: ...")``; a non-200 answer with an inferpay error body
``{"error": {"code", "message", ...}}`` raises that code's class from the one registry
(``gateway.wire.errors.ERRORS``), details kept; any other non-200 answer is
``StorageUnavailable`` (5xx) or ``InferpayError`` (4xx, its code kept when the body had one), the
HTTP status in the message. A 200 that is not JSON is ``MalformedRecord``.

``verify_receipt_inclusion`` turns a gateway-signed receipt into a sealer-signed block that
provably contains the charging transaction; ``check_consistency`` proves that the ledger's
current head extends a head the client pinned earlier, so a rolled-back or rewritten ledger
is caught. Every proof failure is a ``ReceiptInvalid`` (the original error is its cause).

``session`` is anything with ``get(url, params=..., timeout=...)`` (and, to POST,
``post(url, json=..., timeout=...)``) returning a response with ``status_code``, ``content`` and
``json()``: a ``requests.Session`` or an ``httpx.Client``.
Without one, the client opens a ``requests.Session`` on first use (``close()`` or ``with`` ends
it). This module must never import Flask, and imports requests only when it needs its own
session, so ``import gateway.client`` loads no HTTP library.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from gateway.wire.errors import ERRORS, ReceiptInvalid, error_fields
from gateway.wire.receipts import Receipt
from ledger import RawTx
from ledger.blocks import check_block_signature, verify_consistency, verify_inclusion
from ledger.encoding import leaf_hash, transaction_id
from ledger.errors import InferpayError, MalformedRecord, NotFound, StorageUnavailable
from ledger.types import (
    Authorization,
    ChainInfo,
    HoldResolution,
    Mint,
    PoolFeeInForce,
    ProviderEarnings,
    ProviderRecord,
    ProviderRegistration,
    Redeem,
    Refund,
    SignedBlock,
    SplitSettlement,
    Transaction,
)

HTTP_TIMEOUT_SECONDS = 10.0
_CHAIN_KEYS = ("chainId", "tokenAddress", "operator", "sealer", "name", "version")


class LedgerApiClient:
    """GET the ledger API at ``ledger_url`` (the ``/ledger`` mount itself, as a 402 names it).

    ``LedgerApiClient.for_node(url)`` takes a gateway's base URL instead. Methods return the
    server's JSON as parsed, except ``chain_info`` and ``head``, which are domain objects; they
    check shapes, never signatures or proofs (the functions below, and the auditor, do that).
    """

    def __init__(self, ledger_url: str, session: Any = None, *, timeout_s: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.base_url = ledger_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = session
        self._own_session: Any = None

    @classmethod
    def for_node(
        cls, node_url: str, session: Any = None, *, timeout_s: float = HTTP_TIMEOUT_SECONDS
    ) -> LedgerApiClient:
        """The ledger API of the gateway at ``node_url`` (``/ledger`` is added unless it is there)."""
        base = node_url.rstrip("/")
        return cls(base if base.endswith("/ledger") else base + "/ledger", session, timeout_s=timeout_s)

    def __enter__(self) -> LedgerApiClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the session this client opened (never one it was given)."""
        if self._own_session is not None:
            self._own_session.close()
            self._own_session = None

    def _http(self) -> Any:
        if self._session is not None:
            return self._session
        if self._own_session is None:
            import requests  # only now: importing the SDK must not load an HTTP library

            self._own_session = requests.Session()
        return self._own_session

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """``GET <ledger_url><path>?params``'s body (notes, tiles, proofs); failures as above."""
        return bytes(self._get(path, params).content)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = self.base_url + path
        try:
            response = self._http().get(url, params=params or None, timeout=self.timeout_s)
        except _transport_errors() as exc:
            raise StorageUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}", url=url) from exc
        if response.status_code != 200:
            raise _error_of(url, response.status_code, response.content)
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        """``GET <ledger_url><path>?params`` as parsed JSON; failures as described above."""
        url = self.base_url + path
        response = self._get(path, params)
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedRecord(f"GET {url} did not answer JSON") from exc

    def chain_info(self) -> ChainInfo:
        """``GET /info``'s chain identity (it is only as trustworthy as the server)."""
        data = self.get_json("/info")
        if not isinstance(data, dict) or not set(_CHAIN_KEYS) <= set(data):
            raise MalformedRecord("ledger info: missing chain fields")
        return ChainInfo.from_dict({key: data[key] for key in _CHAIN_KEYS})

    def head(self) -> SignedBlock:
        """``GET /head``, parsed (its signature is not checked here: see ``fetch_head``)."""
        return _signed_block(self.get_json("/head"))

    def account(self, address: str) -> dict[str, Any]:
        """``GET /accounts/<address>``: available, held and open holds (amounts as base-unit strings)."""
        return _object(self.get_json(f"/accounts/{address}"), "account")

    def history(self, address: str, limit: int = 100, before: int | None = None) -> dict[str, Any]:
        """``GET /accounts/<address>/history``: ``entries`` newest first, ``next`` for the next page."""
        params: dict[str, Any] = {"limit": limit, **({"before": before} if before is not None else {})}
        return _object(self.get_json(f"/accounts/{address}/history", **params), "history")

    def blocks(self, start: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """``GET /blocks?from=&limit=``: signed blocks from height ``start``, as served."""
        page = _object(self.get_json("/blocks", **{"from": start, "limit": limit}), "blocks")
        found = page.get("blocks")
        if not isinstance(found, list):
            raise MalformedRecord("blocks: unexpected shape")
        return found

    def block(self, height: int) -> dict[str, Any]:
        """``GET /blocks/<height>``: the signed block and its ``transactions``; ``NotFound`` past the head."""
        return _object(self.get_json(f"/blocks/{height}"), "block")

    def transaction(self, tx_id: str) -> dict[str, Any]:
        """``GET /transactions/<txId>``: the record, and its ``inclusionProof`` once sealed."""
        return _object(self.get_json(f"/transactions/{tx_id}"), "transaction")

    def checkpoint(self) -> bytes:
        """``GET /checkpoint``: the latest signed checkpoint note, unchecked."""
        return self.get_bytes("/checkpoint")

    def checkpoint_consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """``GET /checkpoint/consistency``: the proof between two tree sizes, unchecked."""
        data = _object(self.get_json("/checkpoint/consistency", old=old_size, new=new_size), "consistency proof")
        proof = data.get("proof")
        if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof) or len(proof) > 128:
            raise MalformedRecord("consistency proof: unexpected shape")
        try:
            return [base64.b64decode(h, validate=True) for h in proof]
        except ValueError as exc:
            raise MalformedRecord("consistency proof: a hash is not base64") from exc

    def tlog_proof(self, tx_id: str) -> bytes:
        """``GET /transactions/<txId>/tlog-proof``: a c2sp.org/tlog-proof, unchecked."""
        return self.get_bytes(f"/transactions/{tx_id}/tlog-proof")

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        """``GET /consistency?old=&new=``: both blocks and the proof between them, unchecked."""
        return _object(self.get_json("/consistency", old=old, new=new), "consistency proof")

    # ---- the compute pool ----

    def providers(self) -> list[ProviderRecord]:
        """``GET /providers``: every provider with its registration in force and approval."""
        found = _object(self.get_json("/providers"), "providers").get("providers")
        if not isinstance(found, list):
            raise MalformedRecord("providers: unexpected shape")
        return [ProviderRecord.from_dict(p) for p in found]

    def provider(self, address: str) -> ProviderRecord:
        """``GET /providers/<address>``; ``NotFound`` if it never registered."""
        return ProviderRecord.from_dict(self.get_json(f"/providers/{address}"))

    def provider_earnings(self, address: str) -> ProviderEarnings:
        """``GET /providers/<address>/earnings``: calls, earned, refunded and redeemed."""
        data = _object(self.get_json(f"/providers/{address}/earnings"), "earnings")
        return ProviderEarnings.from_dict({k: v for k, v in data.items() if k != "address"})

    def pool(self) -> dict[str, Any]:
        """``GET /pool``: ``poolFee`` (a ``PoolFeeInForce`` dict), ``poolVersion`` and ``operatorFees``."""
        data = _object(self.get_json("/pool"), "pool")
        PoolFeeInForce.from_dict(data.get("poolFee"))  # the shape, checked
        return data

    def pool_fee(self) -> PoolFeeInForce:
        return PoolFeeInForce.from_dict(self.pool().get("poolFee"))

    def register_provider(self, registration: ProviderRegistration, signature: str) -> dict[str, Any]:
        """``POST /providers``: a provider-signed registration (join, update or withdrawal)."""
        return self.post_json("/providers", {"registration": registration.to_dict(), "signature": signature})

    def redeem(self, redeem: Redeem, signature: str) -> dict[str, Any]:
        """``POST /redeems``: a holder-signed redeem."""
        return self.post_json("/redeems", {"redeem": redeem.to_dict(), "signature": signature})

    def refund(self, refund: Refund, signature: str) -> dict[str, Any]:
        """``POST /refunds``: a payee-signed refund of (part of) a settle."""
        return self.post_json("/refunds", {"refund": refund.to_dict(), "signature": signature})

    def mint(self, mint: Mint, signature: str) -> dict[str, Any]:
        """``POST /mints``: an operator-signed mint."""
        return self.post_json("/mints", {"mint": mint.to_dict(), "signature": signature})

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST <ledger_url><path>`` with a JSON body: the recorded transaction's ``TxResult``
        dict (201, or 200 for a retry of one already recorded); failures as for GETs."""
        url = self.base_url + path
        try:
            response = self._http().post(url, json=body, timeout=self.timeout_s)
        except _transport_errors() as exc:
            raise StorageUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}", url=url) from exc
        if response.status_code not in (200, 201):
            raise _error_of(url, response.status_code, response.content, "POST")
        try:
            return _object(response.json(), "result")
        except ValueError as exc:
            raise MalformedRecord(f"POST {url} did not answer JSON") from exc


def _transport_errors() -> tuple[type[BaseException], ...]:
    # requests' errors are OSErrors; httpx's are not, but httpx is loaded whenever a caller
    # handed us an httpx.Client, so look it up without importing it.
    httpx = sys.modules.get("httpx")
    return (OSError, httpx.TransportError) if httpx is not None else (OSError,)


def _error_of(url: str, status: int, body: bytes, method: str = "GET") -> InferpayError:
    fields = error_fields(body)
    if fields is not None and fields[0] in ERRORS:
        code, message, details = fields
        return ERRORS.from_code(code, message, **details)
    what = f"{method} {url} answered HTTP {status}"
    if fields is not None:  # an error body, but not a code inferpay defines: keep it all
        code, message, details = fields
        return ERRORS.from_code(code, f"{what}: {message}", **{**details, "status": status})
    if status >= 500:
        return StorageUnavailable(what, url=url, status=status)
    return InferpayError(what, url=url, status=status)


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedRecord(f"{what}: expected a JSON object")
    return data


def _signed_block(data: Any) -> SignedBlock:
    if isinstance(data, dict) and "header" not in data and "head" in data:
        data = data["head"]
    return SignedBlock.from_dict(data)


def fetch_chain_info(ledger_url: str, session: Any = None, *, expected_sealer: str | None = None) -> ChainInfo:
    """The ledger's chain info (``GET <ledger>/info``). It is only as trustworthy as the server:
    pin ``expected_sealer`` (or keep a ChainInfo from a trusted source) for the proofs to mean much."""
    with LedgerApiClient(ledger_url, session) as api:
        chain = api.chain_info()
    if expected_sealer is not None and chain.sealer.lower() != expected_sealer.lower():
        raise ReceiptInvalid(f"the ledger's sealer is {chain.sealer}, not the expected {expected_sealer}")
    return chain


def fetch_head(ledger_url: str, chain: ChainInfo, session: Any = None) -> SignedBlock:
    """The ledger's current head (``GET <ledger>/head``), checked to be signed by the sealer."""
    with LedgerApiClient(ledger_url, session) as api:
        return _checked_head(api, chain)


def _checked_head(api: LedgerApiClient, chain: ChainInfo) -> SignedBlock:
    data = api.get_json("/head")  # outside the try: an unreachable ledger is not a bad head
    try:
        head = _signed_block(data)
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
    deadline = time.monotonic() + timeout
    with LedgerApiClient(ledger_url, session) as api:
        while True:
            proof = api.transaction(receipt.tx_id).get("inclusionProof")
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
    if tx.kind in ("settle", "split_settle") and isinstance(message, HoldResolution | SplitSettlement):
        # A pool call's split captures its total from the hold (the provider's part plus the fee).
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
    with LedgerApiClient(ledger_url, session) as api:
        new_head = _checked_head(api, chain)
        old_height, new_height = old_head.header.height, new_head.header.height
        if new_height < old_height:
            raise ReceiptInvalid(
                f"the ledger was rolled back: its head is block {new_height}, but block {old_height} was seen"
            )
        data: Any = api.consistency(old_height, new_height)
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


class RemoteChain:
    """A remote node's sealed chain, read over its ledger API: the auditor's ``ChainSource`` for
    ``inferpay verify --node URL``.

    It downloads blocks and their transactions page by page and hands them, as served, to the
    same auditor that checks a local database, so a remote ledger is verified independently:
    every signature, id, Merkle root, link and balance rule is recomputed here. Only sealed
    history is visible remotely, so the database-side comparisons (stored balances, nonce table)
    are not made.
    """

    PAGE = 200

    def __init__(self, api: LedgerApiClient) -> None:
        self.api = api
        # The chain grows while it is read: fix the head once, and read up to it only.
        self.head = api.head()
        self.head_height = self.head.header.height

    def chain_info(self) -> ChainInfo:
        return self.api.chain_info()

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        start = 0
        while start <= self.head_height:
            found = self.api.blocks(start, min(self.PAGE, self.head_height + 1 - start))
            if not found:
                return
            for block in found:
                yield int(block["header"]["height"]), json.dumps(block)
            start = int(found[-1]["header"]["height"]) + 1

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]:
        for height in range(self.head_height + 1):
            try:
                found = self.api.block(height)
            except NotFound:
                continue  # the auditor reports the missing block from the block list
            for entry in found.get("transactions", []):
                record = entry["transaction"]
                try:
                    leaf = leaf_hash(Transaction.from_dict(record))
                except InferpayError:
                    leaf = b"\0" * 32  # the auditor reports the record itself
                yield RawTx(int(entry["seq"]), str(entry["txId"]), json.dumps(record), leaf, entry["blockHeight"])

"""A lying gateway: a proxy in front of the real one that tampers with what it answers, so the
client SDK's checks are tried against a live system (Certificate Transparency's threat: a log
that shows a client a forged proof or a rewritten history).

Everything is forwarded to the real gateway (so the payments are real and really charged); on
the way back the proxy, depending on its ``mode``, forges or replays a receipt, raises the
price in a 402 without the sealer's signature, or corrupts an inclusion proof, a consistency
proof or the signed head. The SDK must refuse each lie with ``ReceiptInvalid`` (or refuse to pay);
in ``pass`` mode it must accept everything, which shows the lies are what it refuses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gateway.wire.receipts import Receipt
from gateway.wire.x402 import decode_header, encode_header
from ledger.blocks import sign_header
from ledger.crypto import KeySigner, new_private_key
from ledger.types import BlockHeader, SignedBlock

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}
_FORGER = KeySigner(new_private_key())  # not the sealer: anything it signs must be refused


def _flip(hex_text: str) -> str:
    """The same 0x-hex with its last digit changed."""
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


class LyingGateway:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.mode = "pass"
        self.captured: str | None = None  # the last genuine PAYMENT-RESPONSE, for replay
        self.session = requests.Session()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per lie
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="lying-gateway", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.session.close()

    # ---- WSGI ----

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        target = environ.get("RAW_URI") or request.full_path.rstrip("?")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        real = self.session.request(
            request.method,
            self.upstream_url + target,
            headers=headers,
            data=request.get_data(),
            allow_redirects=False,
            timeout=30,
        )
        status, body = real.status_code, real.content
        out = {k: v for k, v in real.headers.items() if k.lower() not in _HOP}
        rewrite = _REWRITES.get(self.mode)
        if rewrite is not None:
            status, out, body = rewrite(self, request, status, out, body)
        if "PAYMENT-RESPONSE" in real.headers and self.mode == "pass":
            self.captured = real.headers["PAYMENT-RESPONSE"]
        return Response(body, status, list(out.items()))(environ, start_response)

    # ---- the lies ----

    def _settlement(
        self, status: int, headers: dict[str, str], body: bytes, change: Callable[[dict[str, Any]], None]
    ) -> tuple[int, dict[str, str], bytes]:
        if "PAYMENT-RESPONSE" in headers:
            settlement = decode_header(headers["PAYMENT-RESPONSE"])
            change(settlement)
            headers["PAYMENT-RESPONSE"] = encode_header(settlement)
        return status, headers, body

    def receipt_tampered(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        def change(s: dict[str, Any]) -> None:
            s["receipt"]["charged"] = str(int(s["receipt"]["charged"]) - 1)  # the signature no longer covers it

        return self._settlement(status, headers, body, change)

    def receipt_resigned(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        def change(s: dict[str, Any]) -> None:
            receipt = Receipt.from_dict({**s["receipt"], "charged": "1"})
            s["receipt"] = receipt.signed(_FORGER).to_dict()

        return self._settlement(status, headers, body, change)

    def receipt_stripped(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        headers.pop("PAYMENT-RESPONSE", None)
        return status, headers, body

    def receipt_replayed(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        """A genuine, sealer-signed receipt, from an earlier call of the same wallet."""
        if "PAYMENT-RESPONSE" in headers and self.captured is not None:
            headers["PAYMENT-RESPONSE"] = self.captured
        return status, headers, body

    def offer_raised(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        """The 402's price multiplied by ten, the sealer's offer signature left as it was."""
        if status == 402 and "PAYMENT-REQUIRED" in headers:
            terms = decode_header(headers["PAYMENT-REQUIRED"])
            for accepted in terms["accepts"]:
                accepted["amount"] = str(int(accepted["amount"]) * 10)
            headers["PAYMENT-REQUIRED"] = encode_header(terms)
            body = json.dumps(terms).encode()
        return status, headers, body

    def _proof(self, body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("inclusionProof"):
            change(data["inclusionProof"])
        return json.dumps(data).encode()

    def proof_path(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        def change(p: dict[str, Any]) -> None:
            if p["auditPath"]:
                p["auditPath"][0] = _flip(p["auditPath"][0])
            else:  # a block of one transaction: claim a sibling that is not there
                p["auditPath"] = ["0x" + "11" * 32]

        return status, headers, self._proof(body, change) if request.path.startswith("/ledger/transactions/") else body

    def proof_amount(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        def change(p: dict[str, Any]) -> None:
            p["transaction"]["message"]["amount"] = "1"

        return status, headers, self._proof(body, change) if request.path.startswith("/ledger/transactions/") else body

    def proof_of_hold(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        """A valid proof, of another transaction (the hold the settle resolved)."""
        if request.path.startswith("/ledger/transactions/") and status == 200:
            data = json.loads(body)
            proof = data.get("inclusionProof")
            message = proof["transaction"]["message"] if proof else {}
            if "holdId" in message:
                other = self.session.get(f"{self.upstream_url}/ledger/transactions/{message['holdId']}", timeout=10)
                data["inclusionProof"] = other.json()["inclusionProof"]
                body = json.dumps(data).encode()
        return status, headers, body

    def proof_block_forged(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        def change(p: dict[str, Any]) -> None:
            block = SignedBlock.from_dict(p["block"])
            p["block"] = _forged(block).to_dict()

        return status, headers, self._proof(body, change) if request.path.startswith("/ledger/transactions/") else body

    def consistency_path(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        if request.path == "/ledger/consistency" and status == 200:
            data = json.loads(body)
            data["proof"] = [_flip(data["proof"][0]), *data["proof"][1:]] if data["proof"] else ["0x" + "22" * 32]
            body = json.dumps(data).encode()
        return status, headers, body

    def head_rolled_back(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        """An older (genuine, signed) head, as a ledger restored from an old copy would show."""
        if request.path == "/ledger/head" and status == 200:
            height = json.loads(body)["header"]["height"]
            older = self.session.get(f"{self.upstream_url}/ledger/blocks/{max(0, height - 10)}", timeout=10).json()
            older.pop("transactions", None)
            body = json.dumps(older).encode()
        return status, headers, body

    def head_forged(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        if request.path == "/ledger/head" and status == 200:
            body = json.dumps(_forged(SignedBlock.from_dict(json.loads(body))).to_dict()).encode()
        return status, headers, body

    def history_rewritten(self, request: Request, status: int, headers: dict[str, str], body: bytes) -> Any:
        """Consistency answered from a forked history: the old block replaced by another one."""
        if request.path == "/ledger/consistency" and status == 200:
            data = json.loads(body)
            data["old"] = _forged(SignedBlock.from_dict(data["old"])).to_dict()
            body = json.dumps(data).encode()
        return status, headers, body


def _forged(block: SignedBlock) -> SignedBlock:
    """The block with its Merkle root changed, re-hashed and signed by a key that is not the sealer,
    but still naming the real sealer."""
    header = BlockHeader(**{**block.header.__dict__, "merkle_root": _flip(block.header.merkle_root)})
    signed = sign_header(header, _FORGER)
    return SignedBlock(signed.header, signed.block_hash, block.sealer, signed.signature)


_REWRITES: dict[str, Callable[..., Any]] = {
    name: getattr(LyingGateway, name)
    for name in (
        "receipt_tampered",
        "receipt_resigned",
        "receipt_stripped",
        "receipt_replayed",
        "offer_raised",
        "proof_path",
        "proof_amount",
        "proof_of_hold",
        "proof_block_forged",
        "consistency_path",
        "head_rolled_back",
        "head_forged",
        "history_rewritten",
    )
}
RECEIPT_LIES = ("receipt_tampered", "receipt_resigned", "receipt_stripped", "receipt_replayed")
PROOF_LIES = ("proof_path", "proof_amount", "proof_of_hold", "proof_block_forged")
HISTORY_LIES = ("consistency_path", "head_rolled_back", "head_forged", "history_rewritten")

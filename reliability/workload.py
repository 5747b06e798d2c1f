"""The bank workload: many concurrent clients paying through the real gateway, every outcome
recorded on the client side, to be held against the ledger afterwards (``reliability.checks``).

A few wallets, each with an API key, and client threads that pick an operation at random:

- ``sdk_flat`` / ``sdk_embed``: ``PaymentAuth`` (requests) on the flat and the metered route;
- ``sdk_chat`` / ``sdk_stream``: ``HttpxPaymentAuth`` on the metered chat route, whole and streamed;
- ``raw_flat`` / ``raw_v1``: hand-signed ``PAYMENT-SIGNATURE`` (v2, request-bound) and ``X-PAYMENT`` (v1);
- ``key_flat`` / ``key_embed``: ``Authorization: Bearer <API key>``;
- ``transfer``: a signed transfer to another wallet over ``POST /ledger/transfers``;

while a minter (the operator, signing mints) trickles new funds in, so that balances allow only
part of what is asked all along the run. Each operation ends as one of:

- ``ok``: a 2xx with a verified, gateway-signed receipt (or a 201 for a transfer): acknowledged;
- ``refused``: a definite answer that is not a success: nothing may be charged for it;
- ``ambiguous``: the connection broke after the payment was sent: charged at most once;
- ``unsent``: the connection broke before any payment was sent: nothing to charge;
- ``error``: what must never happen (a 5xx other than 502/503, a receipt that does not verify).
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import requests

from gateway.client import HttpxPaymentAuth, PaymentAuth, receipt_of, stream_receipt
from gateway.wire.errors import ReceiptInvalid
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, V1_PAYMENT_HEADER, PaymentPayload, decode_header
from ledger.errors import CommitOutcomeUnknown, InferpayError
from ledger.ledger import Ledger
from ledger.types import Mint
from reliability.deploy import Deployment
from tests.support.gateway import CHAT, CHAT_MODEL, EMBED, EMBED_MODEL, FLAT, FLAT_PRICE, chat_cost, embed_cost

TIMEOUT = (3.0, 20.0)  # connect, read
# The payment the SDK signed last in this thread. Some failures carry no request to read it
# from (requests raises ChunkedEncodingError without one when the body breaks off after a 2xx
# header), and the payment may still have been charged: the record must keep its nonce.
_signed = threading.local()
# The gateway this client thread talks to (Deployment.gateway_url): one of several, or the one.
_client_gateway = threading.local()


class _RecordsPayments:
    def pay(self, challenge: Any, method: str, url: str, body: bytes | None) -> Any:
        payment = super().pay(challenge, method, url, body)  # type: ignore[misc]
        _signed.payment = payment
        return payment


class RecordingPaymentAuth(_RecordsPayments, PaymentAuth):
    pass


class RecordingHttpxPaymentAuth(_RecordsPayments, HttpxPaymentAuth):
    pass


WEIGHTS = {
    "sdk_flat": 18,
    "sdk_embed": 12,
    "sdk_chat": 8,
    "sdk_stream": 4,
    "raw_flat": 12,
    "raw_v1": 4,
    "key_flat": 10,
    "key_embed": 6,
    "transfer": 14,
}
_OK_5XX = (502, 503)  # upstream down / storage busy: refusals the gateway is allowed to give


@dataclass
class Op:
    kind: str
    wallet: str
    client: int
    started: float  # monotonic
    ended: float = 0.0
    outcome: str = "unsent"  # ok | refused | ambiguous | unsent | error
    status: int | None = None
    code: str | None = None
    payer: str | None = None
    nonce: str | None = None  # the signed authorization's nonce (payments and transfers)
    tx_id: str | None = None  # the receipt's settle, or the transfer
    hold_id: str | None = None
    charged: int | None = None
    expected: int | None = None  # what the route should charge for this request
    authorized: int | None = None  # what the receipt says was held (an API key holds at most what it has left)
    allowance: str | None = None
    detail: str | None = None
    clock_offset: float = 0.0
    gateway: str = ""  # the gateway it was sent to (its base URL), when the deployment has several

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Wallets:
    """The workload's wallets (name -> Wallet) and their API keys (name -> key, allowance id)."""

    names: list[str]
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)


class Workload:
    def __init__(
        self, dep: Deployment, wallets: Wallets, *, clients: int, seed: int, mint_every: float, mint_amount: int
    ) -> None:
        self.dep = dep
        self.env = dep.env
        self.wallets = wallets
        self.clients = clients
        self.seed = seed
        self.mint_every = mint_every
        self.mint_amount = mint_amount
        self.sealer = self.env.chain.sealer
        self.ops: list[Op] = []
        self.mints: list[Op] = []
        self._lock = threading.Lock()
        self.auths = {n: RecordingPaymentAuth(self.env.wallets[n], trusted_sealer=self.sealer) for n in wallets.names}
        self.httpx_auths = {
            n: RecordingHttpxPaymentAuth(self.env.wallets[n], trusted_sealer=self.sealer) for n in wallets.names
        }
        self.requirements = {path: self.env.requirement(path) for path in (FLAT,)}

    # ---- running ----

    def run(self, duration: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + duration
        threads = [
            threading.Thread(target=self._client, args=(i, deadline, stop), name=f"client-{i}", daemon=True)
            for i in range(self.clients)
        ]
        threads.append(threading.Thread(target=self._minter, args=(deadline, stop), name="minter", daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration + 120)

    def _client(self, index: int, deadline: float, stop: threading.Event) -> None:
        rng = random.Random(self.seed * 1000 + index)
        _client_gateway.url = self.dep.gateway_url(index)
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        session = requests.Session()
        client = httpx.Client(timeout=httpx.Timeout(TIMEOUT[1], connect=TIMEOUT[0]))
        try:
            while time.monotonic() < deadline and not stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                op = Op(
                    kind,
                    rng.choice(self.wallets.names),
                    index,
                    time.monotonic(),
                    clock_offset=self.dep.clock.offset,
                    gateway=_client_gateway.url if len(self.dep.gateway_names) > 1 else "",
                )
                _signed.payment = None
                try:
                    OPERATIONS[kind](self, op, rng, session, client)
                except Exception as exc:  # a client-side bug must not hide: record it as an error
                    op.outcome, op.detail = "error", f"client raised {type(exc).__name__}: {exc}"
                _remember_payment(op)
                op.ended = time.monotonic()
                with self._lock:
                    self.ops.append(op)
                if op.outcome == "unsent":  # the gateway is down: back off as a real client would
                    time.sleep(rng.uniform(0.05, 0.3))
        finally:
            session.close()
            client.close()

    def _minter(self, deadline: float, stop: threading.Event) -> None:
        """The operator trickles funds in: a mint to a random wallet every ``mint_every`` seconds."""
        rng = random.Random(self.seed)
        store = self.dep.open_store()
        ledger = Ledger(store, clock=self.dep.clock.now_ms)  # the machine's (possibly moved) clock
        operator = self.env.wallets["operator"]
        try:
            while not stop.wait(self.mint_every) and time.monotonic() < deadline:
                name = rng.choice(self.wallets.names)
                op = Op("mint", name, -1, time.monotonic(), expected=self.mint_amount)
                mint = Mint(self.env.wallets[name].address, self.mint_amount, "0x" + secrets.token_hex(32))
                try:
                    result = ledger.mint(mint, operator.sign(ledger.chain, mint))
                    op.outcome, op.tx_id = "ok", result.tx_id
                except InferpayError as exc:
                    op.outcome, op.code = "refused", exc.code
                op.ended = time.monotonic()
                with self._lock:
                    self.mints.append(op)
        finally:
            store.close()

    # ---- the operations ----

    def url(self, path: str) -> str:
        return getattr(_client_gateway, "url", self.dep.url) + path

    def sdk_requests(self, op: Op, rng: random.Random, session: requests.Session, _: httpx.Client) -> None:
        path, body, op.expected = _route_body(op.kind, rng)
        try:
            response = session.post(self.url(path), json=body, auth=self.auths[op.wallet], timeout=TIMEOUT)
        except InferpayError as exc:  # the gateway refused (mapped back to its class), or the SDK did
            refused = getattr(exc, "response", None)
            _payment_of(op, refused.request.headers if refused is not None else {})
            _refused(op, refused.status_code if refused is not None else None, exc)
            return
        except requests.RequestException as exc:
            _payment_of(op, exc.request.headers if exc.request is not None else {})
            _broken(op, exc)
            return
        _payment_of(op, response.request.headers)
        _answered(op, response.status_code, response.content, receipt_of(response))

    def sdk_httpx(self, op: Op, rng: random.Random, _: requests.Session, client: httpx.Client) -> None:
        path, body, op.expected = _route_body(op.kind, rng)
        try:
            if op.kind == "sdk_stream":
                self._stream(op, client, path, body)
                return
            response = client.post(self.url(path), json=body, auth=self.httpx_auths[op.wallet])
        except InferpayError as exc:
            refused = getattr(exc, "response", None)
            _payment_of(op, refused.request.headers if refused is not None else {})
            _refused(op, refused.status_code if refused is not None else None, exc)
            return
        except httpx.HTTPError as exc:
            _payment_of(op, _httpx_request_headers(exc))
            _broken(op, exc)
            return
        _payment_of(op, response.request.headers)
        _answered(op, response.status_code, response.content, receipt_of(response))

    def _stream(self, op: Op, client: httpx.Client, path: str, body: dict[str, Any]) -> None:
        with client.stream(
            "POST", self.url(path), json={**body, "stream": True}, auth=self.httpx_auths[op.wallet]
        ) as response:
            _payment_of(op, response.request.headers)
            if not response.is_success:
                response.read()
                _answered(op, response.status_code, response.content, None)
                return
            receipt = None
            for line in response.iter_lines():
                receipt = stream_receipt(line, self.sealer) or receipt
            if receipt is None:  # the 200 came first; the charge is acknowledged by the receipt only
                op.status, op.outcome, op.detail = response.status_code, "ambiguous", "stream ended without receipt"
                return
            _answered(op, response.status_code, b"", receipt)

    def raw(self, op: Op, rng: random.Random, session: requests.Session, _: httpx.Client) -> None:
        wallet = self.env.wallets[op.wallet]
        body = json.dumps({"raw": rng.random(), "client": op.client}).encode()
        version = 1 if op.kind == "raw_v1" else 2
        header, payload = self.env.payment(
            wallet, FLAT, accepted=self.requirements[FLAT], bind=("POST", FLAT, body), version=version
        )
        op.payer, op.nonce, op.expected = wallet.address, payload["payload"]["authorization"]["nonce"], FLAT_PRICE
        name = V1_PAYMENT_HEADER if version == 1 else PAYMENT_SIGNATURE_HEADER
        try:
            response = session.post(
                self.url(FLAT), data=body, timeout=TIMEOUT, headers={name: header, "Content-Type": "application/json"}
            )
        except requests.RequestException as exc:
            _broken(op, exc)
            return
        receipt = _header_receipt(response.headers, self.sealer, wallet.address) if response.ok else None
        _answered(op, response.status_code, response.content, receipt)

    def key(self, op: Op, rng: random.Random, session: requests.Session, _: httpx.Client) -> None:
        key, op.allowance = self.wallets.keys[op.wallet]
        path, body, op.expected = _route_body("sdk_flat" if op.kind == "key_flat" else "sdk_embed", rng)
        op.payer = self.env.wallets[op.wallet].address
        try:
            response = session.post(
                self.url(path), json=body, timeout=TIMEOUT, headers={"Authorization": f"Bearer {key}"}
            )
        except requests.RequestException as exc:
            op.nonce = op.allowance  # a key call carries no nonce, but was paid for once sent
            _broken(op, exc)
            op.nonce = None
            return
        receipt = _header_receipt(response.headers, self.sealer, op.payer) if response.ok else None
        _answered(op, response.status_code, response.content, receipt)

    def transfer(self, op: Op, rng: random.Random, session: requests.Session, _: httpx.Client) -> None:
        wallet = self.env.wallets[op.wallet]
        to = self.env.wallets[rng.choice([n for n in self.wallets.names if n != op.wallet])]
        value = rng.choice([300, 1000, 2500, 5000])
        auth, signature = wallet.authorize_transfer(self.env.chain, to.address, value)
        op.payer, op.nonce, op.expected = wallet.address, auth.nonce, value
        try:
            response = session.post(
                self.url("/ledger/transfers"),
                timeout=TIMEOUT,
                json={"authorization": auth.to_dict(), "signature": signature},
            )
        except requests.RequestException as exc:
            _broken(op, exc)
            return
        op.status = response.status_code
        if response.status_code == 201:
            op.outcome, op.tx_id, op.charged = "ok", response.json()["txId"], value
        else:
            _classify_failure(op, response.status_code, response.content)


OPERATIONS: dict[str, Callable[[Workload, Op, random.Random, requests.Session, httpx.Client], None]] = {
    "sdk_flat": Workload.sdk_requests,
    "sdk_embed": Workload.sdk_requests,
    "sdk_chat": Workload.sdk_httpx,
    "sdk_stream": Workload.sdk_httpx,
    "raw_flat": Workload.raw,
    "raw_v1": Workload.raw,
    "key_flat": Workload.key,
    "key_embed": Workload.key,
    "transfer": Workload.transfer,
}


# ---- what a request costs, and how its answer is classified ----


def _route_body(kind: str, rng: random.Random) -> tuple[str, dict[str, Any], int]:
    """(path, JSON body, the charge the route must capture for it) for one paid call."""
    words = " ".join(f"w{rng.randrange(1000)}" for _ in range(rng.randint(1, 40)))
    if kind == "sdk_flat":
        return FLAT, {"flat": rng.random()}, FLAT_PRICE
    if kind == "sdk_embed":  # the echo upstream counts whitespace-separated words as tokens
        return EMBED, {"model": EMBED_MODEL, "input": words}, embed_cost(len(words.split()))
    count = len(words.split())  # the chat upstream echoes the user's words back
    return CHAT, {"model": CHAT_MODEL, "messages": [{"role": "user", "content": words}]}, chat_cost(count, count)


def _payment_of(op: Op, headers: Any) -> None:
    """The payer and nonce of the payment a request carried (none if it carried none)."""
    header = headers.get(PAYMENT_SIGNATURE_HEADER) or headers.get(V1_PAYMENT_HEADER)
    if header:
        payment = PaymentPayload.from_header(header)
        op.payer, op.nonce = payment.authorization.from_, payment.authorization.nonce


def _remember_payment(op: Op) -> None:
    """An SDK call whose failure carried no request: the payment it signed, from the SDK itself."""
    payment = _signed.payment
    if op.nonce is None and payment is not None and op.kind.startswith("sdk_"):
        op.payer, op.nonce = payment.authorization.from_, payment.authorization.nonce
        if op.outcome == "unsent":  # it was signed and sent; the answer broke off, not the connection
            op.outcome = "ambiguous"


def _httpx_request_headers(exc: httpx.HTTPError) -> Any:
    try:
        return exc.request.headers
    except RuntimeError:  # no request attached
        return {}


def _header_receipt(headers: Any, sealer: str, payer: str) -> Receipt | None:
    text = headers.get("PAYMENT-RESPONSE") or headers.get("X-PAYMENT-RESPONSE")
    if not text:
        return None
    settlement = decode_header(text)
    receipt = Receipt.from_dict(settlement["receipt"])
    receipt.verify(sealer)
    if receipt.payer != payer:
        raise ReceiptInvalid(f"receipt names payer {receipt.payer}, not {payer}")
    return receipt


def _answered(op: Op, status: int, body: bytes, receipt: Receipt | None) -> None:
    op.status = status
    if 200 <= status < 300:
        if receipt is None:
            op.outcome, op.detail = "error", "2xx without a verified receipt"
            return
        op.outcome, op.tx_id, op.hold_id, op.charged = "ok", receipt.tx_id, receipt.hold_id, receipt.charged
        op.authorized = receipt.authorized
        # Metered charges never exceed what was authorized (README); an API key holds at most
        # what it has left, so a key's last call may be capped below the metered cost.
        if op.expected is not None and receipt.charged != min(op.expected, receipt.authorized):
            op.detail = (
                f"charged {receipt.charged}, the route's price for this request is {op.expected} "
                f"(authorized {receipt.authorized})"
            )
        return
    _classify_failure(op, status, body)


def _classify_failure(op: Op, status: int, body: bytes) -> None:
    try:
        error = json.loads(body).get("error")
        op.code = error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        op.code = None
    op.outcome = "error" if status >= 500 and status not in _OK_5XX else "refused"
    if op.code == CommitOutcomeUnknown.code:  # not a refusal: it may have been recorded, once
        op.outcome, op.detail = "ambiguous", "the gateway says the commit's outcome is unknown"
    if op.outcome == "error":
        op.detail = f"HTTP {status}: {body[:200]!r}"


def _refused(op: Op, status: int | None, exc: InferpayError) -> None:
    op.status, op.code = status, exc.code
    if isinstance(exc, ReceiptInvalid):
        op.outcome, op.detail = "error", f"the SDK rejected the gateway's receipt: {exc.message}"
    elif status is not None and status >= 500 and status not in _OK_5XX:
        op.outcome, op.detail = "error", f"HTTP {status}: {exc.message}"
    elif isinstance(exc, CommitOutcomeUnknown):
        op.outcome, op.detail = "ambiguous", "the gateway says the commit's outcome is unknown"
    else:
        op.outcome = "refused"


def _broken(op: Op, exc: BaseException) -> None:
    """A transport failure: ``unsent`` if no payment went out or the connection was refused
    (nothing reached the gateway), else ``ambiguous`` (it may have been charged, once)."""
    op.code = type(exc).__name__
    op.outcome = "ambiguous" if op.nonce and not _refused_connection(exc) else "unsent"


def _refused_connection(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False

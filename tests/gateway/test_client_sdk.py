"""The client SDK (``gateway.client``) against a protocol double of the gateway.

``GatewayDouble`` is a protocol double for SDK unit tests only: a small WSGI app on 127.0.0.1
(werkzeug, port chosen at run time, stopped after each test) that speaks the fixed 402 / x402 v2
contract over the real ledger (``ledger.hold`` / ``ledger.settle``), signs offers and receipts
with the real sealer key, and can be told to misbehave. It is not the gateway: the tests that
run the SDK against the real gateway are integration tests and live apart.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gateway.client import (
    HttpxPaymentAuth,
    PaymentAuth,
    check_consistency,
    fetch_chain_info,
    fetch_head,
    receipt_of,
    request_target,
    verify_receipt_inclusion,
)
from gateway.wire.errors import BindingMismatch, ReceiptInvalid, SpendLimitExceeded, UpstreamError
from gateway.wire.receipts import Receipt, sign_offer
from gateway.wire.x402 import PaymentPayload, encode_header, network_id
from ledger.blocks import sign_header
from ledger.clock import system_now_ms
from ledger.crypto import KeySigner, new_private_key, split_signature
from ledger.encoding import request_binding_nonce
from ledger.errors import (
    AuthorizationError,
    InferpayError,
    InsufficientFunds,
    InvalidInput,
    LedgerConflict,
    NotFound,
)
from ledger.types import SignedBlock
from tests.support.ledger import UNIT, FakeClock, LedgerFixture, dump, make_ledger
from wallets.wallet import Wallet

PRICE = 1000  # base units: the exact price, or the upto maximum
UPTO_CHARGE = 1234
UPTO_MAX = 5000


class RealClock(FakeClock):
    """The ledger on wall-clock time, as the SDK signs validity windows from the wall clock."""

    def __call__(self) -> int:
        return system_now_ms()


def _status(error: InferpayError) -> int:
    for cls, status in ((NotFound, 404), (UpstreamError, 502), (LedgerConflict, 409), (InvalidInput, 400)):
        if isinstance(error, cls):
            return status
    return 402 if isinstance(error, AuthorizationError | InsufficientFunds) else 400


class GatewayDouble:
    """A protocol double of the gateway for SDK unit tests only (see the module docstring)."""

    def __init__(self, lf: LedgerFixture, scheme: str = "exact") -> None:
        self.lf = lf
        self.sealer = KeySigner(lf.sealer_key)
        self.pay_to = lf.party("gateway").address
        self.scheme = scheme
        self.mode: set[str] = set()
        self.seen: list[dict[str, Any]] = []  # every paid request as it arrived
        self.unpaid = 0
        self.head_override: SignedBlock | None = None
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def ledger_url(self) -> str:
        return f"{self.base}/ledger"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def requirement(self) -> dict[str, Any]:
        chain = self.lf.chain
        return {
            "scheme": self.scheme,
            "network": network_id(chain.chain_id),
            "amount": str(UPTO_MAX if self.scheme == "upto" else PRICE),
            "asset": chain.token_address,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": 300,
            "extra": {"name": chain.name, "version": chain.version, "inferpayBinding": "v1"},
        }

    # ---- WSGI ----

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            if request.path.startswith("/ledger/"):
                response = self.ledger_api(request)
            else:
                response = self.paid(request, environ.get("RAW_URI") or request.full_path.rstrip("?"))
        except InferpayError as exc:
            response = Response(json.dumps({"error": exc.to_dict()}), _status(exc), mimetype="application/json")
        return response(environ, start_response)

    def challenge(self, resource: str) -> Response:
        accepts = [self.requirement()]
        offer = sign_offer(self.sealer, resource, accepts)
        if "offer_other_key" in self.mode:
            offer = sign_offer(KeySigner(new_private_key()), resource, accepts)
        if "offer_forged" in self.mode:  # claims the sealer, signed by someone else
            offer = {**offer, "signature": sign_offer(KeySigner(new_private_key()), resource, accepts)["signature"]}
        body: dict[str, Any] = {
            "x402Version": 2,
            "error": "payment required",
            "resource": {"url": resource, "description": "test model", "mimeType": "application/json"},
            "accepts": accepts,
        }
        if "no_inferpay" not in self.mode:
            body["extensions"] = {
                "inferpay": {"offer": offer, "sealer": self.sealer.address, "ledger": self.ledger_url}
            }
        headers = {} if "body_only_402" in self.mode else {"PAYMENT-REQUIRED": encode_header(body)}
        return Response(json.dumps(body), 402, headers, mimetype="application/json")

    def paid(self, request: Request, target: str) -> Response:
        header = request.headers.get("PAYMENT-SIGNATURE")
        if header is None:
            with self._lock:
                self.unpaid += 1
            return self.challenge(request.base_url)
        payload = PaymentPayload.from_header(header)
        assert payload.accepted is not None and payload.accepted.to_dict() == self.requirement()
        auth, body = payload.authorization, request.get_data()
        with self._lock:
            self.seen.append(
                {
                    "method": request.method,
                    "target": target,
                    "body": body,
                    "nonce": auth.nonce,
                    "salt": payload.binding_salt,
                    "signature": payload.signature,
                }
            )
        if payload.binding_salt is not None and auth.nonce != request_binding_nonce(
            request.method, target, body, payload.binding_salt
        ):
            raise BindingMismatch("the payment is bound to another request")
        ledger = self.lf.ledger
        hold = ledger.hold(auth, payload.signature)
        if "upstream_fails" in self.mode:
            ledger.void(hold.tx_id)
            raise UpstreamError("the model is down")
        charge = UPTO_CHARGE if self.scheme == "upto" else auth.value
        settle = ledger.settle(hold.tx_id, charge)
        receipt = Receipt(
            settle.tx_id,
            hold.tx_id,
            auth.from_,
            auth.to,
            payload.network,
            auth.value,
            charge,
            ledger.balance(auth.from_).available,
            request.method,
            target,
            system_now_ms(),
            auth.nonce,
        )
        receipt_dict = self.forge(receipt)
        settlement = {
            "success": True,
            "transaction": settle.tx_id,
            "network": payload.network,
            "payer": auth.from_,
            "amount": str(charge),
            "charged": str(charge),
            "balanceAfter": str(receipt.balance_after),
        }
        if "no_receipt" not in self.mode:
            settlement["receipt"] = receipt_dict
        answer: dict[str, Any] = {"answer": 42}
        if request.path.endswith("/chat/completions"):
            answer = {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": "tiny",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "paid answer"}}
                ],
            }
        return Response(
            json.dumps(answer),
            200,
            {"PAYMENT-RESPONSE": encode_header(settlement)},
            mimetype="application/json",
        )

    def forge(self, receipt: Receipt) -> dict[str, Any]:
        if "receipt_wrong_signer" in self.mode:
            return receipt.signed(KeySigner(new_private_key())).to_dict()
        if "receipt_tampered" in self.mode:
            return {**receipt.signed(self.sealer).to_dict(), "charged": "1"}
        if "receipt_overcharge" in self.mode:  # self-consistent, but more than the client authorized
            value = receipt.authorized
            return replace(receipt, authorized=value + 10, charged=value + 5).signed(self.sealer).to_dict()
        if "receipt_other_payer" in self.mode:
            return replace(receipt, payer=self.lf.party("someone").address).signed(self.sealer).to_dict()
        return receipt.signed(self.sealer).to_dict()

    def ledger_api(self, request: Request) -> Response:
        ledger, route = self.lf.ledger, request.path.removeprefix("/ledger")
        if route == "/info":
            data: Any = {**ledger.chain.to_dict(), "head": ledger.head().to_dict()}
        elif route == "/head":
            data = (self.head_override or ledger.head()).to_dict()
        elif route == "/consistency":
            data = ledger.consistency_proof(int(request.args["old"]), int(request.args["new"]))
        elif route.startswith("/transactions/"):
            stored = ledger.transaction(route.removeprefix("/transactions/"))
            proof = None if stored.block_height is None else ledger.inclusion_proof(stored.tx_id)
            if proof is None and "never_seal" not in self.mode:
                ledger.seal_all()  # sealed by the next poll: the client has to wait for it
            if proof is not None and "tamper_proof" in self.mode:
                proof["transaction"]["message"]["amount"] = "1"
            if proof is not None and "proof_of_hold" in self.mode:
                proof = ledger.inclusion_proof(proof["transaction"]["message"]["holdId"])
            data = {
                "txId": stored.tx_id,
                "seq": stored.seq,
                "blockHeight": stored.block_height,
                "transaction": stored.tx.to_dict(),
                "inclusionProof": proof,
            }
        else:
            raise NotFound(f"no route {route}")
        return Response(json.dumps(data), 200, mimetype="application/json")


@pytest.fixture
def lf(tmp_path: Path) -> LedgerFixture:
    return make_ledger(tmp_path, clock=RealClock())


def _double(lf: LedgerFixture, scheme: str) -> Iterator[GatewayDouble]:
    double = GatewayDouble(lf, scheme)
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def gw(lf: LedgerFixture) -> Iterator[GatewayDouble]:
    yield from _double(lf, "exact")


@pytest.fixture
def gw_upto(lf: LedgerFixture) -> Iterator[GatewayDouble]:
    yield from _double(lf, "upto")


@pytest.fixture
def wallet(lf: LedgerFixture) -> Wallet:
    party = lf.party("alice")
    lf.mint(party.address, 10 * UNIT)
    return Wallet.from_private_key("alice", party.key)


def _receipt(response: requests.Response | httpx.Response) -> Receipt:
    receipt = receipt_of(response)
    assert receipt is not None, "the paid response carries no receipt"
    return receipt


def _balance(lf: LedgerFixture, address: str) -> int:
    return lf.ledger.balance(address).available


# ---- paying ----


def test_requests_auth_pays_and_verifies_the_receipt(gw: GatewayDouble, wallet: Wallet) -> None:
    auth = PaymentAuth(wallet, trusted_sealer=gw.sealer.address)
    response = requests.post(f"{gw.base}/v1/infer", json={"prompt": "hi"}, auth=auth, timeout=10)
    assert response.status_code == 200 and response.json() == {"answer": 42}
    receipt = response.inferpay_receipt  # type: ignore[attr-defined]
    assert (
        receipt_of(response) is receipt
        and isinstance(receipt, Receipt)
        and receipt.charged == PRICE
        and receipt.payer == wallet.address
    )
    assert [r.status_code for r in response.history] == [402]
    assert auth.spent == PRICE and auth.receipts == [receipt]
    assert _balance(gw.lf, gw.pay_to) == PRICE


def test_httpx_auth_pays_and_verifies_the_receipt(gw: GatewayDouble, wallet: Wallet) -> None:
    auth = HttpxPaymentAuth(wallet, trusted_sealer=gw.sealer.address)
    with httpx.Client(auth=auth, timeout=10) as client:
        response = client.post(f"{gw.base}/v1/infer", json={"prompt": "hi"})
    assert response.status_code == 200 and response.json() == {"answer": 42}
    receipt = _receipt(response)
    assert response.extensions["inferpay_receipt"] is receipt and receipt.charged == PRICE
    assert auth.spent == PRICE


def test_async_httpx_auth_pays(gw: GatewayDouble, wallet: Wallet) -> None:
    auth = HttpxPaymentAuth(wallet)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(auth=auth, timeout=10) as client:
            return await client.post(f"{gw.base}/v1/infer", content=b"raw body")

    response = asyncio.run(call())
    assert response.status_code == 200 and _receipt(response).charged == PRICE


def test_an_eth_account_local_account_can_pay(gw: GatewayDouble, lf: LedgerFixture) -> None:
    from eth_account import Account

    party = lf.party("bob")
    lf.mint(party.address, UNIT)
    account = Account.from_key(party.key)
    with httpx.Client(auth=HttpxPaymentAuth(account), timeout=10) as client:
        paid = client.get(f"{gw.base}/v1/infer")
    assert _receipt(paid).payer == party.address
    signature = bytes.fromhex(gw.seen[0]["signature"][2:])
    assert len(signature) == 65 and signature[64] in (27, 28)
    split_signature(gw.seen[0]["signature"])  # raises on a high-S signature
    response = requests.get(f"{gw.base}/v1/infer", auth=PaymentAuth(account), timeout=10)
    assert _receipt(response).charged == PRICE
    assert _balance(lf, party.address) == UNIT - 2 * PRICE


def test_the_openai_sdk_pays_through_an_httpx_client(gw: GatewayDouble, wallet: Wallet) -> None:
    from openai import OpenAI

    auth = HttpxPaymentAuth(wallet, trusted_sealer=gw.sealer.address)
    with httpx.Client(auth=auth, timeout=10) as http_client:
        client = OpenAI(base_url=f"{gw.base}/v1", api_key="unused", http_client=http_client, max_retries=0)
        completion = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "paid answer"
    [seen] = gw.seen
    assert seen["target"] == "/v1/chat/completions"
    assert seen["nonce"] == request_binding_nonce("POST", seen["target"], seen["body"], seen["salt"])
    assert auth.spent == PRICE and len(auth.receipts) == 1


def test_upto_reserves_the_maximum_and_keeps_only_the_charge(gw_upto: GatewayDouble, wallet: Wallet) -> None:
    auth = PaymentAuth(wallet, max_total=UPTO_MAX + UPTO_CHARGE)
    response = requests.post(f"{gw_upto.base}/v1/infer", data="x", auth=auth, timeout=10)
    assert _receipt(response).authorized == UPTO_MAX
    assert _receipt(response).charged == UPTO_CHARGE
    assert auth.spent == UPTO_CHARGE  # the uncharged 3766 went back under the cap
    requests.post(f"{gw_upto.base}/v1/infer", data="x", auth=auth, timeout=10)  # 1234 + 5000 fits
    with pytest.raises(SpendLimitExceeded):  # 2468 + 5000 does not
        requests.post(f"{gw_upto.base}/v1/infer", data="x", auth=auth, timeout=10)
    assert auth.spent == 2 * UPTO_CHARGE


def test_a_402_given_only_in_the_body_is_paid(gw: GatewayDouble, wallet: Wallet) -> None:
    gw.mode.add("body_only_402")
    with httpx.Client(auth=HttpxPaymentAuth(wallet), timeout=10) as client:
        assert client.get(f"{gw.base}/v1/infer").status_code == 200


def test_unpaid_routes_pass_through(gw: GatewayDouble, wallet: Wallet) -> None:
    auth = PaymentAuth(wallet)
    response = requests.get(f"{gw.ledger_url}/info", auth=auth, timeout=10)
    assert response.status_code == 200 and not hasattr(response, "inferpay_receipt")
    assert auth.spent == 0 and gw.seen == []


# ---- the binding nonce ----


@pytest.mark.parametrize("transport", ["requests", "httpx"])
def test_the_nonce_is_bound_to_the_request_actually_sent(gw: GatewayDouble, wallet: Wallet, transport: str) -> None:
    url = f"{gw.base}/v1/chat/completions?model=tiny%20one&n=2"
    body = {"messages": [{"role": "user", "content": "héllo"}]}
    if transport == "requests":
        requests.post(url, json=body, auth=PaymentAuth(wallet), timeout=10)
    else:
        with httpx.Client(auth=HttpxPaymentAuth(wallet), timeout=10) as client:
            client.post(url, json=body)
    [seen] = gw.seen
    assert seen["target"] == "/v1/chat/completions?model=tiny%20one&n=2" == request_target(url)
    assert json.loads(seen["body"]) == body and seen["salt"] is not None
    assert seen["nonce"] == request_binding_nonce("POST", request_target(url), seen["body"], seen["salt"])


def test_text_bodies_are_hashed_as_the_bytes_sent(gw: GatewayDouble, wallet: Wallet) -> None:
    response = requests.put(f"{gw.base}/v1/infer", data="naïve ✓", auth=PaymentAuth(wallet), timeout=10)
    assert response.status_code == 200
    assert gw.seen[0]["body"] == "naïve ✓".encode()


def test_request_target() -> None:
    assert request_target("http://h:1/a/b?x=1#frag") == "/a/b?x=1"
    assert request_target("http://h:1") == "/"
    assert request_target("http://h:1/a?") == "/a"


# ---- spend policy ----


def test_the_per_call_limit_refuses_before_anything_is_signed(
    gw: GatewayDouble, wallet: Wallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed: list[object] = []
    real_sign = Wallet.sign

    def spy(self: Wallet, *args: Any) -> str:
        signed.append(args)
        return real_sign(self, *args)

    monkeypatch.setattr(Wallet, "sign", spy)
    before = dump(gw.lf.path)
    for auth in (PaymentAuth(wallet, max_per_call=PRICE - 1), HttpxPaymentAuth(wallet, max_per_call=PRICE - 1)):
        with pytest.raises(SpendLimitExceeded) as caught:
            if isinstance(auth, PaymentAuth):
                requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
            else:
                with httpx.Client(auth=auth, timeout=10) as client:
                    client.get(f"{gw.base}/v1/infer")
        assert caught.value.details["limit"] == str(PRICE - 1)
        assert caught.value.response.status_code == 402  # type: ignore[attr-defined]
        assert auth.spent == 0
    assert signed == [] and gw.seen == [] and gw.unpaid == 2
    assert dump(gw.lf.path) == before


def test_the_total_limit_counts_every_payment(gw: GatewayDouble, wallet: Wallet) -> None:
    auth = PaymentAuth(wallet, max_total=2 * PRICE + PRICE // 2)
    for _ in range(2):
        requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
    before = dump(gw.lf.path)
    with pytest.raises(SpendLimitExceeded):
        requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
    assert auth.spent == 2 * PRICE and len(gw.seen) == 2 and dump(gw.lf.path) == before


@pytest.mark.parametrize("transport", ["requests", "httpx"])
def test_sixteen_threads_share_one_auth(gw: GatewayDouble, wallet: Wallet, transport: str) -> None:
    calls = 16
    auth: Any = (PaymentAuth if transport == "requests" else HttpxPaymentAuth)(wallet, max_total=calls * PRICE)
    client = httpx.Client(auth=auth if transport == "httpx" else None, timeout=30)
    barrier = threading.Barrier(calls)
    results: list[Any] = [None] * calls

    def call(i: int) -> None:
        barrier.wait(10)
        try:
            if transport == "requests":
                sent = requests.post(f"{gw.base}/v1/infer/{i}", json={"i": i}, auth=auth, timeout=30)
                results[i] = (sent.status_code, _receipt(sent))
            else:
                paid = client.post(f"{gw.base}/v1/infer/{i}", json={"i": i})
                results[i] = (paid.status_code, _receipt(paid))
        except Exception as exc:  # reported below, with the index
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client.close()
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    assert len({r[1].tx_id for r in results}) == calls
    assert sorted(s["target"] for s in gw.seen) == sorted(f"/v1/infer/{i}" for i in range(calls))
    assert len({s["nonce"] for s in gw.seen}) == calls  # one payment per request, no retries lost
    for s in gw.seen:  # and each nonce is bound to its own request
        assert s["nonce"] == request_binding_nonce("POST", s["target"], s["body"], s["salt"])
    assert auth.spent == calls * PRICE == _balance(gw.lf, gw.pay_to)
    with pytest.raises(SpendLimitExceeded):
        requests.post(f"{gw.base}/v1/infer", auth=auth, timeout=10) if transport == "requests" else (
            httpx.post(f"{gw.base}/v1/infer", auth=auth, timeout=10)
        )


# ---- the gateway's errors come back as the same classes ----


def test_insufficient_funds_is_raised_and_nothing_stays_reserved(gw: GatewayDouble, lf: LedgerFixture) -> None:
    pauper = Wallet.from_private_key("poor", lf.party("poor").key)
    auth = PaymentAuth(pauper)
    with pytest.raises(InsufficientFunds) as caught:
        requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
    assert caught.value.response.status_code == 402  # type: ignore[attr-defined]
    assert auth.spent == 0


def test_an_upstream_failure_after_payment_is_raised_and_released(gw: GatewayDouble, wallet: Wallet) -> None:
    gw.mode.add("upstream_fails")
    auth = HttpxPaymentAuth(wallet, max_total=PRICE)
    with httpx.Client(auth=auth, timeout=10) as client, pytest.raises(UpstreamError):
        client.get(f"{gw.base}/v1/infer")
    assert auth.spent == 0 and _balance(gw.lf, wallet.address) == 10 * UNIT


# ---- forged things ----


@pytest.mark.parametrize(
    "mode",
    ["receipt_wrong_signer", "receipt_tampered", "receipt_overcharge", "receipt_other_payer", "no_receipt"],
)
@pytest.mark.parametrize("transport", ["requests", "httpx"])
def test_a_forged_receipt_is_refused(gw: GatewayDouble, wallet: Wallet, mode: str, transport: str) -> None:
    gw.mode.add(mode)
    auth: Any = (PaymentAuth if transport == "requests" else HttpxPaymentAuth)(wallet)
    with pytest.raises(ReceiptInvalid):
        if transport == "requests":
            requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
        else:
            httpx.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
    assert auth.spent == PRICE  # what was really charged is unknown: the whole authorization counts
    assert auth.receipts == []


@pytest.mark.parametrize("mode", ["offer_other_key", "offer_forged"])
def test_an_offer_not_signed_by_the_sealer_is_refused(gw: GatewayDouble, wallet: Wallet, mode: str) -> None:
    gw.mode.add(mode)
    before = dump(gw.lf.path)
    for auth in (PaymentAuth(wallet), PaymentAuth(wallet, trusted_sealer=gw.sealer.address)):
        with pytest.raises(ReceiptInvalid):
            requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
        assert auth.spent == 0
    assert gw.seen == [] and dump(gw.lf.path) == before


def test_a_trusted_sealer_needs_an_inferpay_offer(gw: GatewayDouble, wallet: Wallet) -> None:
    gw.mode.add("no_inferpay")
    with pytest.raises(ReceiptInvalid):
        requests.get(f"{gw.base}/v1/infer", auth=PaymentAuth(wallet, trusted_sealer=gw.sealer.address), timeout=10)
    with pytest.raises(ReceiptInvalid):  # another sealer than the trusted one
        requests.get(f"{gw.base}/v1/infer", auth=PaymentAuth(wallet, trusted_sealer=gw.lf.operator.address), timeout=10)
    assert gw.seen == []


def test_without_verification_a_plain_x402_server_can_be_paid(gw: GatewayDouble, wallet: Wallet) -> None:
    gw.mode.update({"no_inferpay", "no_receipt"})
    auth = PaymentAuth(wallet, verify_receipts=False)
    response = requests.get(f"{gw.base}/v1/infer", auth=auth, timeout=10)
    assert response.status_code == 200 and receipt_of(response) is None
    assert auth.spent == PRICE


# ---- the ledger's proofs ----


def _paid_receipt(gw: GatewayDouble, wallet: Wallet) -> Receipt:
    response = requests.get(f"{gw.base}/v1/infer", auth=PaymentAuth(wallet), timeout=10)
    receipt = receipt_of(response)
    assert receipt is not None
    return receipt


def test_a_receipt_is_proven_sealed_in_the_ledger(gw: GatewayDouble, wallet: Wallet) -> None:
    receipt = _paid_receipt(gw, wallet)
    chain = fetch_chain_info(gw.ledger_url, expected_sealer=gw.sealer.address)
    assert chain == gw.lf.chain
    with requests.Session() as session:
        block = verify_receipt_inclusion(gw.ledger_url, receipt, chain, session, poll_interval=0.05)
    assert block == gw.lf.ledger.head() and block.header.tx_count == 3  # mint, hold, settle
    with httpx.Client() as client:  # an httpx client serves as the session too
        assert verify_receipt_inclusion(gw.ledger_url, receipt, chain, client) == block


@pytest.mark.parametrize("mode", ["tamper_proof", "proof_of_hold"])
def test_a_tampered_inclusion_proof_is_refused(gw: GatewayDouble, wallet: Wallet, mode: str) -> None:
    receipt = _paid_receipt(gw, wallet)
    gw.lf.ledger.seal_all()
    gw.mode.add(mode)
    with pytest.raises(ReceiptInvalid):
        verify_receipt_inclusion(gw.ledger_url, receipt, gw.lf.chain)


def test_a_receipt_for_another_charge_is_refused(gw: GatewayDouble, wallet: Wallet) -> None:
    receipt = _paid_receipt(gw, wallet)
    lie = replace(receipt, charged=receipt.charged - 1).signed(gw.sealer)  # signed, but not what was sealed
    with pytest.raises(ReceiptInvalid, match="captures"):
        verify_receipt_inclusion(gw.ledger_url, lie, gw.lf.chain, poll_interval=0.05)


def test_an_unsealed_transaction_times_out(gw: GatewayDouble, wallet: Wallet) -> None:
    gw.mode.add("never_seal")
    receipt = _paid_receipt(gw, wallet)
    with pytest.raises(NotFound):
        verify_receipt_inclusion(gw.ledger_url, receipt, gw.lf.chain, timeout=0.2, poll_interval=0.05)


def test_consistency_from_a_pinned_head(gw: GatewayDouble, wallet: Wallet) -> None:
    chain = gw.lf.chain
    _paid_receipt(gw, wallet)
    gw.lf.ledger.seal_all()
    pinned = fetch_head(gw.ledger_url, chain)
    _paid_receipt(gw, wallet)
    gw.lf.ledger.seal_all()
    newer = check_consistency(gw.ledger_url, pinned, chain)
    assert newer.header.height > pinned.header.height and newer == gw.lf.ledger.head()
    assert check_consistency(gw.ledger_url, newer, chain) == newer


def test_a_rewritten_or_rolled_back_ledger_is_detected(gw: GatewayDouble, wallet: Wallet) -> None:
    chain = gw.lf.chain
    _paid_receipt(gw, wallet)
    gw.lf.ledger.seal_all()
    real = gw.lf.ledger.head()
    # A head the sealer once signed for another history at the same height (a fork).
    fork = sign_header(replace(real.header, tree_root="0x" + "ab" * 32), gw.sealer)
    with pytest.raises(ReceiptInvalid):
        check_consistency(gw.ledger_url, fork, chain)
    # A client that has seen a later head than the ledger now shows: rolled back.
    later = sign_header(replace(real.header, height=real.header.height + 5), gw.sealer)
    with pytest.raises(ReceiptInvalid, match="rolled back"):
        check_consistency(gw.ledger_url, later, chain)
    gw.head_override = sign_header(replace(real.header, timestamp_ms=real.header.timestamp_ms + 1), gw.sealer)
    with pytest.raises(ReceiptInvalid):  # the head served is not the block the ledger proves to
        check_consistency(gw.ledger_url, real, chain)


# ---- importing the SDK stays light ----


def test_importing_the_client_loads_no_server_and_no_http_library() -> None:
    code = (
        "import sys, gateway.client; "
        "bad = [m for m in ('flask', 'gateway.server.app', 'requests', 'httpx') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

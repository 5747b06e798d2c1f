"""Fuzzing the newer surfaces, as part of the ``fuzz`` phase (``reliability.fuzz.Fuzzer`` runs them):

- in process, Hypothesis on the transparency-log parsers (signed notes, tlog-proof files,
  policies: ``ledger.tlog``), on Permit2 authorizations and on facilitator request bodies
  (``gateway.wire.facilitator``), each fed mutations of a valid example (a byte flipped, cut,
  inserted; a field dropped, retyped) as well as garbage: each may refuse only with an
  ``InferpayError``;
- over HTTP, the explorer: every page with random path segments and query parameters (the
  known ones and others) carrying markup, a marker and the usual odd values: never a 5xx,
  ``Content-Security-Policy`` on every HTML page, and the marker never printed back unescaped;
- ``GET /metrics`` after a paid call with an API key: it never shows the key, the payer's
  address (metrics carry only public labels: routes, the payee, models), a private key or the
  wallets' password.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from hypothesis import strategies as st

from gateway.wire.facilitator import FacilitatorRequest, parse_payment
from ledger.errors import InferpayError
from ledger.tlog.note import parse_note
from ledger.tlog.policy import parse_policy
from ledger.tlog.proof import format_tlog_proof, parse_tlog_proof
from ledger.types import Permit2Authorization
from reliability.checks import Finding
from tests.ledger.tlog_support import MemoryLog, witness
from tests.strategies import permit2_authorizations
from tests.support.gateway import FLAT, PASSWORD

if TYPE_CHECKING:
    from reliability.fuzz import Fuzzer

MARK = "zq" + secrets.token_hex(4)  # a marker no page prints on its own
MARKUP = f'"><svg/onload=alert(1)>{MARK}<'


def mutated_bytes(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with a few bytes flipped, removed or inserted, or cut short."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.integers(0, max(len(data) - 1, 0)))
            action = draw(st.sampled_from(["flip", "drop", "insert", "cut"]))
            if action == "flip" and data:
                data[where] ^= 1 << draw(st.integers(0, 7))
            elif action == "drop" and data:
                del data[where]
            elif action == "insert":
                data[where:where] = draw(
                    st.binary(min_size=1, max_size=4) | st.sampled_from([b"\n", b" ", b"\xe2\x80"])
                )
            elif action == "cut":
                del data[where:]
        return bytes(data)

    return build()


def policy_text() -> bytes:
    log, one, two = MemoryLog(), witness("fuzz-w1"), witness("fuzz-w2")
    return (
        f"log {log.signer.vkey}\nwitness w1 {one.vkey}\nwitness w2 {two.vkey}\ngroup any 1 w1 w2\nquorum any\n"
    ).encode()


def only_inferpay_errors(parse: Callable[[Any], Any]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        with contextlib.suppress(InferpayError):  # the contract's refusal
            parse(value)

    return check


def tlog_and_wire(fuzzer: Fuzzer, payload: dict[str, Any], requirement: dict[str, Any]) -> None:
    """The in-process parsers of the newer formats."""
    from reliability.fuzz import JSON, mutated

    n = fuzzer.examples * 10
    log = MemoryLog()
    log.append(*(b"entry %d" % i for i in range(7)))
    note = log.signed(7, witness("fuzz-w1"))
    proof = format_tlog_proof(log.proof(3, 7, witness("fuzz-w1")))
    policy = policy_text()
    garbage = st.binary(max_size=300)
    fuzzer.run("signed_note", st.one_of(mutated_bytes(note), garbage), only_inferpay_errors(parse_note), n)
    fuzzer.run("tlog_proof_file", st.one_of(mutated_bytes(proof), garbage), only_inferpay_errors(parse_tlog_proof), n)
    fuzzer.run("tlog_policy", st.one_of(mutated_bytes(policy), garbage), only_inferpay_errors(parse_policy), n)
    permit = permit2_authorizations().map(Permit2Authorization.to_dict)
    fuzzer.run(
        "permit2_authorization",
        st.one_of(permit.flatmap(mutated), JSON),
        only_inferpay_errors(Permit2Authorization.from_dict),
        n,
    )
    body = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirement}

    def facilitator_request(raw: bytes) -> None:
        request = FacilitatorRequest.from_body(raw)
        request.payer_hint()
        parse_payment(request, settling=True)

    bodies = st.one_of(
        mutated(body).map(lambda v: json.dumps(v).encode()),
        mutated_bytes(json.dumps(body).encode()),
        JSON.map(lambda v: json.dumps(v).encode()),
        garbage,
    )
    fuzzer.run("facilitator_body", bodies, only_inferpay_errors(facilitator_request), n)


# ---- the explorer ----

EXPLORER_PAGES = (
    "/explorer/",
    "/explorer/blocks/{n}",
    "/explorer/tx/{s}",
    "/explorer/accounts/{s}",
    "/explorer/accounts/{a}",
    "/explorer/accounts/{a}/history.csv",
    "/explorer/accounts/{a}/history.json",
    "/explorer/accounts/{a}/keys",
    "/explorer/routes",
    "/explorer/search",
    "/explorer/{s}",
)
PARAMETERS = ("q", "before", "limit", "page", "from", "format", "since", MARK)


def explorer(fuzzer: Fuzzer) -> None:
    from reliability.fuzz import ODD

    address = fuzzer.wallet.address
    value = st.one_of(
        st.just(MARKUP),
        st.text(max_size=40),
        ODD.map(str),
        st.sampled_from(["0", "-1", str(2**63), "1e9", "0x" + "f" * 64, address, "%00", "../../etc"]),
    )
    segment = st.one_of(st.just(MARKUP), st.text(max_size=30), st.sampled_from(["0x" + "0" * 64, "0x", "%2e%2e"]))

    @st.composite
    def request(draw: st.DrawFn) -> str:
        page = draw(st.sampled_from(EXPLORER_PAGES))
        path = page.format(n=draw(st.integers(-5, 2**64) | st.just(1)), s=quote(draw(segment), safe=""), a=address)
        params = draw(st.dictionaries(st.sampled_from(PARAMETERS), value, max_size=3))
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
        return path + ("?" + query if query else "")

    def check(target: str) -> None:
        response = requests.get(fuzzer.env.url + target, timeout=30, allow_redirects=False)
        fuzzer.statuses[str(response.status_code)] += 1
        problems = []
        if response.status_code >= 500:
            problems.append(f"HTTP {response.status_code}")
        if response.headers.get("Content-Type", "").startswith("text/html"):
            if "script-src 'none'" not in response.headers.get("Content-Security-Policy", ""):
                problems.append("an HTML page without the Content-Security-Policy")
            if "<svg/onload" in response.text:  # Jinja would have printed &lt;svg/onload
                problems.append("input printed back unescaped")
        for problem in problems:
            if sum(1 for f in fuzzer.findings if f.check == "http:explorer") < 5:
                fuzzer.findings.append(Finding("http:explorer", f"GET {target[:150]}: {problem}"))

    fuzzer.run("explorer", request(), check, fuzzer.http_examples)


# ---- metrics ----


def metrics_leaks(fuzzer: Fuzzer) -> dict[str, Any]:
    """A call paid with an API key, one paid with a signed payment, then ``GET /metrics``."""
    env, wallet = fuzzer.env, fuzzer.wallet
    payer = env.new_wallet("metrics-payer", "0.01")
    key = env.create_key("metrics-payer", "0.005", "1h")["apiKey"]
    answered = [
        requests.post(env.route_url(FLAT), data=b"{}", headers={"Authorization": f"Bearer {key}"}, timeout=30),
    ]
    header, _ = env.payment(payer, FLAT)
    answered.append(requests.post(env.route_url(FLAT), data=b"{}", headers={"PAYMENT-SIGNATURE": header}, timeout=30))
    text = requests.get(env.url + "/metrics", timeout=30).text
    secrets_ = {
        "the API key": key,
        "the API key's secret part": key.removeprefix("ipk_"),
        "the payer's address": payer.address,
        "the fuzz wallet's address": wallet.address,
        "a private key": payer.private_key_bytes().hex(),
        "the wallets' password": PASSWORD,
    }
    leaked = [what for what, secret in secrets_.items() if secret and secret.lower() in text.lower()]
    for what in leaked:
        fuzzer.findings.append(Finding("metrics_never_leak", f"GET /metrics shows {what}"))
    fuzzer.inputs["metrics"] += 1
    return {
        "callsBefore": [r.status_code for r in answered],
        "metricsBytes": len(text),
        "secretsLookedFor": len(secrets_),
        "leaked": leaked,
    }

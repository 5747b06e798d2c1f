"""Fuzzing: schemathesis against the live gateway's ``/openapi.json``, Hypothesis on every parser
(in process and through the live gateway), and the ledger shown unchanged by all of it.

Each parser may refuse an input only with the error its contract names (an ``InferpayError``
subclass: ``MalformedPayment``, ``KeystoreInvalid``/``WrongPassword``, ``InvalidAmount``,
``InvalidAddress``, ``ConfigError``, ``MalformedRecord``); anything else (a ``RecursionError``,
a ``ValueError`` from a library) is a finding. Over HTTP: no 5xx and no traceback in the
gateway's log. Hypothesis runs every example (a failing input is recorded, never raised), with
the run's seed, and no example database.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from gateway.client.payer import Payer
from gateway.server.config import parse_config
from gateway.wire.receipts import Receipt
from gateway.wire.x402 import PaymentPayload
from ledger.amounts import check_amount, format_amount, parse_amount, parse_base_units
from ledger.errors import InferpayError
from ledger.types import Transaction, parse_address
from reliability import fuzz_surfaces
from reliability.checks import Finding
from reliability.deploy import Deployment
from reliability.profiles import Profile
from tests.strategies import addresses, amounts
from tests.support.gateway import FLAT
from tests.support.keystores import PASSWORD as KEYSTORE_PASSWORD
from tests.wallets.test_keystore_malformed import mutated_keystores
from wallets.keystore import decrypt_key

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**80),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e3", "0x", "0x" + "f" * 64, "http://[", "http://x:99999", "\x00", "🙂" * 3]),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(0, 3), max_size=3),
)
DEEP = st.integers(800, 5000).map(lambda n: "[" * n)  # JSON nested deeper than Python's recursion limit


def mutated(base: Any) -> st.SearchStrategy[Any]:
    """``base`` (a JSON-like tree) with one to three leaves deleted, replaced, renamed or added."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        tree = copy.deepcopy(base)
        for _ in range(draw(st.integers(1, 3))):
            paths = _paths(tree)
            if not paths:
                break
            path = draw(st.sampled_from(paths))
            parent = tree
            for key in path[:-1]:
                parent = parent[key]
            leaf = path[-1]
            action = draw(st.sampled_from(["delete", "replace", "replace", "add", "rename"]))
            if isinstance(parent, list):
                if action == "delete" and parent:
                    parent.pop(leaf)
                elif parent:
                    parent[leaf] = draw(ODD)
            elif action == "delete":
                parent.pop(leaf, None)
            elif action == "replace":
                parent[leaf] = draw(ODD)
            elif action == "add":
                parent[draw(st.text(max_size=8))] = draw(ODD)
            elif leaf in parent:
                parent[draw(st.text(max_size=8))] = parent.pop(leaf)
        return tree

    return build()


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.extend(_paths(value, (*prefix, index)))
    return found


def b64(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return strategy.map(lambda v: base64.b64encode(v if isinstance(v, bytes) else json.dumps(v).encode()).decode())


class Fuzzer:
    def __init__(self, dep: Deployment, profile: Profile, seed: int) -> None:
        self.dep = dep
        self.env = dep.env
        self.seed = seed
        self.examples = profile.fuzz_examples
        self.http_examples = profile.fuzz_header_examples
        self.inputs: Counter[str] = Counter()
        self.findings: list[Finding] = []
        self.statuses: Counter[str] = Counter()
        # One base unit: even an input that happened to be a valid payment or transfer could move nothing.
        self.wallet = dep.env.wallets.get("fuzz") or dep.env.new_wallet("fuzz", "0.000001")

    def run(self, name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int) -> None:
        """Run ``check`` on ``examples`` inputs drawn from ``strategy``, recording every failure."""

        @hypothesis_seed(self.seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def campaign(value: Any) -> None:
            self.inputs[name] += 1
            try:
                check(value)
            except (Exception, BaseExceptionGroup) as exc:  # recorded, never raised: Hypothesis must run every example
                self.unexpected(name, value, exc)

        try:
            campaign()
        except Unsatisfiable:  # e.g. no negative input exists for an operation without parameters
            self.inputs[f"{name}:unsatisfiable"] += 0

    def unexpected(self, name: str, value: Any, exc: BaseException) -> None:
        if sum(1 for f in self.findings if f.check == f"parser:{name}") >= 5:
            return  # enough examples of one parser's failure
        shown = repr(value)
        defect = {}
        if isinstance(exc, RecursionError):
            defect = {"defect": "deep-json-recursion"}
        elif name.startswith("config") and isinstance(exc, ValueError):
            defect = {"defect": "config-url-valueerror"}
        self.findings.append(
            Finding(
                f"parser:{name}",
                f"{type(exc).__name__}: {str(exc)[:200]}",
                {"input": shown[:200] + ("…" if len(shown) > 200 else ""), **defect},
            )
        )

    # ---- in process ----

    def parsers(self) -> None:
        env = self.env
        _, payload = env.payment(self.wallet, FLAT)
        receipt_example = _a_receipt(self.dep)
        config = tomllib.loads(self.dep.config_text())
        record = json.loads(next(self.dep.env.store.iter_raw_transactions()).record)
        payer = Payer(self.wallet)
        n = self.examples * 10

        def only_inferpay_errors(parse: Callable[[Any], Any]) -> Callable[[Any], None]:
            def check(value: Any) -> None:
                with contextlib.suppress(InferpayError):  # the contract's refusal
                    parse(value)

            return check

        headers = st.one_of(
            st.text(max_size=200),
            b64(st.binary(max_size=200)),
            b64(JSON),
            b64(mutated(payload)),
            b64(DEEP.map(str.encode)),
        )
        self.run("payment_header", headers, only_inferpay_errors(PaymentPayload.from_header), n)
        self.run(
            "payment_required_402",
            headers,
            only_inferpay_errors(lambda h: payer.challenge({"PAYMENT-REQUIRED": h}, b"")),
            n,
        )
        self.run("receipt", mutated(receipt_example), only_inferpay_errors(Receipt.from_dict), n)
        self.run("transaction_record", mutated(record), only_inferpay_errors(Transaction.from_dict), n)
        self.run(
            "keystore",
            mutated_keystores(),
            only_inferpay_errors(lambda k: decrypt_key(k, KEYSTORE_PASSWORD)),
            self.examples * 5,
        )
        amount_text = st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9]{0,24}(\.[0-9]{0,8})?\Z"))
        self.run("amount", amount_text, only_inferpay_errors(_amount_roundtrip), n)
        self.run("amount_base_units", amount_text, only_inferpay_errors(parse_base_units), n)
        self.run("amount_integer", st.one_of(amounts, st.integers(), ODD), only_inferpay_errors(_integer_roundtrip), n)
        address_like = st.one_of(
            ODD,
            addresses,
            addresses.map(str.lower),
            addresses.map(str.swapcase),
            st.from_regex(r"\A0x[0-9a-fA-F]{38,42}\Z"),
        )
        self.run("address", address_like, only_inferpay_errors(_address_roundtrip), n)
        self.run("config", mutated(config), only_inferpay_errors(parse_config), n)
        self.run("config_route_urls", _route_urls(config), only_inferpay_errors(parse_config), n)
        toml_text = st.one_of(st.text(max_size=200), mutated(config).map(_as_toml))
        self.run(
            "config_toml",
            toml_text,
            only_inferpay_errors(lambda t: parse_config(tomllib.loads(t)) if _toml_ok(t) else None),
            n,
        )

    # ---- over HTTP ----

    def post(self, name: str, path: str, **kw: Any) -> None:
        try:
            response = requests.post(self.env.route_url(path), timeout=30, **kw)
        except requests.exceptions.InvalidHeader:
            self.inputs[name] -= 1  # counted by ``run``, never sent: requests itself refuses it
            return
        self.statuses[str(response.status_code)] += 1
        if response.status_code >= 500:
            deep = any(
                "[[[[" in str(v)[:400] or _decodes_deep(v) for v in (kw.get("data"), *kw.get("headers", {}).values())
            )
            tag = {}
            if deep:
                tag = {"defect": "deep-json-recursion" if name != "transfer_body" else "deep-json-body"}
            if sum(1 for f in self.findings if f.check == f"http:{name}") < 5:
                self.findings.append(
                    Finding(
                        f"http:{name}",
                        f"HTTP {response.status_code}: {response.text[:150]}",
                        {"input": repr(kw)[:200], **tag},
                    )
                )

    def live(self) -> None:
        env, wallet = self.env, self.wallet
        _, payload = env.payment(wallet, FLAT)
        auth, signature = wallet.authorize_transfer(env.chain, env.wallets["operator"].address, 1000)
        transfer = {"authorization": auth.to_dict(), "signature": signature}
        printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
        headers = st.one_of(printable, b64(mutated(payload)), b64(JSON), b64(DEEP.map(str.encode)))
        n = self.http_examples
        for name in ("PAYMENT-SIGNATURE", "X-PAYMENT"):
            self.run(
                f"header_{name}",
                headers,
                lambda h, k=name: self.post(f"header_{k}", FLAT, data=b"{}", headers={k: h}),
                n,
            )
        self.run(
            "bearer_key",
            printable,
            lambda t: self.post("bearer_key", FLAT, headers={"Authorization": f"Bearer ipk_{t}"}),
            n // 2,
        )
        bodies = st.one_of(
            mutated(transfer).map(lambda v: json.dumps(v).encode()),
            JSON.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=200),
            DEEP.map(str.encode),
        )
        self.run(
            "transfer_body",
            bodies,
            lambda b: self.post(
                "transfer_body", "/ledger/transfers", data=b, headers={"Content-Type": "application/json"}
            ),
            n,
        )

    def edges(self) -> None:
        """Every integer the ledger API takes, at and past the edges of what it can store."""
        big = [2**63 - 1, 2**63, 2**64, 10**30]
        paths = [f"/ledger/blocks/{n}" for n in big]
        paths += [f"/ledger/blocks?from={n}" for n in big] + [f"/ledger/blocks?from={2**63 - 5}&limit=1000"]
        paths += [f"/ledger/consistency?old={n}&new={n}" for n in big]
        paths += [f"/ledger/accounts/{self.wallet.address}/history?before={n}" for n in big]
        for path in paths:
            response = requests.get(self.env.url + path, timeout=30)
            self.inputs["integer_edges"] += 1
            self.statuses[str(response.status_code)] += 1
            if response.status_code >= 500:
                self.findings.append(
                    Finding("http:integer_edges", f"GET {path}: HTTP {response.status_code}", _tag_5xx(path, self.dep))
                )

    def schemathesis(self) -> dict[str, Any]:
        import schemathesis
        from schemathesis import GenerationMode
        from schemathesis.specs.openapi.checks import (
            content_type_conformance,
            response_schema_conformance,
            status_code_conformance,
        )

        RESPONSE_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]  # noqa: N806
        schema = schemathesis.openapi.from_url(self.env.url + "/openapi.json")
        operations = 0
        conformance: Counter[str] = Counter()
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.label} ({mode.value})"

                def call(case: Any, label: str = label) -> None:
                    response = case.call(base_url=self.env.url, timeout=30)
                    self.statuses[str(response.status_code)] += 1
                    if response.status_code >= 500:
                        curl = case.as_curl_command()
                        self.findings.append(
                            Finding(
                                "schemathesis",
                                f"{label}: HTTP {response.status_code}",
                                {"curl": curl[:300], **_tag_5xx(curl, self.dep)},
                            )
                        )
                    try:  # what the gateway answered must be what its document says it answers
                        case.validate_response(response, checks=RESPONSE_CHECKS)
                    except (Exception, BaseExceptionGroup) as exc:
                        for failure in getattr(exc, "exceptions", [exc]):
                            title = getattr(failure, "title", None) or str(failure).strip().splitlines()[0]
                            if sum(1 for f in self.findings if f.check == "schemathesis_response") < 10:
                                self.findings.append(
                                    Finding(
                                        "schemathesis_response",
                                        f"{label}: {title[:150]} (HTTP {response.status_code})",
                                        {"curl": case.as_curl_command()[:300]},
                                    )
                                )
                    try:
                        case.validate_response(response)
                    except (Exception, BaseExceptionGroup) as exc:  # every other check: noted, counted
                        for failure in getattr(exc, "exceptions", [exc]):
                            title = getattr(failure, "title", None) or str(failure).strip().splitlines()[0]
                            conformance[f"{label}: {title[:100]} (HTTP {response.status_code})"] += 1

                self.run("schemathesis", operation.as_strategy(generation_mode=mode), call, self.examples)
        return {"operations": operations, "conformanceNotes": dict(conformance.most_common(20))}


def run_fuzz(dep: Deployment, profile: Profile, seed: int) -> tuple[dict[str, Any], list[Finding]]:
    started = time.monotonic()
    fuzzer = Fuzzer(dep, profile, seed)
    fuzzer.parsers()
    _, payload = dep.env.payment(fuzzer.wallet, FLAT)
    fuzz_surfaces.tlog_and_wire(fuzzer, payload, dep.env.requirement(FLAT))
    log_before = dep.gateway_log().count("Traceback")
    before = dep.env.quiet_dump()
    api = fuzzer.schemathesis()
    fuzzer.live()
    fuzzer.edges()
    fuzz_surfaces.explorer(fuzzer)
    after = dep.env.quiet_dump()
    metrics = fuzz_surfaces.metrics_leaks(fuzzer)  # pays: after the ledger has been compared
    tracebacks = dep.gateway_log().count("Traceback") - log_before
    if before != after:
        fuzzer.findings.append(
            Finding(
                "rejected_inputs_change_nothing",
                f"the ledger changed: {len(set(before) ^ set(after))} dump lines differ",
            )
        )
    for error, count in _tracebacks(dep, log_before).items():
        tag = {"defect": TRACEBACK_DEFECTS[error]} if error in TRACEBACK_DEFECTS else {}
        fuzzer.findings.append(
            Finding("no_traceback", f"{count} traceback(s) ending in {error} in the gateway's log", tag)
        )
    figures = {
        "inputs": sum(fuzzer.inputs.values()),
        "inputsByTarget": dict(sorted(fuzzer.inputs.items())),
        "httpStatuses": dict(sorted(fuzzer.statuses.items())),
        "schemathesis": api,
        "metrics": metrics,
        "ledgerUnchanged": before == after,
        "gatewayTracebacks": tracebacks,
        "durationSeconds": round(time.monotonic() - started, 1),
    }
    return figures, fuzzer.findings


# ---- helpers ----


def _route_urls(config: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The config with one route's upstream (or path) replaced by URL-like text."""
    text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=25)
    edges = st.sampled_from(["http://[", "http://[::1", "https://]x", "http://x:99999", "http:///v1", "ftp://x/v1"])
    urls = st.one_of(edges, text.map(lambda t: "http://" + t), text.map(lambda t: "https://" + t), text, ODD)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        tree = copy.deepcopy(config)
        route = draw(st.sampled_from(tree["routes"]))
        route[draw(st.sampled_from(["upstream", "upstream", "path"]))] = draw(urls)
        return tree

    return build()


def _a_receipt(dep: Deployment) -> dict[str, Any]:
    return Receipt(
        "0x" + "11" * 32,
        "0x" + "22" * 32,
        dep.env.wallets["operator"].address,
        dep.env.wallets["operator"].address,
        "eip155:1",
        10,
        5,
        100,
        "POST",
        FLAT,
        1,
    ).to_dict()


def _amount_roundtrip(text: Any) -> None:
    units = parse_amount(text)
    if parse_amount(format_amount(units)) != units:
        raise AssertionError(f"{text!r} does not round-trip through format_amount")


def _integer_roundtrip(value: Any) -> None:
    units = check_amount(value)
    if parse_amount(format_amount(units)) != units:
        raise AssertionError(f"{value!r} does not round-trip")


def _address_roundtrip(value: Any) -> None:
    address = parse_address(value)
    if parse_address(address) != address or address.lower() != str(value).lower():
        raise AssertionError(f"{value!r} parsed as {address}")


def _as_toml(tree: Any) -> str:
    lines = []
    for section, body in tree.items() if isinstance(tree, dict) else []:
        if isinstance(body, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in body.items() if isinstance(k, str) and k.isidentifier()]
        elif isinstance(body, list):
            for route in body:
                lines.append(f"[[{section}]]")
                if isinstance(route, dict):
                    lines += [
                        f"{k} = {json.dumps(v)}" for k, v in route.items() if isinstance(k, str) and k.isidentifier()
                    ]
    return "\n".join(lines)


def _toml_ok(text: str) -> bool:
    """The gateway reads its config through ``load_config``, which turns bad TOML into ConfigError."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _decodes_deep(value: Any) -> bool:
    if not isinstance(value, str | bytes):
        return False
    try:
        return base64.b64decode(value, validate=True)[:50].count(b"[") > 40
    except ValueError:
        return False


TRACEBACK_DEFECTS = {"RecursionError": "deep-json-recursion", "OverflowError": "block-height-overflow"}


def _tracebacks(dep: Deployment, skip: int) -> Counter[str]:
    """The gateway's tracebacks since the ``skip`` first ones, by the exception class they end in."""
    found: Counter[str] = Counter()
    for block in dep.gateway_log().split("Traceback (most recent call last):")[skip + 1 :]:
        match = re.search(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit|Interrupt))\b", block, re.MULTILINE)
        found[match.group(1) if match else "unknown"] += 1
    return found


def _tag_5xx(curl: str, dep: Deployment) -> dict[str, str]:
    """A 5xx on the block routes with a height past 2**63-1 is the known overflow."""
    return {"defect": "block-height-overflow"} if "/ledger/blocks" in curl else {}

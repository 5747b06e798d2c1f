"""The explorer's pages through Flask's test client: what they show, against the ledger API;
escaping, the CSP, 400/404 pages and never a 500 (fuzzed); nothing private on any page; the
templates and stylesheet shipped with the package.

The app is the real gateway app (``create_app``) on a real home and SQLite ledger; its payments
are placed through the same ledger calls the paid proxy makes (hold, settle, void, an API key's
charge), in-process, so no upstream is needed. tests/gateway/test_explorer_browser.py drives the
same pages in a real browser against a real gateway process.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server.api_keys import key_hash, register_key
from gateway.server.app import close_app, create_app
from gateway.server.config import parse_config
from gateway.server.explorer import CSP
from gateway.server.home import Home
from gateway.server.services import EXTENSION, Services
from inferpay_cli.main import cli
from ledger.amounts import format_amount
from ledger.types import Allowance
from tests.strategies import query_values
from tests.support.gateway import PASSWORD, SCRYPT_N
from wallets.wallet import Wallet

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_SECRET = "upstream-password-s3cret"
LABEL = "label-for-carol-private"
FLAT, METERED = 1000, 10_000  # what each route's call authorizes, in base units


@dataclass
class Explorer:
    app: Flask
    client: FlaskClient
    services: Services
    alice: Wallet
    key: str
    hold_ids: list[str]
    open_hold: str
    voided_hold: str
    settles: list[str]

    def get(self, url: str, **params: str) -> Any:
        response = self.client.get(url, query_string=params or None)
        response.get_data()
        response.close()  # a static file's handle, else a ResourceWarning
        return response

    def api(self, path: str) -> Any:
        response = self.client.get("/ledger" + path)
        assert response.status_code == 200, response.text
        return response.get_json()


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explorer]:
    home = tmp_path_factory.mktemp("explorer") / "home"
    env = {"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    for args in (["init"], ["wallet", "create", "alice"], ["mint", "alice", "100"]):
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    upstream = f"http://user:{UPSTREAM_SECRET}@127.0.0.1:1/v1"
    config = parse_config(
        {
            "routes": [
                {"path": "/v1/flat", "upstream": upstream + "/flat", "price": "0.001"},
                {"path": "/v1/flat-too", "upstream": upstream + "/flat", "price": "0.001"},
                {
                    "path": "/v1/metered",
                    "upstream": upstream + "/metered",
                    "price": "0.0001",
                    "price_per_1k_input_tokens": "0.0015",
                    "max_amount": "0.01",
                },
                {"path": "/v1/free", "upstream": upstream + "/free", "free": True},
            ]
        },
        home=home,
    )
    app = create_app(config, start_sealer=False)
    svc: Services = app.extensions[EXTENSION]
    ledger = svc.ledger
    alice = Home(home).wallets.load("alice", PASSWORD)

    def hold(amount: int) -> str:
        now = ledger.now_s()
        auth, sig = alice.authorize_transfer(
            ledger.chain, svc.pay_to, amount, valid_after=now - 5, valid_before=now + 600
        )
        return ledger.hold(auth, sig, expires_at_s=now + 300).tx_id

    holds, settles = [], []
    for i in range(6):  # flat calls charged 1000, metered ones 2345
        hold_id = hold(FLAT if i % 2 else METERED)
        holds.append(hold_id)
        settles.append(ledger.settle(hold_id, FLAT if i % 2 else 2345).tx_id)
    voided = hold(FLAT)
    ledger.void(voided)
    allowance = Allowance(alice.address, svc.pay_to, 5_000_000, ledger.now_s() + 3600, "0x" + secrets.token_hex(32))
    key, _ = register_key(ledger, allowance, alice.sign(ledger.chain, allowance), label=LABEL)
    charge = ledger.charge(
        ledger.store.api_keys.get(key_hash(key)).allowance.allowance_id, FLAT, expires_at_s=ledger.now_s() + 300
    )  # type: ignore[union-attr]
    settles.append(ledger.settle(charge.tx_id, FLAT).tx_id)
    ledger.seal_all()
    open_hold = hold(METERED)  # left open, and unsealed
    yield Explorer(app, app.test_client(), svc, alice, key, holds, open_hold, voided, settles)
    close_app(app)


def _pages(ex: Explorer) -> list[str]:
    a = ex.alice.address
    return [
        "/explorer/",
        "/explorer/blocks/0",
        "/explorer/blocks/1",
        f"/explorer/tx/{ex.hold_ids[0]}",
        f"/explorer/tx/{ex.settles[0]}",
        f"/explorer/tx/{ex.open_hold}",
        f"/explorer/tx/{ex.voided_hold}",
        f"/explorer/tx/{ex.settles[-1]}",
        f"/explorer/accounts/{a}",
        f"/explorer/accounts/{a}/keys",
        f"/explorer/accounts/{ex.services.pay_to}",
        "/explorer/routes",
    ]


def _text(html: str) -> str:
    """The page's text, tags dropped and whitespace collapsed (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


# ---- every page ----


def test_every_page_answers_html_under_the_strict_csp(ex: Explorer) -> None:
    for url in [*_pages(ex), "/explorer/static/explorer.css", "/explorer/nope"]:
        response = ex.get(url)
        assert response.status_code == (404 if url.endswith("nope") else 200), url
        assert response.headers["Content-Security-Policy"] == CSP
        assert "default-src 'self'" in CSP and "script-src 'none'" in CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        if not url.endswith(".css"):
            assert response.mimetype == "text/html"
            html = response.text
            # Offline and script-free: nothing from another origin, no inline style or script.
            assert "<script" not in html and " style=" not in html and "javascript:" not in html
            assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html), url


def test_nothing_private_is_on_any_page(ex: Explorer) -> None:
    """No API key, key hash or label, upstream URL (with its password), keystore or sealer key."""
    home = ex.services.home.path
    secrets_ = [
        ex.key,
        ex.key[12:20],  # past the published prefix
        key_hash(ex.key),
        LABEL,
        UPSTREAM_SECRET,
        "127.0.0.1:1",
        PASSWORD,
        (home / "sealer.key").read_text().strip(),
        str(home),
        json.loads((home / "wallets" / "alice.json").read_text())["crypto"]["ciphertext"],
    ]
    for url in [*_pages(ex), f"/ledger/accounts/{ex.alice.address}/api-keys"]:
        body = ex.get(url).text
        for secret in secrets_:
            assert secret not in body, (url, secret)


# ---- what the pages show, against the ledger API ----


def test_the_head_shows_the_api_head_and_supply(ex: Explorer) -> None:
    info = ex.api("/info")
    text = _text(ex.get("/explorer/").text)
    height = info["head"]["header"]["height"]
    assert f"HEIGHT {height}" in text.upper()
    assert f"{format_amount(int(info['supply']))} tokens · {int(info['supply']):,} base units" in text
    # All sealed just now: every transaction in the log counts for the last 10 minutes.
    size = info["head"]["header"]["treeSize"]
    assert f"{size // 10}.{size % 10}" in text and f"{size} sealed in the last 10 minutes" in text
    for block in ex.api("/blocks")["blocks"]:
        assert f"/explorer/blocks/{block['header']['height']}" in ex.get("/explorer/").text


def test_a_block_page_checks_the_block_and_lists_its_transactions(ex: Explorer) -> None:
    api = ex.api("/blocks/1")
    html = ex.get("/explorer/blocks/1").text
    assert "Signature and contents check" in html and "✘" not in html
    for field in ("hash", "signature"):
        assert api[field] in html
    for key in ("prevHash", "merkleRoot", "treeRoot"):
        assert api["header"][key] in html
    for entry in api["transactions"]:
        assert f"/explorer/tx/{entry['txId']}" in html


def test_a_transaction_page_tells_the_hold_story_and_checks_the_proof(ex: Explorer) -> None:
    settle = ex.api(f"/transactions/{ex.settles[0]}")
    text = _text(ex.get(f"/explorer/tx/{ex.settles[0]}").text)
    assert "✔ Verified: this transaction hashes to leaf " + settle["inclusionProof"]["leafHash"] in text
    assert "is signed by the chain's sealer " + ex.api("/info")["sealer"] in text
    assert re.search(r"held 0x[0-9a-f]{6}…[0-9a-f]{4} \d{4}-", text) and "settled 0x" in text
    assert (
        "0.002345 tokens (2,345 base units) captured for the payee, 0.007655 tokens (7,655 base units) released" in text
    )
    assert f"payer {ex.alice.address}" in text and f"payee {ex.services.pay_to}" in text

    voided = _text(ex.get(f"/explorer/tx/{ex.voided_hold}").text)
    assert "voided: all 0.001 tokens (1,000 base units) released to the payer, nothing charged" in voided
    unsealed = _text(ex.get(f"/explorer/tx/{ex.open_hold}").text)
    assert "Not sealed into a block yet" in unsealed and "not resolved yet" in unsealed
    charged = _text(ex.get(f"/explorer/tx/{ex.settles[-1]}").text)
    assert "charged against an allowance the payer signed (an API key)" in charged


def test_the_account_page_shows_balance_holds_and_history(ex: Explorer) -> None:
    a = ex.alice.address
    api = ex.api(f"/accounts/{a}")
    html = ex.get(f"/explorer/accounts/{a}").text
    text = _text(html)
    assert f"{format_amount(int(api['available']))} tokens · {int(api['available']):,} base units" in text
    assert f"{int(api['held']):,} base units in 1 open hold" in text
    assert [h["holdId"] for h in api["holds"]] == [ex.open_hold]
    assert f"/explorer/tx/{ex.open_hold}" in html
    # Spend in the last 24 hours: three metered (2345), three flat (1000) and the key's charge (1000).
    paid = 3 * 2345 + 4 * FLAT
    assert f"{format_amount(paid)} tokens · {paid:,} base units" in text
    assert "<svg" in html and 'class="bar"' in html


def test_history_pages_walk_the_whole_history(ex: Explorer) -> None:
    a = ex.alice.address
    every = [e["txId"] for e in ex.api(f"/accounts/{a}/history?limit=1000")["entries"]]
    seen: list[str] = []
    url: str | None = f"/explorer/accounts/{a}?limit=4"
    while url is not None:
        html = ex.get(url).text
        rows = re.findall(
            r"<tr>\s*<td class=\"num\">\d+</td>\s*<td><a class=\"hex\" href=\"/explorer/tx/(0x[0-9a-f]{64})", html
        )
        seen += rows
        older = re.search(r'<a rel="next" class="older" href="([^"]+)"', html)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == every and len(every) > 8


def test_the_csv_download_is_the_api_history(ex: Explorer) -> None:
    a = ex.alice.address
    response = ex.get(f"/explorer/accounts/{a}/history.csv?limit=1000")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    entries = ex.api(f"/accounts/{a}/history?limit=1000")["entries"]
    assert [r["tx_id"] for r in rows] == [e["txId"] for e in entries]
    for row, entry in zip(rows, entries, strict=True):
        tx = entry["transaction"]
        assert (row["seq"], row["kind"]) == (str(entry["seq"]), tx["kind"])
        assert row["block_height"] == ("" if entry["blockHeight"] is None else str(entry["blockHeight"]))
        assert row["accepted_at_ms"] == tx["acceptedAt"]
        message = tx["message"]
        named = message.get("value") or message.get("amount") or message.get("cap")
        assert row["amount_base_units"] == named
        assert row["amount_tokens"] == format_amount(int(named))
    # Every movement of alice's available balance, added up, is her balance.
    assert sum(int(r["available_change_base_units"]) for r in rows) == int(ex.api(f"/accounts/{a}")["available"])


def test_the_json_download_is_the_api_history(ex: Explorer) -> None:
    a = ex.alice.address
    response = ex.get(f"/explorer/accounts/{a}/history.json?limit=5&before=9")
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert json.loads(response.text) == ex.api(f"/accounts/{a}/history?limit=5&before=9")


def test_api_keys_show_prefix_cap_spent_and_expiry_only(ex: Explorer) -> None:
    a = ex.alice.address
    (key,) = ex.api(f"/accounts/{a}/api-keys")["apiKeys"]
    assert key["prefix"] == ex.key[:12] and key["status"] == "active"
    assert (key["cap"], key["spent"]) == ("5000000", str(FLAT))
    assert set(key) == {"prefix", "allowanceId", "spender", "cap", "spent", "validBefore", "createdAt", "status"}
    text = _text(ex.get(f"/explorer/accounts/{a}/keys").text)
    assert f"{ex.key[:12]}…" in text and "active" in text
    assert "5 tokens 5,000,000 base units" in text and "4.999 tokens 4,999,000 base units" in text


def test_routes_count_calls_and_revenue_by_the_amount_each_call_authorized(ex: Explorer) -> None:
    html = ex.get("/explorer/routes").text
    table = _text(html[html.index('id="route-table"') :])
    # Flat routes share their terms (1000 authorized): 3 signed payments and the key's charge.
    assert "/v1/flat, /v1/flat-too 0.001 tokens 1,000 base units 4 0.004 tokens 4,000 base units" in table
    assert "/v1/metered 0.01 tokens 10,000 base units 3 0.007035 tokens 7,035 base units" in table
    assert "/v1/free" in html and "http" not in table


# ---- search ----


def test_search_finds_addresses_transactions_and_heights(ex: Explorer) -> None:
    a = ex.alice.address
    cases = {
        a: f"/explorer/accounts/{a}",
        a.lower(): f"/explorer/accounts/{a}",
        ex.settles[0]: f"/explorer/tx/{ex.settles[0]}",
        ex.settles[0].upper().replace("0X", "0x"): f"/explorer/tx/{ex.settles[0]}",
        "1": "/explorer/blocks/1",
        " 0 ": "/explorer/blocks/0",
    }
    for query, target in cases.items():
        response = ex.client.get("/explorer/search", query_string={"q": query})
        assert (response.status_code, response.headers["Location"]) == (302, target), query


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("999999", 404, "no block at height 999999"),
        ("9" * 40, 404, "no block at height"),
        ("0x" + "ab" * 32, 404, "no transaction with this id"),
        ("0x" + "aB" * 20, 404, "EIP-55 checksum"),
        ("hello", 404, "not an address"),
        ("", 400, "type an address"),
    ],
)
def test_search_says_clearly_what_it_did_not_find(ex: Explorer, query: str, status: int, says: str) -> None:
    response = ex.client.get("/explorer/search", query_string={"q": query})
    assert response.status_code == status
    assert says in response.text and ("Not found" if status == 404 else "Bad request") in response.text


# ---- errors, escaping, fuzzing ----


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/explorer/blocks/12345", 404),
        ("/explorer/blocks/99999999999999999999999", 404),
        ("/explorer/blocks/-1", 404),
        ("/explorer/tx/0x" + "00" * 32, 404),
        ("/explorer/tx/nothex", 400),
        ("/explorer/accounts/0x123", 400),
        ("/explorer/accounts/0x123/keys", 400),
        ("/explorer/accounts/0x123/history.csv", 400),
        ("/explorer/no/such/page", 404),
        ("/explorer/?before=0", 400),
        ("/explorer/?before=x", 400),
    ],
)
def test_bad_addresses_are_400_or_404_pages(ex: Explorer, url: str, status: int) -> None:
    response = ex.get(url)
    assert response.status_code == status and response.mimetype == "text/html", url
    assert response.headers["Content-Security-Policy"] == CSP


def test_nothing_sent_is_reflected_raw(ex: Explorer) -> None:
    attack = '<script>alert("x")</script>"\'><img src=x onerror=alert(1)>'
    a = ex.alice.address
    for url, params in [
        ("/explorer/search", {"q": attack}),
        (f"/explorer/accounts/{a}", {"limit": attack}),
        (f"/explorer/accounts/{a}", {"before": attack}),
        ("/explorer/", {"before": attack}),
        (f"/explorer/accounts/{attack}", {}),
        (f"/explorer/tx/{attack}", {}),
    ]:
        response = ex.client.get(url, query_string=params)
        assert response.status_code in (400, 404), url
        assert "<script>" not in response.text and "<img" not in response.text, url
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
        in ex.client.get("/explorer/search", query_string={"q": attack}).text
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    page=st.integers(min_value=0, max_value=11),
    params=st.dictionaries(st.sampled_from(["before", "limit", "q", "from", "x"]), query_values, max_size=3),
)
def test_no_query_parameter_makes_a_500(ex: Explorer, page: int, params: dict[str, str]) -> None:
    urls = [*_pages(ex), "/explorer/search", f"/explorer/accounts/{ex.alice.address}/history.csv"]
    response = ex.client.get(urls[page % len(urls)], query_string=params)
    assert response.status_code in (200, 302, 400, 404), (response.status_code, params, response.text[:500])
    assert "<script>" not in response.text


# ---- packaging ----


def test_templates_and_static_files_ship_in_the_wheel() -> None:
    """Every file under the explorer's templates/ and static/ matches a package-data glob."""
    from fnmatch import fnmatch

    package = ROOT / "gateway" / "server"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gateway.server"]
    files = [p for d in ("templates", "static") for p in (package / d).rglob("*") if p.is_file()]
    assert files
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch(relative, g) for g in globs), relative

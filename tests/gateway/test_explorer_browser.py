"""The explorer in a real browser (headless Chromium from Debian, driven by Playwright) against
a real gateway process (2 gunicorn workers, a real SQLite ledger) that took real paid calls.

It follows links as a reader would (head → block → transaction → account), searches (an
address, a transaction id, a height, garbage), pages through a history, downloads the CSV, and
checks what each page shows against the ledger API (``GET /ledger/...``). Any console error
(a CSP violation shows as one) fails the test. It takes screenshots of the head, a block, a
transaction and an account: into ``$INFERPAY_EXPLORER_SCREENSHOTS`` when set (``docs/explorer``
regenerates the README's), else into the test's temporary directory.

No browser, no test: the module skips, saying why. CI sets ``INFERPAY_REQUIRE_BROWSER=1``
(``.ci/run``, which also installs chromium), and then a missing browser is a failure instead:
a skipped browser suite must never pass for a tested one. Playwright never downloads a browser
here (``playwright install`` is not run): it drives the system's Chromium by path.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.client import PaymentAuth
from ledger.errors import InsufficientFunds
from tests.support.gateway import EMBED, FLAT, GatewayEnv, start_gateway_env

BROWSER_PATHS = ("chromium", "chromium-browser", "google-chrome")


def _browser_or_reason() -> tuple[str | None, str]:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the playwright package is not installed (pip install -e '.[test]')"
    configured = os.environ.get("INFERPAY_CHROMIUM")
    found = configured or next((p for name in BROWSER_PATHS if (p := shutil.which(name))), None)
    if not found or not Path(found).exists():
        return None, "no Chromium on this machine (apt-get install chromium, or set $INFERPAY_CHROMIUM)"
    return found, ""


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path, reason = _browser_or_reason()
    if path is None:
        if os.environ.get("INFERPAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"INFERPAY_REQUIRE_BROWSER=1 but the browser tests cannot run: {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-explorer"))) as started:
        _pay(started)
        yield started


def _pay(env: GatewayEnv) -> None:
    """Real calls through the gateway: flat and metered x402 payments, an API key's calls and
    a refusal (bob cannot pay), then a quiet ledger (everything settled and sealed)."""
    auth = PaymentAuth(env.alice)
    for i in range(4):
        assert requests.post(env.route_url(FLAT), json={"i": i}, auth=auth, timeout=30).status_code == 200
        words = " ".join(["word"] * (i + 3))
        response = requests.post(env.route_url(EMBED), json={"input": words, "model": "m"}, auth=auth, timeout=30)
        assert response.status_code == 200, response.text
    key = env.create_key("alice", "1", "1h")
    for i in range(2):
        headers = {"Authorization": f"Bearer {key['apiKey']}"}
        assert requests.post(env.route_url(FLAT), json={"k": i}, headers=headers, timeout=30).status_code == 200
    with pytest.raises(InsufficientFunds):  # the SDK raises the gateway's refusal as the ledger's error
        requests.post(env.route_url(FLAT), json={}, auth=PaymentAuth(env.bob), timeout=30)
    env.wait_quiet()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: message.type == "error" and errors.append(message.text))
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    # A 404 page is expected to log its own status; nothing else may (a CSP violation would).
    assert [e for e in errors if "status of 404" not in e] == []


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("INFERPAY_EXPLORER_SCREENSHOTS")
    directory = Path(target) if target else tmp_path_factory.mktemp("explorer-shots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def api(env: GatewayEnv, path: str) -> Any:
    response = requests.get(env.ledger_url + path, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _units(text: str) -> int:
    """The base units in "12.5 tokens · 12,500,000 base units"."""
    match = re.search(r"([\d,]+) base units", text)
    assert match, text
    return int(match.group(1).replace(",", ""))


def test_head_block_transaction_account_by_following_links(env: GatewayEnv, page: Any, shots: Path) -> None:
    info = api(env, "/info")
    page.goto(env.url + "/explorer/")
    assert page.title().startswith("Head #")
    assert int(page.inner_text("#height")) == info["head"]["header"]["height"]
    assert page.inner_text("#tree-size") == str(info["head"]["header"]["treeSize"])
    supply = page.locator(".stat", has=page.locator("#supply")).inner_text()
    assert _units(supply) == int(info["supply"])
    page.screenshot(path=str(shots / "head.png"), full_page=True)

    # The newest block that holds transactions.
    block = next(
        b
        for b in api(env, f"/blocks?from={max(0, info['head']['header']['height'] - 20)}")["blocks"][::-1]
        if b["header"]["txCount"] > 0
    )
    height = block["header"]["height"]
    page.click(f"table.blocks a[href='/explorer/blocks/{height}']")
    page.wait_for_url(f"**/explorer/blocks/{height}")
    assert "✔ Signature and contents check" in page.inner_text("#block-check")
    shown = page.inner_text("#header")
    assert block["hash"] in shown and block["header"]["merkleRoot"] in shown and block["signature"] in shown
    listed = page.eval_on_selector_all(
        "table.txs tbody a[href^='/explorer/tx/']", "els => els.map(e => e.getAttribute('href'))"
    )
    expected = [f"/explorer/tx/{t['txId']}" for t in api(env, f"/blocks/{height}")["transactions"]]
    assert listed == expected
    page.screenshot(path=str(shots / "block.png"), full_page=True)

    # A settle of that block: its story and its proof.
    settle = next(t for t in api(env, f"/blocks/{height}")["transactions"] if t["transaction"]["kind"] == "settle")
    page.click(f"table.txs a[href='/explorer/tx/{settle['txId']}']")
    page.wait_for_url(f"**/explorer/tx/{settle['txId']}")
    assert page.inner_text("#tx-id") == settle["txId"]
    proof = api(env, f"/transactions/{settle['txId']}")["inclusionProof"]
    words = page.inner_text("#proof")
    assert "✔ Verified" in words and proof["leafHash"] in words and proof["block"]["hash"] in words
    assert _units(page.inner_text("#tx-amount")) == int(settle["transaction"]["message"]["amount"])
    story = page.inner_text("#story").lower()
    assert "held" in story and "settled" in story and "captured for the payee" in story
    page.screenshot(path=str(shots / "transaction.png"), full_page=True)

    # Its payer.
    page.click(f"#tx-facts a[href='/explorer/accounts/{env.alice.address}']")
    page.wait_for_url(f"**/explorer/accounts/{env.alice.address}")
    account = api(env, f"/accounts/{env.alice.address}")
    assert page.inner_text("#address") == env.alice.address
    assert _units(page.locator(".stat", has=page.locator("#available")).inner_text()) == int(account["available"])
    assert _units(page.locator(".stat", has=page.locator("#held")).inner_text()) == int(account["held"])
    assert page.locator("svg rect.bar").count() == 24
    page.screenshot(path=str(shots / "account.png"), full_page=True)


def test_search_takes_an_address_a_transaction_a_height_and_says_not_found(env: GatewayEnv, page: Any) -> None:
    entry = api(env, f"/accounts/{env.alice.address}/history?limit=1")["entries"][0]
    page.goto(env.url + "/explorer/")
    for query, where in [
        (env.alice.address.lower(), f"/explorer/accounts/{env.alice.address}"),
        (entry["txId"], f"/explorer/tx/{entry['txId']}"),
        ("1", "/explorer/blocks/1"),
    ]:
        page.fill("input[name=q]", query)
        with page.expect_navigation():
            page.click("form.search button")
        assert page.url.endswith(where), (query, page.url)
    page.fill("input[name=q]", "<b>nothing</b> like this")
    with page.expect_response(lambda r: "/explorer/search" in r.url) as answer:
        page.click("form.search button")
    assert answer.value.status == 404
    assert "Not found" in page.inner_text("h1")
    assert page.inner_text("code.query") == "<b>nothing</b> like this"  # shown as text, not as markup
    assert page.locator("main b").count() == 0


def test_paging_through_the_history_shows_every_transaction_once(env: GatewayEnv, page: Any) -> None:
    every = [e["txId"] for e in api(env, f"/accounts/{env.alice.address}/history?limit=1000")["entries"]]
    page.goto(env.url + f"/explorer/accounts/{env.alice.address}?limit=5")
    seen: list[str] = []
    while True:
        hrefs = page.eval_on_selector_all(
            "table.txs tbody tr td:nth-child(2) a", "els => els.map(e => e.getAttribute('href'))"
        )
        seen += [h.rsplit("/", 1)[1] for h in hrefs]
        older = page.locator("a.older")
        if older.count() == 0:
            break
        with page.expect_navigation():
            older.click()
    assert seen == every and len(every) > 10


def test_the_csv_download_matches_the_ledger_api(env: GatewayEnv, page: Any, tmp_path: Path) -> None:
    page.goto(env.url + f"/explorer/accounts/{env.alice.address}")
    with page.expect_download() as download:
        page.click("#download-csv")
    saved = tmp_path / "history.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    entries = api(env, f"/accounts/{env.alice.address}/history?limit=1000")["entries"]
    assert [(r["tx_id"], r["seq"], r["kind"]) for r in rows] == [
        (e["txId"], str(e["seq"]), e["transaction"]["kind"]) for e in entries
    ]
    assert all(r["block_height"] == str(e["blockHeight"]) for r, e in zip(rows, entries, strict=True))
    total = sum(int(r["available_change_base_units"]) for r in rows)
    assert total == int(api(env, f"/accounts/{env.alice.address}")["available"])


def test_api_keys_and_routes_pages_match_the_ledger(env: GatewayEnv, page: Any) -> None:
    keys = api(env, f"/accounts/{env.alice.address}/api-keys")["apiKeys"]
    page.goto(env.url + f"/explorer/accounts/{env.alice.address}")
    with page.expect_navigation():
        page.click("text=API keys")
    table = page.inner_text("table.keys")
    for key in keys:
        assert key["prefix"] in table and f"{int(key['spent']):,} base units" in table

    page.goto(env.url + "/explorer/routes")
    rows = page.eval_on_selector_all(
        "#route-table tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.innerText.replace(/\\s+/g, ' ')))"
    )
    by_route = {cells[0]: cells for cells in rows}
    # The flat routes share their terms (1000 authorized): 4 x402 payments and 2 API-key calls.
    flat = by_route["/v1/flat, /v1/flat2, /v1/dead"]
    assert flat[2] == "6" and flat[3].endswith("6,000 base units"), flat
    # The metered embeddings: 4 calls, settled at their metered costs.
    history = api(env, f"/accounts/{env.alice.address}/history?limit=1000")["entries"]
    embed_holds = {
        t["txId"]
        for t in history
        if t["transaction"]["kind"] == "hold" and t["transaction"]["message"]["value"] == "10000"
    }
    revenue = sum(
        int(t["transaction"]["message"]["amount"])
        for t in history
        if t["transaction"]["kind"] == "settle" and t["transaction"]["message"]["holdId"] in embed_holds
    )
    embed = by_route["/v1/embeddings"]
    assert embed[2] == "4" and embed[3].endswith(f"{revenue:,} base units"), (embed, revenue)
    assert page.locator("svg rect.bar").count() >= 4

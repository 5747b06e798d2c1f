"""Peers: inferpay beside what people run today, on the same upstream, load generator and
client counts as P1, measured side by side in each round (``bench.sidebyside``).

- **LiteLLM proxy** (``bench.litellm_peer``), unpaid, its master key on every call, on the
  metered route's request (``POST /v1/embeddings``, the same body) against the paid gateway on
  that route: ``paid_vs_litellm_throughput`` and, with one client,
  ``added_latency_vs_litellm_ms``. Whether its per-key budgets can run here is probed
  (``budgets_probe``) and said in the report.
- **The official x402 Flask middleware** (``bench.x402_shop``), selling the flat route for the
  gateway's price and paying through ``inferpay facilitator`` (its own home and ledger, the
  gateway's workers and threads), against the paid gateway on that route:
  ``gateway_vs_x402_middleware_throughput``. Each x402 payment is an EIP-3009 authorization
  signed before the timed region, as the SDK's exact client would send it.

The gateway, pass-through and upstream are P1's (``bench.p1_gateway.environment``).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import litellm_peer, loadgen, sidebyside
from bench.common import new_ledger
from bench.p1_gateway import ROUTES, THREADS, WORKERS, _wait_quiet, environment, offered_terms
from bench.servers import Server, free_port
from gateway.server.home import Home
from gateway.wire.x402 import PAYMENT_SIGNATURE_HEADER, decode_header, encode_header
from ledger.storage.sqlite import SQLiteStore
from ledger.types import ChainInfo
from wallets.wallet import Wallet

PAYERS = 16
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"


# ---- the x402 side: inferpay's facilitator and the official middleware in front of the upstream ----


def start_facilitator(out: Path, payers: int) -> tuple[Server, Any, Home]:
    """``inferpay facilitator`` on a home and ledger of its own, with funded payers."""
    home = Home(out / "facilitator-home")
    home.ensure()
    home.create_sealer_key()
    fixture = new_ledger(home.ledger_path, payers, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    fixture.ledger.store.close()
    # The facilitator reports its operator's address (config pay_to defaults to the wallet "operator").
    home.wallets.import_private_key("operator", fixture.operator.private_key_bytes(), secrets.token_hex(16))
    port = free_port()
    config = out / "facilitator.toml"
    config.write_text(f'[facilitator]\nhost = "127.0.0.1"\nport = {port}\nworkers = {WORKERS}\nthreads = {THREADS}\n')
    argv = [sys.executable, "-m", "inferpay_cli", "--home", str(home.path), "facilitator", "--config", str(config)]
    server = Server("facilitator", argv, port, out / "facilitator.log").wait_ready()
    return server, fixture, home


def start_shop(out: Path, upstream: Server, facilitator: Server, chain: ChainInfo, pay_to: str, amount: int) -> Server:
    with urllib.request.urlopen(facilitator.url + "/facilitator/supported", timeout=10) as answer:
        import json

        network = json.loads(answer.read())["kinds"][0]["network"]
    port = free_port()
    argv = [sys.executable, "-m", "bench.x402_shop", "--port", str(port), "--upstream", upstream.url]
    argv += ["--facilitator", facilitator.url + "/facilitator", "--network", network, "--asset", chain.token_address]
    argv += ["--pay-to", pay_to, "--amount", str(amount), "--token-name", chain.name]
    argv += ["--token-version", chain.version, "--workers", str(WORKERS), "--threads", str(THREADS)]
    return Server("x402_shop", argv, port, out / "x402_shop.log").wait_ready()


def shop_offer(shop: Server, path: str) -> dict[str, Any]:
    """The middleware's 402 (PAYMENT-REQUIRED, decoded), as the SDK's client reads it."""
    request = urllib.request.Request(
        shop.url + path, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code != 402:
            raise
        offer: dict[str, Any] = decode_header(exc.headers["PAYMENT-REQUIRED"])
        return offer
    raise RuntimeError(f"the x402 shop answered {path} without payment")


def _sign_x402(args: tuple[list[bytes], dict[str, Any], dict[str, Any] | None, dict[str, Any], int, int]) -> list[str]:
    """The v2 payload the SDK's exact EVM client sends: ``accepted`` = the offered terms verbatim."""
    keys, terms, resource, chain_dict, count, offset = args
    chain = ChainInfo.from_dict(chain_dict)
    wallets = [Wallet.from_private_key(f"payer{i}", k) for i, k in enumerate(keys)]
    headers = []
    for i in range(count):
        wallet = wallets[(offset + i) % len(wallets)]
        auth, signature = wallet.authorize_transfer(chain, terms["payTo"], int(terms["amount"]), ttl_seconds=1800)
        payload: dict[str, Any] = {
            "x402Version": 2,
            "accepted": terms,
            "payload": {"authorization": auth.to_dict(), "signature": signature},
        }
        if resource is not None:
            payload["resource"] = resource
        headers.append(encode_header(payload))
    return headers


def sign_x402_payments(payers: list[Wallet], offer: dict[str, Any], chain: ChainInfo, count: int) -> list[str]:
    keys = [w.private_key_bytes() for w in payers]
    terms, resource = offer["accepts"][0], offer.get("resource")
    jobs = [(keys, terms, resource, chain.to_dict(), min(1000, count - s), s) for s in range(0, count, 1000)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        return [h for part in pool.map(_sign_x402, jobs) for h in part]


# ---- the phase ----


def run(out: Path, settings: sidebyside.Settings, log: Any = print, database: str | None = None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    flat_path, _, flat_body = ROUTES["flat"]
    metered_path, _, metered_body = ROUTES["metered"]
    with environment(out / "p1", PAYERS) as env:
        servers = env.servers
        upstream = servers["upstream"]
        extra: list[Server] = []
        try:
            log("  starting LiteLLM, the facilitator and the x402 shop ...")
            litellm = litellm_peer.start(out, upstream.url, WORKERS)
            extra.append(litellm)
            facilitator, fac_fixture, fac_home = start_facilitator(out, PAYERS)
            extra.append(facilitator)
            flat_terms = offered_terms(env.gateway, flat_path)
            shop = start_shop(
                out, upstream, facilitator, fac_fixture.chain, fac_fixture.operator.address, int(flat_terms["amount"])
            )
            extra.append(shop)
            servers = {**servers, "litellm": litellm, "facilitator": facilitator, "x402_shop": shop}
            metered_terms = offered_terms(env.gateway, metered_path)
            offer = shop_offer(shop, flat_path)
            gateway_store = SQLiteStore(env.home.ledger_path)
            facilitator_store = SQLiteStore(fac_home.ledger_path)
            litellm_request = loadgen.build_request(
                "POST", metered_path, litellm.port, metered_body, {"Authorization": f"Bearer {litellm_peer.MASTER_KEY}"}
            )
            targets = [
                sidebyside.Target("litellm_metered", litellm, sidebyside.cycled(litellm_request), cycle=True),
                sidebyside.Target(
                    "inferpay_paid_metered",
                    env.gateway,
                    lambda n: env.paid_requests(metered_path, metered_body, metered_terms, n),
                    cycle=False,
                    after=lambda: _wait_quiet(gateway_store),
                ),
                sidebyside.Target(
                    "x402_middleware_flat",
                    shop,
                    lambda n: [
                        loadgen.build_request("POST", flat_path, shop.port, flat_body, {PAYMENT_SIGNATURE_HEADER: h})
                        for h in sign_x402_payments(fac_fixture.payers, offer, fac_fixture.chain, n)
                    ],
                    cycle=False,
                    after=lambda: _wait_quiet(facilitator_store),
                ),
                sidebyside.Target(
                    "inferpay_paid_flat",
                    env.gateway,
                    lambda n: env.paid_requests(flat_path, flat_body, flat_terms, n),
                    cycle=False,
                    after=lambda: _wait_quiet(gateway_store),
                ),
            ]
            raw = sidebyside.run_rounds(targets, servers, settings, log, "peers")
            single = sidebyside.single_client(targets, servers, settings, log, "peers")
            gateway_store.close()
            facilitator_store.close()
        finally:
            for server in reversed(extra):
                server.stop()
        log("  probing LiteLLM's per-key budgets (its database layer) ...")
        budgets = litellm_peer.budgets_probe(out, upstream.url, _litellm_database(database or DEFAULT_DATABASE))
        log(f"    budgets run here: {budgets['runs']} ({budgets['reason'][:160]})")

    pooled = sidebyside.pooled(raw)
    litellm_vs = sidebyside.ratio_of_rounds(raw, "inferpay_paid_metered", "litellm_metered")
    x402_vs = sidebyside.ratio_of_rounds(raw, "inferpay_paid_flat", "x402_middleware_flat")
    added = round(
        single["inferpay_paid_metered"]["latency"]["p50_ms"] - single["litellm_metered"]["latency"]["p50_ms"], 3
    )
    return {
        "settings": settings.__dict__,
        "servers": {
            "litellm": f"LiteLLM {litellm_peer.version()} proxy (its CLI, uvicorn, {WORKERS} workers), master key,"
            " upstream as an openai/ model; no database",
            "x402_middleware": f"x402 {_x402_version()} PaymentMiddleware (Flask, sync facilitator client) under"
            f" gunicorn {WORKERS}x{THREADS}, settling through `inferpay facilitator` ({WORKERS}x{THREADS}, own ledger)",
            "inferpay": f"inferpay gateway, gunicorn {WORKERS}x{THREADS} (P1's)",
        },
        "scenarios": {name: sidebyside.brief(s) for name, s in pooled.items()},
        "rounds": {name: [{k: v for k, v in r.items() if k != "_latencies"} for r in rs] for name, rs in raw.items()},
        "single_client": {name: sidebyside.brief(s) for name, s in single.items()},
        "paid_vs_litellm_throughput": litellm_vs["median"],
        "paid_vs_litellm_per_round": litellm_vs["per_round"],
        "added_latency_vs_litellm_ms": added,
        "gateway_vs_x402_middleware_throughput": x402_vs["median"],
        "gateway_vs_x402_per_round": x402_vs["per_round"],
        "litellm_budgets": budgets,
    }


def _litellm_database(url: str) -> str:
    """Prisma's URL for a throwaway schema of the benchmark's PostgreSQL database."""
    return url + ("&" if "?" in url else "?") + "schema=litellm_bench"


def _x402_version() -> str:
    from importlib.metadata import version

    return version("x402")


if __name__ == "__main__":
    import json

    from bench.common import OUT

    print(json.dumps(run(OUT / "peers", sidebyside.QUICK), indent=2)[:6000])

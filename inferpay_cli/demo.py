"""``inferpay demo``: the whole product in one command, against a real model.

A throwaway home; an operator, alice (funded) and bob (nearly broke); the all-MiniLM-L6-v2
model server and a 2-worker gateway as real processes on free local ports; then real paid
calls: flat and per-token embeddings, one through an API key with the official openai client,
one refused for lack of funds, one whose upstream is down (not charged). It ends with the
balances, a receipt proven against a sealer-signed block, alice's history and a full verify,
locally and over HTTP. Everything is removed afterwards unless --keep.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import requests

DEMO_PASSWORD = "demo-password"  # a throwaway home: the demo's wallets hold no real value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"{url} exited early; log:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise click.ClickException(f"{url} did not come up within {seconds:.0f} s; see {log}")


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's home directory (and print where it is).")
@click.option(
    "--stay/--no-stay",
    default=None,
    help="Keep the gateway serving afterwards (explorer, ledger API) until Ctrl-C (default: when run from a terminal).",
)
def demo(keep: bool, stay: bool | None) -> None:
    """Run the whole product once: model server, gateway, paid calls, receipts, verify; then
    print the explorer's URL (and, from a terminal, keep serving it until Ctrl-C)."""
    home = Path(tempfile.mkdtemp(prefix="inferpay-demo-"))
    env = {
        **os.environ,
        "INFERPAY_HOME": str(home),
        "INFERPAY_PASSWORD": DEMO_PASSWORD,
        "INFERPAY_SCRYPT_N": os.environ.get("INFERPAY_SCRYPT_N", "16384"),
        "HF_HUB_OFFLINE": "1",
    }
    os.environ.update({k: env[k] for k in ("INFERPAY_HOME", "INFERPAY_SCRYPT_N", "HF_HUB_OFFLINE")})
    try:
        _run(home, env, stay if stay is not None else sys.stdin.isatty() and sys.stdout.isatty())
    finally:
        if keep:
            click.echo(f"\nkept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _run(home: Path, env: dict[str, str], stay: bool) -> None:
    import wallets
    from gateway.client import HttpxPaymentAuth, PaymentAuth, receipt_of, verify_receipt_inclusion
    from gateway.server.api_keys import register_key
    from gateway.server.home import Home
    from ledger.amounts import format_amount, parse_amount
    from ledger.audit import audit

    cli = [sys.executable, "-m", "inferpay_cli"]
    say(f"setting up a ledger in {home}")
    subprocess.run([*cli, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    for name in ("alice", "bob"):
        subprocess.run([*cli, "wallet", "create", name], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*cli, "mint", "alice", "1"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*cli, "mint", "bob", "0.0005"], env=env, check=True, stdout=subprocess.DEVNULL)
    data = Home(home)
    alice = wallets.load("alice", password=DEMO_PASSWORD, home=home)
    bob = wallets.load("bob", password=DEMO_PASSWORD, home=home)
    click.echo(f"alice {alice.address}: 1 token;  bob {bob.address}: 0.0005 tokens")

    model_port, gateway_port, dead_port = free_port(), free_port(), free_port()
    config = home / "gateway.toml"
    config.write_text(f"""
[gateway]
port = {gateway_port}
pay_to = "operator"
workers = 2

[[routes]]
path = "/v1/embeddings"
upstream = "http://127.0.0.1:{model_port}/v1/embeddings"
price = "0.001"

[[routes]]
path = "/v1/metered/embeddings"
upstream = "http://127.0.0.1:{model_port}/v1/embeddings"
price = "0.0001"
price_per_1k_input_tokens = "0.05"
max_amount = "0.01"

[[routes]]
path = "/v1/broken/embeddings"
upstream = "http://127.0.0.1:{dead_port}/v1/embeddings"
price = "0.001"
""")
    base = f"http://127.0.0.1:{gateway_port}"
    say("starting the model server (all-MiniLM-L6-v2) and the gateway (2 workers)")
    with (
        process([*cli, "model-server", "--port", str(model_port)], home / "model.log", env) as model,
        process([*cli, "gateway", "--config", str(config)], home / "gateway.log", env) as gateway,
    ):
        wait_ready(f"http://127.0.0.1:{model_port}/health", model, home / "model.log")
        wait_ready(f"{base}/health", gateway, home / "gateway.log")
        click.echo(f"gateway at {base}, model at http://127.0.0.1:{model_port}")
        body = {"model": "all-MiniLM-L6-v2", "input": ["paying per inference", "one signed payment per call"]}

        say("1. alice pays a flat-priced call (x402 'exact', signed EIP-3009 payment)")
        unpaid = requests.post(f"{base}/v1/embeddings", json=body, timeout=30)
        click.echo(
            f"without payment: {unpaid.status_code}, PAYMENT-REQUIRED offers "
            f"{unpaid.json()['accepts'][0]['amount']} base units"
        )
        response = requests.post(f"{base}/v1/embeddings", json=body, auth=PaymentAuth(alice), timeout=120)
        receipt = receipt_of(response)
        assert receipt is not None
        vectors = response.json()["data"]
        click.echo(
            f"paid: {response.status_code}, {len(vectors)} embeddings of {len(vectors[0]['embedding'])} dims, "
            f"charged {format_amount(receipt.charged)}, overhead {response.headers['X-Inferpay-Overhead-Ms']} ms"
        )
        first_receipt = receipt

        say("2. alice pays a metered call (x402 'upto': hold the max, capture the real token cost)")
        import httpx

        with httpx.Client(auth=HttpxPaymentAuth(alice), timeout=120) as client:
            metered = client.post(f"{base}/v1/metered/embeddings", json=body)
        metered_receipt = receipt_of(metered)
        assert metered_receipt is not None
        tokens = metered.json()["usage"]["prompt_tokens"]
        click.echo(
            f"{tokens} prompt tokens: charged {format_amount(metered_receipt.charged)} of "
            f"{format_amount(metered_receipt.authorized)} authorized"
        )

        say("3. an API key for alice (cap 0.01, 1 h), used by the official openai client")
        import secrets

        from ledger.ledger import Ledger
        from ledger.types import Allowance

        ledger = Ledger(data.open_store(), sealer=data.sealer())
        allowance = Allowance(
            alice.address,
            ledger.chain.operator,
            parse_amount("0.01"),
            ledger.now_s() + 3600,
            "0x" + secrets.token_hex(32),
        )
        api_key, _ = register_key(ledger, allowance, alice.sign(ledger.chain, allowance), "demo")
        try:
            import openai

            embedded = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key).embeddings.create(
                model="all-MiniLM-L6-v2", input="hello from the openai client"
            )
            click.echo(f"openai client: {len(embedded.data[0].embedding)} dims, {embedded.usage.prompt_tokens} tokens")
        except ImportError:
            keyed = requests.post(f"{base}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {api_key}"})
            click.echo(f"(openai not installed) bearer call: {keyed.status_code}")

        say("4. bob cannot afford a call: refused, nothing charged")
        try:
            requests.post(f"{base}/v1/embeddings", json=body, auth=PaymentAuth(bob), timeout=30)
        except Exception as exc:  # the SDK raises the gateway's own error class
            click.echo(f"refused: {getattr(exc, 'code', type(exc).__name__)}: {exc}")

        say("5. the upstream of a route is down: 502, the hold is voided, nothing charged")
        before = ledger.balance(alice.address).available
        try:
            requests.post(f"{base}/v1/broken/embeddings", json=body, auth=PaymentAuth(alice), timeout=30)
        except Exception as exc:
            click.echo(f"failed: {getattr(exc, 'code', type(exc).__name__)}: {exc}")
        click.echo(f"alice's balance unchanged: {ledger.balance(alice.address).available == before}")

        say("balances")
        for name, address in (("alice", alice.address), ("bob", bob.address), ("operator", ledger.chain.operator)):
            account = ledger.balance(address)
            click.echo(f"{name:<9} {format_amount(account.available):>10}  held {format_amount(account.held)}")

        say("the first receipt, proven against a sealer-signed block")
        block = verify_receipt_inclusion(f"{base}/ledger", first_receipt, ledger.chain)
        click.echo(
            f"tx {first_receipt.tx_id} is in block {block.header.height} ({block.block_hash}); "
            "Merkle path and sealer signature check out"
        )

        say("alice's history")
        subprocess.run([*cli, "history", "alice"], env=env, check=True)

        say("verify: the whole chain replayed from genesis, locally and through the gateway's API")
        ledger.seal_all()
        report = audit(ledger.store)
        click.echo(
            f"local:  {'valid' if report.ok else 'INVALID'}: {report.blocks} blocks, {report.transactions} transactions"
        )
        subprocess.run([*cli, "verify", "--node", base], env=env, check=True)

        say("see it in the browser")
        click.echo(f"explorer: {base}/explorer/  (the calls above, their receipts, proofs and balances)")
        click.echo(f"ledger:   {base}/ledger/info   metrics: {base}/metrics")
        if stay:
            click.echo("serving until Ctrl-C ...")
            try:
                while gateway.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                click.echo("")

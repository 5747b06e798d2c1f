"""A gateway in front of a compute pool, for the pool's integration tests.

``POOL_CONFIG``: the ``[pool]`` table (quick health intervals) and a ``pool = true`` chat route,
appended to the standard test gateway (``tests.support.gateway.start_gateway_env``).
``PoolProviders``: provider wallets made with the CLI, registrations they sign and send to the
gateway's ledger API (``POST /ledger/providers``) as a provider would, and the operator's
approvals and fee, recorded with the operator's sealer key (the gateway's own home).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from gateway.client.ledger_api import LedgerApiClient
from gateway.server.home import Home
from ledger.ledger import Ledger
from ledger.storage.sqlite import SQLiteStore
from ledger.types import ProviderRegistration
from tests.support.gateway import GatewayEnv
from wallets.wallet import Wallet

POOL_CHAT = "/v1/pool/chat/completions"
POOL_MODEL = "fake-echo-chat"  # the fake chat upstream's model name
HEALTH_INTERVAL_MS = 200
RECOVERY_INTERVAL_MS = 400
FAILURE_THRESHOLD = 2
POOL_CONFIG = f"""
[pool]
accept = "listed"
health_interval_ms = {HEALTH_INTERVAL_MS}
probe_timeout_ms = 1500
connect_timeout_ms = 1000
failure_threshold = {FAILURE_THRESHOLD}
recovery_interval_ms = {RECOVERY_INTERVAL_MS}

[[routes]]
path = "{POOL_CHAT}"
pool = true
provider_path = "/chat/completions"
max_output_tokens = 64
description = "chat, served by the compute pool"
"""


@dataclass
class PoolProviders:
    env: GatewayEnv
    registrations: dict[str, str] = field(default_factory=dict)  # wallet name -> registration tx id

    @property
    def api(self) -> LedgerApiClient:
        return LedgerApiClient(self.env.ledger_url)

    def operator_ledger(self) -> Ledger:
        """The operator's own ledger handle (with the sealer key), for approvals and the fee."""
        home = Home(self.env.home)
        return Ledger(SQLiteStore(self.env.home / "ledger.db"), sealer=home.sealer())

    def register(
        self,
        name: str,
        endpoint: str,
        *,
        per_call: int,
        per_1k_in: int = 0,
        per_1k_out: int = 0,
        models: tuple[str, ...] = (POOL_MODEL,),
        status: str = "active",
        approve: bool = True,
    ) -> Wallet:
        wallet = self.env.wallets.get(name) or self.env.new_wallet(name)
        reg = ProviderRegistration(
            provider=wallet.address,
            endpoint=endpoint,
            models=models,
            price_per_call=per_call,
            price_per_1k_input=per_1k_in,
            price_per_1k_output=per_1k_out,
            capacity=0,
            status=status,  # type: ignore[arg-type]
            nonce="0x" + secrets.token_hex(32),
        )
        answer = self.api.register_provider(reg, wallet.sign(self.env.chain, reg))
        self.registrations[name] = answer["txId"]
        if approve and status == "active":
            ledger = self.operator_ledger()
            try:
                ledger.approve_provider(wallet.address, True)
            finally:
                ledger.store.close()
        return wallet

    def set_fee(self, fee_bps: int, flat_fee: int) -> None:
        ledger = self.operator_ledger()
        try:
            ledger.set_pool_fee(fee_bps, flat_fee)
        finally:
            ledger.store.close()

    def pool_info(self) -> dict[str, Any]:
        answer = requests.get(self.env.url + "/pool", timeout=10)
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def routable(self) -> set[str]:
        return {p["address"] for p in self.pool_info()["providers"] if p["routable"]}

    def routable_everywhere(self, predicate: Callable[[set[str]], bool], reads: int = 12) -> bool:
        """``predicate`` holds for ``reads`` answers of GET /pool in a row: each worker keeps its
        own breakers, and one answer comes from one worker."""
        return all(predicate(self.routable()) for _ in range(reads))


def chat(words: int = 5, **extra: Any) -> dict[str, Any]:
    return {"model": POOL_MODEL, "messages": [{"role": "user", "content": " ".join(["word"] * words)}], **extra}

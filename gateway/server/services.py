"""What one gateway worker shares across requests: the ledger, the sealer key, the payee,
the pooled upstream client, the auto-sealer, the metrics and the rate limiter. Built once per
app by ``create_app`` and kept on ``app.extensions``; there is no module-level state.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from gateway.server.config import GatewayConfig
from gateway.server.home import Home
from gateway.server.metrics import Metrics
from gateway.server.rate_limits import FILE_NAME as RATE_LIMITS_FILE
from gateway.server.rate_limits import RateLimiter
from gateway.server.upstream import Upstream
from ledger import is_postgres_url
from ledger.crypto import KeySigner
from ledger.ledger import Ledger
from ledger.sealer import AutoSealer
from ledger.types import Address

EXTENSION = "inferpay"


@dataclass
class Services:
    config: GatewayConfig
    home: Home
    ledger: Ledger
    sealer: KeySigner
    pay_to: Address
    upstream: Upstream
    auto_sealer: AutoSealer | None
    metrics: Metrics
    rate_limiter: RateLimiter

    @classmethod
    def build(cls, config: GatewayConfig, *, start_sealer: bool = True) -> Services:
        home = Home(config.home, database=config.database)  # the ledger: config.database or ledger.db
        sealer = home.sealer()
        ledger = Ledger(home.open_store(), sealer=sealer, group_commit=True)
        pay_to = home.wallets.resolve(config.pay_to)
        # One sealer per host: the workers elect one through a lock file in the home.
        auto = AutoSealer(
            ledger,
            interval_ms=config.seal_interval_ms,
            max_txs=config.seal_max_txs,
            lock_path=home.path / "auto-sealer.lock",
        )
        return cls(
            config=config,
            home=home,
            ledger=ledger,
            sealer=sealer,
            pay_to=pay_to,
            upstream=Upstream(config.upstream_timeout_seconds, max_connections=max(16, config.threads * 2)),
            auto_sealer=auto.start() if start_sealer else None,
            metrics=Metrics.build(),
            rate_limiter=RateLimiter(
                config.database
                if config.database and is_postgres_url(config.database)
                else home.path / RATE_LIMITS_FILE,
                config.rate_limits,
                clock_s=ledger.now_s,
            ),
        )

    def close(self) -> None:
        """Stop the auto-sealer (releasing its lock file), close the upstream pool and the store."""
        if self.auto_sealer is not None:
            self.auto_sealer.stop()
        self.upstream.close()
        self.rate_limiter.close()
        self.ledger.store.close()


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found

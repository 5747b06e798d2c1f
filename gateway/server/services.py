"""What one gateway worker shares across requests: the ledger, the sealer key, the payee,
the pooled upstream client, the auto-sealer, the metrics and the rate limiter. Built once per
app by ``create_app`` and kept on ``app.extensions``; there is no module-level state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from flask import current_app

from gateway.server.checkpoints import STATUS_FILE, CheckpointPublisher
from gateway.server.config import GatewayConfig
from gateway.server.home import Home
from gateway.server.metrics import Metrics
from gateway.server.pool.runtime import PoolRuntime
from gateway.server.rate_limits import FILE_NAME as RATE_LIMITS_FILE
from gateway.server.rate_limits import RateLimiter
from gateway.server.upstream import Upstream
from ledger import is_postgres_url
from ledger.crypto import KeySigner
from ledger.errors import StorageUnavailable
from ledger.ledger import Ledger
from ledger.sealer import AutoSealer
from ledger.tlog.note import NoteSigner
from ledger.transparency import TransparencyLog
from ledger.types import Address

log = logging.getLogger(__name__)

EXTENSION = "inferpay"


class LedgerReads(Protocol):
    """What the read-only blueprints (the ledger API, the tlog API) use: a gateway's
    ``Services`` is one; so is a mirror's, which has the log's vkey but never its key."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def transparency(self) -> TransparencyLog: ...

    @property
    def checkpoint_signer(self) -> NoteSigner | None: ...

    @property
    def checkpoint_vkey(self) -> str | None: ...


@dataclass
class Services:
    config: GatewayConfig
    home: Home
    ledger: Ledger
    sealer: KeySigner
    pay_to: Address
    upstream: Upstream
    auto_sealer: AutoSealer | None
    transparency: TransparencyLog
    checkpoint_signer: NoteSigner | None  # None: a ledger made before checkpoints
    publisher: CheckpointPublisher | None  # set in every process; only the elected one ticks it
    metrics: Metrics
    rate_limiter: RateLimiter
    pool: PoolRuntime | None = None  # set when a route has ``pool = true`` (gateway.server.pool)

    @classmethod
    def build(cls, config: GatewayConfig, *, start_sealer: bool = True) -> Services:
        home = Home(config.home, database=config.database)  # the ledger: config.database or ledger.db
        sealer = home.sealer()
        ledger = Ledger(home.open_store(), sealer=sealer, group_commit=True)
        pay_to = home.wallets.resolve(config.pay_to)
        metrics = Metrics.build()
        checkpoint_signer = home.checkpoint_signer()
        publisher = None
        if checkpoint_signer is not None and start_sealer:
            publisher = CheckpointPublisher(
                ledger,
                checkpoint_signer,
                list(config.checkpoints.witnesses),
                interval_ms=config.checkpoints.interval_ms,
                timeout_s=config.checkpoints.witness_timeout_ms / 1000,
                on_push=metrics.witness_push,
                status_path=home.path / STATUS_FILE,
            )
        # One sealer per host: the workers elect one through a lock file in the home; it also
        # publishes the checkpoints.
        auto = AutoSealer(
            ledger,
            interval_ms=config.seal_interval_ms,
            max_txs=config.seal_max_txs,
            lock_path=home.path / "auto-sealer.lock",
            after_tick=publisher.tick if publisher is not None else None,
        )
        return cls(
            config=config,
            home=home,
            ledger=ledger,
            sealer=sealer,
            pay_to=pay_to,
            upstream=Upstream(config.upstream_timeout_seconds, max_connections=max(16, config.threads * 2)),
            auto_sealer=auto.start() if start_sealer else None,
            transparency=TransparencyLog(ledger.store),
            checkpoint_signer=checkpoint_signer,
            publisher=publisher,
            metrics=metrics,
            pool=(
                PoolRuntime.build(config, ledger, home.path, start=start_sealer)
                if any(r.pool for r in config.routes)
                else None
            ),
            rate_limiter=RateLimiter(
                config.database
                if config.database and is_postgres_url(config.database)
                else home.path / RATE_LIMITS_FILE,
                config.rate_limits,
                clock_s=ledger.now_s,
            ),
        )

    @property
    def checkpoint_vkey(self) -> str | None:
        return self.checkpoint_signer.vkey if self.checkpoint_signer is not None else None

    def balance_after_settle(self, payer: Address) -> int | None:
        """The payer's available balance for the receipt of a charge that has committed, or None
        when the storage cannot say just now: the charge stands, so the call must still be
        answered as served (its receipt without ``balanceAfter``), never refused."""
        try:
            return self.ledger.balance(payer).available
        except StorageUnavailable as exc:
            log.warning("balance of %s unreadable after its charge committed (%s): receipt without it", payer, exc)
            return None

    def close(self) -> None:
        """Stop the auto-sealer (releasing its lock file), close the upstream pool and the store."""
        if self.auto_sealer is not None:
            self.auto_sealer.stop()
        if self.publisher is not None:
            self.publisher.close()
        self.upstream.close()
        if self.pool is not None:
            self.pool.close()
        self.rate_limiter.close()
        self.ledger.store.close()


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found


def ledger_reads() -> LedgerReads:
    """The app's services as the read-only blueprints see them (a gateway's or a mirror's)."""
    found: LedgerReads = current_app.extensions[EXTENSION]
    return found

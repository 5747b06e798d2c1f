"""What one worker keeps for the pool: the directory, the health board, the checker and the
client that calls providers (its own pool of connections, with ``[pool]``'s connect timeout,
the gateway's upstream timeout for each read, and ``[pool]``'s bounds on a whole answer).
Built by ``Services.build`` when the config has a ``pool = true`` route; ``close`` stops the
checker and the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.server.config import GatewayConfig, PoolConfig
from gateway.server.pool.checker import SNAPSHOT_FILE, HealthChecker
from gateway.server.pool.directory import ProviderDirectory
from gateway.server.pool.health import HealthBoard
from gateway.server.upstream import Upstream
from ledger.ledger import Ledger


@dataclass
class PoolRuntime:
    directory: ProviderDirectory
    board: HealthBoard
    checker: HealthChecker
    upstream: Upstream
    config: PoolConfig
    started: bool = False

    @classmethod
    def build(cls, config: GatewayConfig, ledger: Ledger, home: Path, *, start: bool) -> PoolRuntime:
        pool = config.pool
        directory = ProviderDirectory(ledger, pool.accept, refresh_ms=pool.health_interval_ms)
        board = HealthBoard(pool.failure_threshold, pool.recovery_interval_ms, pool.health_interval_ms)
        checker = HealthChecker(directory, board, pool, snapshot_path=home / SNAPSHOT_FILE)
        upstream = Upstream(
            config.upstream_timeout_seconds,
            max_connections=max(16, config.threads * 2),
            connect_timeout_seconds=pool.connect_timeout_ms / 1000,
        )
        runtime = cls(directory, board, checker, upstream, pool)
        if start:
            checker.start()
            runtime.started = True
        return runtime

    def close(self) -> None:
        self.checker.close()
        self.upstream.close()

"""How big each phase is: ``quick`` (CI, well under 5 minutes on 2 cores) and ``full``."""

from __future__ import annotations

from dataclasses import dataclass, field

from reliability.bank import LoadSettings
from reliability.facilitator import FacilitatorSettings
from reliability.pgfaults import PgPlan
from reliability.rate_limits import RateLimitSettings


@dataclass(frozen=True)
class Profile:
    bank: LoadSettings
    crash: LoadSettings
    crash_gateway_kills: int
    crash_upstream_kills: int
    clock: LoadSettings
    clock_offsets: list[float] = field(default_factory=list)  # seconds, stepped to in this order
    clock_gateway_kills: int = 0
    attack_rounds: int = 2  # each attack this many times, each with fresh payments
    concurrent_replays: int = 8
    fuzz_examples: int = 20  # per OpenAPI operation and generation mode; per parser x 10
    fuzz_header_examples: int = 100
    tamper_base_txs: int = 1500  # the row-level tamper cases run on the ledger's first N transactions
    tamper_audit_clean_cases: bool = False  # also audit the self-consistent rewrites (each a full replay)
    bank_pg: LoadSettings = LoadSettings(duration=20, clients=12)  # two gateways on one PostgreSQL ledger
    facilitator: FacilitatorSettings = FacilitatorSettings(duration=12, clients=6)  # x402 through /facilitator
    pg_faults: LoadSettings = LoadSettings(duration=20, clients=10)  # PostgreSQL killed and cut off
    tlog_rounds: int = 1  # each lie of a lying source shown to the mirror this many times
    tlog_witness_kills: int = 2  # the witness SIGKILLed mid-storm this many times
    tlog_split_views: int = 1  # a gateway restored from an old backup and fed new payments, this many times
    disk_full: LoadSettings = LoadSettings(duration=15, clients=8)  # the gateway's disk fills up
    disk_fills: int = 2
    disk_size: str = "48m"  # the gateway's tmpfs
    disk_witness_checkpoints: int = 30
    rate_limits: RateLimitSettings = RateLimitSettings(duration=6, clients=8)  # [[rate_limits]], 2 workers
    pg_faults_plan: PgPlan = field(
        default_factory=lambda: PgPlan(gateway_kills=1, postgres_kills=1, drops=1, resets=1, stalls=1)
    )


PROFILES = {
    "quick": Profile(
        bank=LoadSettings(duration=20, clients=12),
        crash=LoadSettings(duration=30, clients=12),
        crash_gateway_kills=4,
        crash_upstream_kills=2,
        clock=LoadSettings(duration=20, clients=8),
        clock_offsets=[-60.0, 25.0, -20.0],
        clock_gateway_kills=1,
        attack_rounds=2,
        concurrent_replays=8,
        fuzz_examples=15,
        fuzz_header_examples=100,
    ),
    "full": Profile(
        bank=LoadSettings(duration=150, clients=24, wallets=6),
        crash=LoadSettings(duration=210, clients=24, wallets=6),
        crash_gateway_kills=14,
        crash_upstream_kills=6,
        clock=LoadSettings(duration=150, clients=16, wallets=6),
        clock_offsets=[-120.0, 40.0, -30.0, 30.0, -600.0, 20.0, -5.0, 40.0],
        clock_gateway_kills=4,
        attack_rounds=10,
        concurrent_replays=16,
        fuzz_examples=60,
        fuzz_header_examples=600,
        tamper_base_txs=6000,
        tamper_audit_clean_cases=True,
        bank_pg=LoadSettings(duration=150, clients=24, wallets=6),
        facilitator=FacilitatorSettings(duration=120, clients=16, wallets=6, initial_funds="0.1"),
        pg_faults=LoadSettings(duration=150, clients=24, wallets=6),
        disk_full=LoadSettings(duration=90, clients=16, wallets=6),
        disk_fills=8,
        disk_size="160m",
        tlog_rounds=2,
        tlog_witness_kills=6,
        tlog_split_views=3,
        disk_witness_checkpoints=150,
        rate_limits=RateLimitSettings(duration=60, clients=16),
        pg_faults_plan=PgPlan(gateway_kills=4, postgres_kills=5, drops=4, resets=4, stalls=4),
    ),
}

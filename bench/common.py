"""Shared pieces of the benchmark: fresh ledgers with funded payers, payments signed ahead of
time (in worker processes, outside every timed region), percentiles, and what was measured
(machine, versions, a digest of the measured source files: the benchmark never runs git)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from ledger.crypto import KeySigner, new_private_key
from ledger.encoding import signing_digest
from ledger.ledger import Ledger
from ledger.storage import is_postgres_url, open_store
from ledger.types import Address, Authorization, ChainInfo, Mint
from wallets.wallet import Wallet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"  # scratch: ledgers, logs, cached chains, quick reports (not committed)
REPORTS = ROOT / "docs" / "performance"  # the full run's generated report, committed with the docs
CHAIN_ID = 4_242_000_001
PAYER_FUNDS = 10**15  # base units; no benchmark run can spend it


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 4),
        "p90_ms": round(percentile(values, 90), 4),
        "p99_ms": round(percentile(values, 99), 4),
        "mean_ms": round(statistics.fmean(values), 4) if values else 0.0,
        "n": len(values),
    }


def random_address() -> Address:
    return Address(to_checksum_address(secrets.token_bytes(20)))


@dataclass
class Fixture:
    """A new ledger with an operator, a sealer and funded payers."""

    path: Path | str  # the SQLite file, or the PostgreSQL URL (naming the run's own schema)
    ledger: Ledger
    operator: Wallet
    sealer_key: bytes
    payers: list[Wallet]

    @property
    def chain(self) -> ChainInfo:
        return self.ledger.chain


def new_ledger(path: Path | str, payers: int, *, sealer_key: bytes | None = None, block_max_txs: int = 1000) -> Fixture:
    """Create a ledger at ``path`` (a SQLite file that must not exist, or a ``postgresql://`` URL
    naming an empty schema) and mint ``PAYER_FUNDS`` to each payer."""
    if not is_postgres_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    operator = Wallet.generate("operator")
    sealer_key = sealer_key or new_private_key()
    ledger = Ledger.create(open_store(path), operator=operator.address, sealer=KeySigner(sealer_key), chain_id=CHAIN_ID)
    ledger.block_max_txs = block_max_txs
    wallets = [Wallet.generate(f"payer{i}") for i in range(payers)]
    for wallet in wallets:
        mint = Mint(wallet.address, PAYER_FUNDS, "0x" + secrets.token_hex(32))
        ledger.mint(mint, operator.sign(ledger.chain, mint))
    ledger.seal_all()
    return Fixture(path, ledger, operator, sealer_key, wallets)


def set_synchronous(ledger: Ledger, mode: str) -> bool:
    """Switch this thread's connection to ``PRAGMA synchronous=mode``. Used only to build
    fixtures faster (never in a measured region); False if the store offers no such handle."""
    db = getattr(ledger.store, "_db", None)
    if db is None:
        return False
    db().execute(f"PRAGMA synchronous={mode}")
    return True


def connection_pragmas(ledger: Ledger) -> dict[str, Any]:
    """journal_mode and synchronous as the ledger's own connection has them (2 = FULL)."""
    db = getattr(ledger.store, "_db", None)
    if db is None:
        return {"journal_mode": "unknown", "synchronous": "unknown"}
    conn = db()
    return {
        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
            conn.execute("PRAGMA synchronous").fetchone()[0], "?"
        ),
    }


# ---- signing ahead of time, in worker processes ----

_WORKER: dict[str, Any] = {}


def _init_signer(keys: list[bytes], recipients: list[str], chain_dict: dict[str, Any]) -> None:
    """Each signing worker gets the keys and recipients once, not with every chunk."""
    _WORKER["signers"] = [KeySigner(k) for k in keys]
    _WORKER["recipients"] = recipients
    _WORKER["chain"] = ChainInfo.from_dict(chain_dict)


def _sign_chunk(args: tuple[int, int, int]) -> list[tuple[dict[str, str], str]]:
    count, value, ttl = args
    signers, recipients, chain = _WORKER["signers"], _WORKER["recipients"], _WORKER["chain"]
    now = int(time.time())
    out = []
    for i in range(count):
        signer = signers[i % len(signers)]
        auth = Authorization(
            signer.address,
            Address(recipients[secrets.randbelow(len(recipients))]),
            value,
            now - 5,
            now + ttl,
            "0x" + secrets.token_hex(32),
        )
        out.append((auth.to_dict(), signer.sign_digest(signing_digest(chain, auth))))
    return out


def signed_transfers(
    chain: ChainInfo,
    payers: Sequence[Wallet],
    recipients: Sequence[str],
    count: int,
    *,
    value: int = 1,
    ttl: int = 3600,
    chunk: int = 2000,
    processes: int | None = None,
) -> Generator[list[tuple[Authorization, str]], None, None]:
    """Chunks of EIP-3009 authorizations (``payers`` round-robin, random recipients, random
    nonces) with their signatures, made by ``processes`` workers as the caller consumes them.
    Keys go to the workers as raw bytes: a Wallet refuses to be pickled, on purpose."""
    keys = [w.private_key_bytes() for w in payers]
    jobs = []
    left = count
    while left > 0:
        n = min(chunk, left)
        jobs.append((n, value, ttl))
        left -= n
    # A bounded window of jobs in flight: signing runs ahead of the consumer, never far ahead.
    from collections import deque

    workers = processes or os.cpu_count() or 2
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_signer, initargs=(keys, list(recipients), chain.to_dict())) as pool:
        pending: deque[Any] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append(pool.apply_async(_sign_chunk, (job,)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            part = pending.popleft().get()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.apply_async(_sign_chunk, (following,)))
            yield [(Authorization.from_dict(a), s) for a, s in part]


def sign_all(*args: Any, **kwargs: Any) -> list[tuple[Authorization, str]]:
    return [item for part in signed_transfers(*args, **kwargs) for item in part]


# ---- provenance ----


def source_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the named source files (relative to the repository), in order."""
    digest = hashlib.sha256()
    for name in paths:
        file = ROOT / name
        digest.update(name.encode() + b"\0")
        digest.update(file.read_bytes() if file.exists() else b"<missing>")
    return digest.hexdigest()[:16]


def measured_sources() -> dict[str, str]:
    groups = {
        "ledger": sorted((ROOT / "ledger").glob("*.py")),
        "gateway": sorted((ROOT / "gateway").glob("*.py")),
        "wallets": sorted((ROOT / "wallets").glob("*.py")),
    }
    return {name: source_digest([str(p.relative_to(ROOT)) for p in files]) for name, files in groups.items()}


def machine() -> dict[str, Any]:
    def cpu_model() -> str:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor()

    import coincurve

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "coincurve": getattr(coincurve, "__version__", "?"),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# ---- what else ran on the machine meanwhile ----


def _system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class MachineLoad:
    """CPU the whole machine used during a phase, and how much of it was not ours (other
    programs sharing the machine). Call ``stop`` after every process the phase started has
    been waited for: their CPU then counts as ours (RUSAGE_CHILDREN)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.system, self.steal = _system_cpu()
        self.own = _own_cpu()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        system, steal = _system_cpu()
        busy, own = system - self.system, _own_cpu() - self.own
        cores = os.cpu_count() or 1
        foreign = max(0.0, busy - own)
        return {
            "wall_seconds": round(wall, 1),
            "machine_busy_cpu_seconds": round(busy, 1),
            "own_cpu_seconds": round(own, 1),
            "foreign_cpu_seconds": round(foreign, 1),
            "foreign_share_of_machine": round(foreign / (wall * cores), 3) if wall else 0.0,
            "steal_cpu_seconds": round(steal - self.steal, 1),
        }

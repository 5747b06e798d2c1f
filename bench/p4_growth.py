"""P4, growth: does a ledger get slower as it gets longer?

A balance lookup (``Ledger.balance``) and one history page (``store.history``, newest 50, of a
payer with a long history: what ``GET /ledger/accounts/<a>/history`` serves) on a short and a
long ledger (recipients grow with the ledger, one per ten transactions, as users would), and
the time to seal a block of 100, 1000 and 10000 waiting transactions. Ten payers send every
transfer, so each has a full page of history even in the short ledger. Lookups are timed one by
one, warm, on random known addresses, the two ledgers alternating in ten rounds; the ratio is
the median over rounds of the two ledgers' medians in that round.
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chains import build_chain
from bench.common import new_ledger, random_address, set_synchronous, sign_all, summary_ms
from ledger.crypto import KeySigner
from ledger.ledger import Ledger
from ledger.storage.sqlite import SQLiteStore

# Few payers, so that even the short ledger gives each one a full history page (50 rows).
PAYERS = 10


@dataclass
class Settings:
    sizes: tuple[int, int] = (1_000, 1_000_000)
    fallback_large: int = 200_000
    build_budget_seconds: float = 600.0
    lookups: int = 5000
    history_pages: int = 500
    seal_sizes: tuple[int, ...] = (100, 1000, 10_000)
    seal_repeats: int = 3


QUICK = Settings(sizes=(1_000, 20_000), lookups=1000, history_pages=100, seal_sizes=(100, 1000), seal_repeats=1)


def _timed_ms(calls: list[Any]) -> list[float]:
    out = []
    for call in calls:
        start = time.perf_counter_ns()
        call()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


ROUNDS = 10


def lookups(chains: list[tuple[Path, dict[str, Any]]], settings: Settings) -> list[dict[str, Any]]:
    """Balance lookups and history pages on each ledger, in ``ROUNDS`` alternating rounds (so
    the ledgers are timed under the same outside load); per-round medians are kept so the
    ratio can be taken round by round."""
    rng = random.Random(7)
    opened: list[tuple[SQLiteStore, Ledger, list[str], list[str], dict[str, list[Any]]]] = []
    for path, meta in chains:
        store = SQLiteStore(path)
        ledger = Ledger(store)
        known = meta["payers"] + meta["recipients_sample"]
        addresses = [rng.choice(known) for _ in range(settings.lookups)]
        payers = [rng.choice(meta["payers"]) for _ in range(settings.history_pages)]
        for address in addresses[:500]:  # warm the connection and the page cache
            ledger.balance(address)
        for payer in payers[:20]:
            store.history(payer, 50)
        opened.append((store, ledger, addresses, payers, {"balance": [], "history": [], "rounds": []}))
    for round_no in range(ROUNDS):
        for store, ledger, addresses, payers, times in opened:
            part = addresses[round_no::ROUNDS]
            pages = payers[round_no::ROUNDS]
            balance = _timed_ms([lambda a=a, ledger=ledger: ledger.balance(a) for a in part])
            history = _timed_ms([lambda p=p, store=store: store.history(p, 50) for p in pages])
            times["balance"] += balance
            times["history"] += history
            times["rounds"].append(
                {
                    "balance_p50_ms": statistics.median(balance),
                    "history_p50_ms": statistics.median(history) if history else 0.0,
                }
            )
    results = []
    for (_, meta), (store, _, _, _, times) in zip(chains, opened, strict=True):
        postings = len(store.history(meta["payers"][0], 10**9))
        store.close()
        results.append(
            {
                "transactions": meta["transactions"],
                "requested": meta["requested"],
                "balance": summary_ms(times["balance"]),
                "history_page_50": summary_ms(times["history"]),
                "rounds": times["rounds"],
                "history_rows_of_one_payer": postings,
                "build_seconds": meta["build_seconds"],
            }
        )
    return results


def _median_ratio(large: dict[str, Any], small: dict[str, Any], key: str) -> float:
    ratios = [b[key] / a[key] for a, b in zip(small["rounds"], large["rounds"], strict=True) if a[key]]
    return round(statistics.median(ratios), 4)


def sealing(out: Path, settings: Settings) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    fixture = new_ledger(out / "seal.db", 20)
    ledger = fixture.ledger
    recipients = [random_address() for _ in range(1000)]
    results = {}
    for size in settings.seal_sizes:
        times = []
        for _ in range(settings.seal_repeats):
            transfers = sign_all(fixture.chain, fixture.payers, recipients, size)
            set_synchronous(ledger, "OFF")  # filling the queue is not what is measured
            for auth, signature in transfers:
                ledger.transfer(auth, signature)
            set_synchronous(ledger, "FULL")
            sealer = Ledger(ledger.store, sealer=KeySigner(fixture.sealer_key), block_max_txs=size)
            start = time.perf_counter()
            block = sealer.seal()
            times.append((time.perf_counter() - start) * 1000)
            assert block is not None and block.header.tx_count == size, "the block must hold every waiting tx"
        median = statistics.median(times)
        results[str(size)] = {
            "seal_ms": round(median, 3),
            "per_tx_us": round(median * 1000 / size, 2),
            "runs_ms": [round(t, 3) for t in times],
        }
    ledger.store.close()
    return results


def run(out: Path, settings: Settings, log: Any = print) -> dict[str, Any]:
    small_size, large_size = settings.sizes
    small_path, small_meta = build_chain(
        "growth", small_size, payers=PAYERS, recipients=max(100, small_size // 10), log=log
    )
    large_path, large_meta = build_chain(
        "growth",
        large_size,
        payers=PAYERS,
        recipients=max(100, large_size // 10),
        budget_seconds=settings.build_budget_seconds,
        fallback_size=settings.fallback_large,
        log=log,
    )
    small, large = lookups([(small_path, small_meta), (large_path, large_meta)], settings)
    for label, figures in (("small", small), ("large", large)):
        log(
            f"  P4 {label} ledger ({figures['transactions']} tx):"
            f" balance p50 {figures['balance']['p50_ms'] * 1000:.1f} µs,"
            f" history page p50 {figures['history_page_50']['p50_ms'] * 1000:.1f} µs"
        )
    seal = sealing(out, settings)
    for size, figures in seal.items():
        log(f"  P4 seal a block of {size}: {figures['seal_ms']:.1f} ms ({figures['per_tx_us']:.1f} µs/tx)")
    return {
        "settings": {**settings.__dict__},
        "small": small,
        "large": large,
        "large_is_fallback": large_meta.get("fallback_for") is not None,
        # Median over rounds of (long ledger's median ÷ short ledger's median), both timed in the round.
        "balance_latency_ratio": _median_ratio(large, small, "balance_p50_ms"),
        "history_latency_ratio": _median_ratio(large, small, "history_p50_ms"),
        "sealing": seal,
    }

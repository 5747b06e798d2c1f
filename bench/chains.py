"""Ledgers of a given length for the audit (P3) and growth (P4) figures, built fast and cached.

A chain is built through the ledger's own doors (``Ledger.mint``, ``Ledger.submit_many`` in
batches of 1000, ``Ledger.seal`` in blocks of 1000), so it is a valid chain the auditor must accept, with
signatures made in worker processes while the ledger ingests. Only the build switches the
builder's connection to ``synchronous=OFF`` (a fixture need not survive a power cut); the
measurements reopen the file with the store's own settings.

Built chains are kept under ``bench/out/chains/``, named by size, population and a digest of
the source files that decide what is stored (encoding, types, storage), so a change there
rebuilds them. If the projected build time passes a budget, the build stops at a fallback size
and says so (``meta["fallback"]``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import (
    OUT,
    measured_sources,
    new_ledger,
    random_address,
    set_synchronous,
    signed_transfers,
    source_digest,
)
from ledger.errors import InferpayError
from ledger.types import Transaction

STORED_FORMAT = ["ledger/encoding.py", "ledger/types.py", "ledger/storage/sqlite.py", "ledger/storage/base.py"]
CHAINS = OUT / "chains"


def chain_path(kind: str, size: int, payers: int, recipients: int) -> Path:
    return CHAINS / f"{kind}-{size}-p{payers}-r{recipients}-{source_digest(STORED_FORMAT)}.db"


def load_meta(path: Path) -> dict[str, Any] | None:
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        data: dict[str, Any] = json.loads(meta.read_text())
        return data
    return None


def build_chain(
    kind: str,
    size: int,
    *,
    payers: int,
    recipients: int,
    budget_seconds: float | None = None,
    fallback_size: int | None = None,
    log: Any = print,
) -> tuple[Path, dict[str, Any]]:
    """A sealed, valid ledger of ``size`` transactions (``payers`` mints, then transfers of 1
    base unit from those payers to ``recipients`` random addresses); cached."""
    path = chain_path(kind, size, payers, recipients)
    meta = load_meta(path)
    if meta is not None:
        return path, meta
    if fallback_size is not None:
        fallback = chain_path(kind, fallback_size, payers, recipients)
        meta = load_meta(fallback)
        if meta is not None and meta.get("fallback_for") == size:
            return fallback, meta
    for stale in (path, path.with_suffix(".json"), Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    fixture = new_ledger(path, payers)
    ledger = fixture.ledger
    fast = set_synchronous(ledger, "OFF")
    addresses = [random_address() for _ in range(recipients)]
    target = size
    done = payers
    checked = False
    mark: tuple[int, float] | None = None  # (done, time) where the steady-state rate is measured from
    chunks = signed_transfers(fixture.chain, fixture.payers, addresses, size - payers, chunk=1000)
    for chunk in chunks:
        # Through the ledger's own batch door (Ledger.submit_many: every signature and rule
        # checked, one commit per 1000), as a bulk import would; sealed every 1000.
        batch = [Transaction("transfer", auth, auth.from_, signature) for auth, signature in chunk[: target - done]]
        refused = [r for r in ledger.submit_many(batch) if isinstance(r, InferpayError)]
        if refused:
            raise RuntimeError(f"the chain builder's own transfers were refused: {refused[0]}")
        done += len(batch)
        ledger.seal_all()
        if done >= target:
            break
        if mark is None and done >= min(10_000, size // 20):
            mark = (done, time.perf_counter())
        if not checked and mark and budget_seconds and fallback_size and done >= 2 * mark[0]:
            checked = True
            now = time.perf_counter()
            rate = (done - mark[0]) / (now - mark[1])  # steady state, start-up costs excluded
            projected = (now - started) + (size - done) / rate
            if projected > budget_seconds:
                log(
                    f"  building {size} transactions would take ~{projected / 60:.0f} min"
                    f" (> {budget_seconds / 60:.0f}); building {fallback_size} instead"
                )
                target = fallback_size
        if done % 50_000 < 1000:
            log(f"  built {done}/{target} transactions ({time.perf_counter() - started:.0f} s)")
    chunks.close()
    ledger.seal_all()
    set_synchronous(ledger, "FULL")
    ledger.store.close()
    meta = {
        "kind": kind,
        "transactions": done,
        "requested": size,
        "fallback_for": size if target != size else None,
        "payers": [w.address for w in fixture.payers],
        "recipients_sample": addresses[:2000],
        "recipient_count": recipients,
        "build_seconds": round(time.perf_counter() - started, 1),
        "built_with_synchronous_off": fast,
        "sources": measured_sources(),
    }
    if target != size:
        final = chain_path(kind, target, payers, recipients)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.replace(Path(f"{final}{suffix}"))
        path = final
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path, meta

"""The auditor's comparison of the compute pool's derived tables with what history gives.

Who is in force at what price, the fee in force, the pool version, earnings, operator fees and
refunds per settle are all derived from the log; a gateway prices calls by them, so an edit
there would misprice every later call without touching a signed byte. Each difference is one
problem, reported through ``problem(code, message)``.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.pool_state import PoolBook
from ledger.storage.base import LedgerStore


def compare_pool(store: LedgerStore, pool: PoolBook, problem: Callable[[str, str], None]) -> None:
    """The pool's tables are derived from history too (who is in force at what price, the fee in
    force, earnings, fees, refunds): a gateway prices calls by them, so an edit there would
    misprice every later call without touching a signed byte."""
    replayed = {
        a: (r.registration_id, r.registration, r.registered_at_ms, r.updated_at_ms)
        for a, r in pool.registrations.items()
    }
    kept = {
        p.address: (p.registration_id, p.registration, p.registered_at_ms, p.updated_at_ms) for p in store.providers()
    }
    for address in sorted(set(replayed) | set(kept)):
        if replayed.get(address) != kept.get(address):
            problem(
                "providers_mismatch",
                f"provider {address}: the database's registration in force is not the one history gives",
            )
    if store.provider_approvals() != pool.approvals:
        problem("approvals_mismatch", "the database's provider approvals are not the ones history gives")
    if store.pool_fee() != pool.fee:
        problem(
            "pool_fee_mismatch",
            f"database says pool fee {store.pool_fee().to_dict()}, history gives {pool.fee.to_dict()}",
        )
    if store.pool_version() != pool.version:
        problem(
            "pool_version_mismatch", f"database says pool version {store.pool_version()}, history gives {pool.version}"
        )
    earned = {a: e.frozen() for a, e in pool.earnings.items()}
    stored_earnings = store.all_provider_earnings()
    for address in sorted(set(earned) | set(stored_earnings)):
        if earned.get(address) != stored_earnings.get(address):
            problem(
                "earnings_mismatch",
                f"{address}: database says earnings {stored_earnings.get(address)},"
                f" history gives {earned.get(address)}",
            )
    if store.operator_fees_by_payee() != pool.fees_by_payee:
        problem(
            "operator_fees_mismatch",
            f"database says operator fees {store.operator_fees_by_payee()}, history gives {pool.fees_by_payee}",
        )
    if store.refunds_by_settle() != pool.refunds:
        problem("refunds_mismatch", "the database's refunds per settle are not the ones history gives")

"""The chain auditor on the compute pool (SQLite and PostgreSQL): a ledger with registrations,
approvals, fees, split settles, refunds and redeems audits clean (with the independent verifier
too), and an edit of any of it in the database is reported: one split's amount in its record
(re-priced on replay, and no longer its leaf), and each of the pool's derived tables.
"""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import audit
from ledger.encoding import leaf_hash, transaction_id
from ledger.storage import open_store
from ledger.storage.dump import export_ledger, import_ledger
from ledger.storage.postgres_schema import parse_postgres_url
from ledger.storage.sql_rules import transaction_record
from ledger.types import SplitSettlement, Transaction
from tests.support.ledger import POSTGRES_URL, UNIT, LedgerFixture, drop_schema, new_postgres_url
from tests.support.pool import hold, redeem, refund, register, sealer_tx


def execute(lf: LedgerFixture, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Tamper with the ledger's database behind its back, on either backend."""
    if lf.backend == "sqlite":
        conn = sqlite3.connect(lf.path)
        with conn:
            conn.execute(sql, params)
        conn.close()
        return
    import psycopg

    schema = parse_postgres_url(str(lf.path)).schema
    with psycopg.connect(POSTGRES_URL, autocommit=True, options=f"-csearch_path={schema}") as conn:
        conn.execute(sql.replace("?", "%s"), params)


def busy_pool(lf: LedgerFixture) -> dict[str, str]:
    """Two providers, a fee change between calls, a refund, a redeem; returns some tx ids."""
    payer, payto = lf.party("payer"), lf.party("payto")
    cheap, dear = lf.party("cheap"), lf.party("dear")
    lf.mint(payer.address, 10 * UNIT)
    cheap_reg, _ = register(lf, cheap, price_per_call=100, price_per_1k_output=7)
    dear_reg, _ = register(lf, dear, price_per_call=900, price_per_1k_input=3)
    lf.ledger.approve_provider(cheap.address, True)
    first = lf.ledger.settle_split(
        hold(lf, payer, payto, 5000).tx_id,
        provider=cheap.address,
        registration_id=cheap_reg.tx_id,
        input_tokens=10,
        output_tokens=999,
        usage_capped=False,
    )
    lf.ledger.set_pool_fee(333, 2)
    second = lf.ledger.settle_split(
        hold(lf, payer, payto, 5000).tx_id,
        provider=dear.address,
        registration_id=dear_reg.tx_id,
        input_tokens=1234,
        output_tokens=1,
        usage_capped=True,
    )
    refund(lf, dear, second.tx_id, 10)
    refund(lf, payto, second.tx_id, 1)
    register(lf, cheap, status="withdrawn")
    redeem(lf, cheap, 50)
    lf.ledger.seal_all()
    return {"first": first.tx_id, "second": second.tx_id}


def codes(lf: LedgerFixture) -> set[str]:
    return {p.code for p in audit(lf.ledger.store, workers=1).problems}


def test_a_busy_pool_audits_clean_with_the_independent_verifier(lf: LedgerFixture) -> None:
    busy_pool(lf)
    report = audit(lf.ledger.store, workers=1, independent=True)
    assert report.ok, [str(p) for p in report.problems]
    assert lf.ledger.store.supply() == 10 * UNIT - 50
    assert lf.ledger.operator_fees() == sum(lf.ledger.store.operator_fees_by_payee().values()) > 0


def test_editing_one_splits_amount_is_reported(lf: LedgerFixture) -> None:
    ids = busy_pool(lf)
    row = lf.ledger.transaction(ids["second"])
    record = row.tx.to_dict()
    record["message"]["providerAmount"] = str(int(record["message"]["providerAmount"]) + 1)
    record["message"]["amount"] = str(int(record["message"]["amount"]) + 1)
    execute(
        lf, "UPDATE transactions SET record = ? WHERE tx_id = ?", (json.dumps(record, sort_keys=True), ids["second"])
    )
    found = codes(lf)
    assert {"leaf_mismatch", "id_mismatch", "merkle_mismatch", "invalid_signature", "balance_mismatch"} <= found


def test_a_mispriced_split_the_sealer_signed_is_reported_by_re_pricing(lf: LedgerFixture) -> None:
    """Even a split the sealer key really signed (a dishonest or buggy operator, rewriting its
    own entry with a new id and leaf) is re-priced against the registration and fee in force at
    its place in the log, and refused on replay."""
    ids = busy_pool(lf)
    row = lf.ledger.transaction(ids["first"])
    split = row.tx.message
    assert isinstance(split, SplitSettlement)
    forged = replace(split, provider_amount=split.provider_amount + 5, amount=split.amount + 5)
    tx = sealer_tx(lf, "split_settle", forged)
    tx = Transaction(tx.kind, tx.message, tx.signer, tx.signature, row.tx.accepted_at_ms)
    execute(
        lf,
        "UPDATE transactions SET record = ?, tx_id = ?, leaf_hash = ? WHERE seq = ?",
        (transaction_record(tx), transaction_id(tx), leaf_hash(tx), row.seq),
    )
    found = codes(lf)
    assert "split_mispriced" in found and "invalid_signature" not in found


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("UPDATE pool_earnings SET earned = earned + 1 WHERE calls > 0", "earnings_mismatch"),
        ("UPDATE pool_operator_fees SET fees = fees + 1", "operator_fees_mismatch"),
        ("UPDATE pool_state SET fee_bps = 0", "pool_fee_mismatch"),
        ("UPDATE pool_state SET version = version + 1", "pool_version_mismatch"),
        (
            "UPDATE providers SET status = 'active', record = replace(record, 'withdrawn', 'active')",
            "providers_mismatch",
        ),
        ("DELETE FROM provider_approvals", "approvals_mismatch"),
        ("DELETE FROM refunds_by_settle WHERE refunded = 1", "refunds_mismatch"),
        ("UPDATE supply SET redeemed = redeemed - 1", "supply_mismatch"),
    ],
)
def test_editing_the_pools_tables_is_reported(lf: LedgerFixture, sql: str, code: str) -> None:
    busy_pool(lf)
    assert codes(lf) == set()
    execute(lf, sql)
    assert code in codes(lf)


def test_a_pool_ledger_moves_between_backends_with_its_pool_intact(lf: LedgerFixture, tmp_path: Path) -> None:
    """``inferpay export`` / ``import`` replay the pool's entries by the target's own rules: the
    copy audits clean and answers the same providers, fee, earnings and supply."""
    busy_pool(lf)
    dump_text = io.StringIO()
    export_ledger(lf.ledger.store, dump_text)
    url = new_postgres_url()
    target = open_store(tmp_path / "copy.db") if lf.backend == "postgres" else open_store(url)
    try:
        import_ledger(target, dump_text.getvalue().splitlines())
        report = audit(target, workers=1)
        assert report.ok, [str(p) for p in report.problems]
        source = lf.ledger.store
        assert target.providers() == source.providers()
        assert target.pool_fee() == source.pool_fee() and target.pool_version() == source.pool_version()
        assert target.all_provider_earnings() == source.all_provider_earnings()
        assert target.operator_fees() == source.operator_fees() and target.supply() == source.supply()
        assert target.refunds_by_settle() == source.refunds_by_settle()
    finally:
        target.close()
        if lf.backend == "sqlite":
            drop_schema(url)

"""The chain auditor re-checks x402 upto's Permit2 holds, and catches an attacker who edits them.

As in ``test_audit_tamper.py``: a small chain holding Permit2 holds (one settled below its
maximum, one open) is built on SQLite, then edited with plain ``sqlite3`` the way someone with
write access to the file would; ``audit`` must name the first problem. The independent
verifier's second opinion covers the Permit2 digest too: an encoder bug that the ledger's own
checks cannot see (they use the same encoder) is what it reports.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger import encoding
from ledger.audit import AuditReport, audit
from ledger.crypto import sign_digest
from ledger.encoding import leaf_hash, signing_digest, transaction_id
from ledger.storage.sqlite import SQLiteStore
from ledger.types import Permit2Authorization, Transaction
from tests.support.ledger import UNIT, LedgerFixture, make_ledger


@pytest.fixture
def sqlite_lf(tmp_path: Path) -> Iterator[LedgerFixture]:
    fixture = make_ledger(tmp_path, backend="sqlite")
    fixture.clock.set_s(fixture.clock.now_s() + 1)
    yield fixture
    fixture.close()


@pytest.fixture
def built(sqlite_lf: LedgerFixture) -> dict[str, int]:
    """mint alice 10; permit2 hold alice->bob 5 (nonce 7), settled for 2; an open permit2 hold
    alice->bob 1 (nonce 8); an EIP-3009 transfer alice->bob with nonce 0x..07. Returns seqs."""
    lf = sqlite_lf
    alice, bob = lf.party("alice"), lf.party("bob")
    seqs = {"mint": lf.mint(alice.address, 10 * UNIT).seq}
    held = lf.ledger.hold(*lf.permit2(alice, bob.address, 5 * UNIT, nonce=7))
    seqs["hold"] = held.seq
    seqs["settle"] = lf.ledger.settle(held.tx_id, 2 * UNIT).seq
    lf.ledger.seal()
    seqs["open"] = lf.ledger.hold(*lf.permit2(alice, bob.address, UNIT, nonce=8)).seq
    seqs["transfer"] = lf.transfer(alice, bob.address, 1, nonce="0x" + f"{7:064x}").seq
    lf.ledger.seal()
    assert audit_file(lf.path).ok
    return seqs


@contextmanager
def attacker(path: Path | str) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path)) as conn, conn:
        yield conn


def audit_file(path: Path | str, **kw: Any) -> AuditReport:
    store = SQLiteStore(Path(path))
    try:
        return audit(store, workers=1, **kw)
    finally:
        store.close()


def codes(path: Path | str, **kw: Any) -> list[str]:
    return [p.code for p in audit_file(path, **kw).problems]


def read_record(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
    return json.loads(conn.execute("SELECT record FROM transactions WHERE seq = ?", [seq]).fetchone()[0])


def rewrite(conn: sqlite3.Connection, seq: int, record: dict[str, Any]) -> str:
    """Store ``record`` at ``seq`` with its id and leaf recomputed, as a careful attacker would."""
    tx = Transaction.from_dict(record)
    new_id = transaction_id(tx)
    conn.execute(
        "UPDATE transactions SET record = ?, tx_id = ?, leaf_hash = ? WHERE seq = ?",
        [json.dumps(record, sort_keys=True), new_id, leaf_hash(tx), seq],
    )
    return new_id


def test_a_chain_of_permit2_holds_audits_clean_twice_over(sqlite_lf: LedgerFixture, built: dict[str, int]) -> None:
    report = audit_file(sqlite_lf.path, independent=True)
    assert report.ok, report.problems
    assert report.transactions == 5
    store = SQLiteStore(Path(sqlite_lf.path))
    try:
        assert audit(store, workers=2, independent=True).ok  # the worker processes' path too
    finally:
        store.close()


def test_a_raised_permitted_amount_is_reported_at_its_transaction(
    sqlite_lf: LedgerFixture, built: dict[str, int]
) -> None:
    with attacker(sqlite_lf.path) as conn:
        record = read_record(conn, built["hold"])
        record["message"]["permitted"]["amount"] = str(9 * UNIT)
        conn.execute(
            "UPDATE transactions SET record = ? WHERE seq = ?", [json.dumps(record, sort_keys=True), built["hold"]]
        )
    report = audit_file(sqlite_lf.path)
    assert (report.problems[0].code, report.problems[0].seq) == ("leaf_mismatch", built["hold"])


def test_a_new_payee_with_recomputed_hashes_breaks_the_payers_signature(
    sqlite_lf: LedgerFixture, built: dict[str, int]
) -> None:
    with attacker(sqlite_lf.path) as conn:
        record = read_record(conn, built["hold"])
        record["message"]["witness"]["to"] = sqlite_lf.party("mallory").address
        new_id = rewrite(conn, built["hold"], record)
    problem = audit_file(sqlite_lf.path).problems[0]
    assert (problem.code, problem.seq, problem.tx_id) == ("invalid_signature", built["hold"], new_id)


def test_another_facilitator_with_recomputed_hashes_is_not_this_ledgers_permit(
    sqlite_lf: LedgerFixture, built: dict[str, int]
) -> None:
    with attacker(sqlite_lf.path) as conn:
        record = read_record(conn, built["open"])
        record["message"]["witness"]["facilitator"] = sqlite_lf.chain.operator
        rewrite(conn, built["open"], record)
    problem = audit_file(sqlite_lf.path).problems[0]
    assert (problem.code, problem.seq) == ("wrong_domain", built["open"])
    assert "witness.facilitator" in problem.message


def test_a_deleted_or_renamespaced_permit2_nonce_row_is_reported(
    sqlite_lf: LedgerFixture, built: dict[str, int]
) -> None:
    alice = sqlite_lf.party("alice").address
    with attacker(sqlite_lf.path) as conn:
        rows = conn.execute("SELECT nonce FROM nonces WHERE signer = ? ORDER BY nonce", [alice]).fetchall()
        assert [r[0] for r in rows] == ["0x" + f"{7:064x}", "permit2:7", "permit2:8"]
        conn.execute("DELETE FROM nonces WHERE signer = ? AND nonce = 'permit2:8'", [alice])
    assert "nonces_mismatch" in codes(sqlite_lf.path)
    with attacker(sqlite_lf.path) as conn:
        conn.execute("INSERT INTO nonces (signer, nonce, tx_id) VALUES (?, 'permit2:8', 'x')", [alice])  # back
        # ... and the Permit2 nonce 7 moved into the EIP-3009 namespace, as 0x..08.
        conn.execute(
            "UPDATE nonces SET nonce = ? WHERE signer = ? AND nonce = 'permit2:7'", ["0x" + f"{8:064x}", alice]
        )
    assert "nonces_mismatch" in codes(sqlite_lf.path)


def test_a_second_permit_reusing_a_permit2_nonce_is_reported(sqlite_lf: LedgerFixture, built: dict[str, int]) -> None:
    lf = sqlite_lf
    permit, signature = lf.permit2(lf.party("alice"), lf.party("bob").address, UNIT, nonce=7)
    tx = Transaction("permit2_hold", permit, permit.from_, signature, lf.clock(), permit.deadline)
    with attacker(lf.path) as conn:
        seq = conn.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            [transaction_id(tx), tx.kind, json.dumps(tx.to_dict(), sort_keys=True), leaf_hash(tx), tx.accepted_at_ms],
        ).lastrowid
    problem = audit_file(lf.path).problems[0]
    assert (problem.code, problem.seq) == ("nonce_reused", seq)
    assert "permit2:7" in problem.message


def test_the_independent_verifier_catches_a_permit2_encoder_bug(
    sqlite_lf: LedgerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were ``ledger.encoding`` to hash the witness under a wrong type string, the ledger would
    accept what its own encoder signs, and so would the plain audit: only the second opinion,
    which encodes Permit2 with eth-account, sees that the payer never signed the real struct."""
    lf = sqlite_lf
    alice, bob = lf.party("alice"), lf.party("bob")
    lf.mint(alice.address, 10 * UNIT)
    wrong = encoding.keccak(b"Witness(address to,uint256 validAfter)")  # x402 exact's witness, not upto's
    monkeypatch.setattr(encoding, "_UPTO_WITNESS_TYPEHASH", wrong)
    permit, signature = lf.permit2(alice, bob.address, UNIT)
    assert isinstance(permit, Permit2Authorization)
    assert signature == sign_digest(alice.key, signing_digest(lf.chain, permit))
    lf.ledger.hold(permit, signature)
    lf.ledger.seal()
    assert audit_file(lf.path).ok  # the same wrong encoder on both sides
    assert codes(lf.path, independent=True) == ["independent_check_failed"]

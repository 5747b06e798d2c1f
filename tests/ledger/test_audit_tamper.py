"""The chain auditor catches an attacker who edits the SQLite file directly.

Each test builds the same small chain (mints, transfers, holds, a settle and a void, sealed into
four blocks), then changes the database the way an attacker with write access to the file would:
plain ``sqlite3``, no ledger code. A fresh ``SQLiteStore`` is opened on the tampered file and
``audit`` must report the problem, with the *first* problem naming where it is (block height,
transaction seq and id) and what it is (its code).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.audit import AuditReport, Problem, audit, precheck
from ledger.blocks import block_hash, sign_header
from ledger.clock import s_to_ms
from ledger.crypto import KeySigner, new_private_key, sign_digest
from ledger.encoding import leaf_hash, signing_digest, transaction_id
from ledger.errors import StorageUnavailable
from ledger.storage.sqlite import SQLiteStore
from ledger.types import Authorization, SignedBlock, Transaction
from tests.support.ledger import UNIT, LedgerFixture


@dataclass(frozen=True)
class Entry:
    seq: int
    tx_id: str
    height: int


@dataclass
class BuiltChain:
    lf: LedgerFixture
    entries: dict[str, Entry]

    def __getitem__(self, name: str) -> Entry:
        return self.entries[name]


def build_chain(lf: LedgerFixture) -> BuiltChain:
    """Four blocks after genesis:

    1: mint alice 100, mint bob 50
    2: alice->bob 10, bob->carol 5, hold alice->dave 20 (h1), hold bob->dave 10 (h2)
    3: settle h1 for 15, void h2, carol->alice 2
    4: alice->carol 1, mint carol 7
    """
    alice, bob, carol, dave = (lf.party(n) for n in ("alice", "bob", "carol", "dave"))
    ledger = lf.ledger
    ids: dict[str, str] = {}
    ids["m_alice"] = lf.mint(alice.address, 100 * UNIT).tx_id
    ids["m_bob"] = lf.mint(bob.address, 50 * UNIT).tx_id
    ledger.seal()
    lf.clock.advance(1)
    ids["t_ab"] = lf.transfer(alice, bob.address, 10 * UNIT).tx_id
    ids["t_bc"] = lf.transfer(bob, carol.address, 5 * UNIT).tx_id
    ids["h1"] = ledger.hold(*lf.authorization(alice, dave.address, 20 * UNIT)).tx_id
    ids["h2"] = ledger.hold(*lf.authorization(bob, dave.address, 10 * UNIT)).tx_id
    ledger.seal()
    lf.clock.advance(1)
    ids["s1"] = ledger.settle(ids["h1"], 15 * UNIT).tx_id
    ids["v2"] = ledger.void(ids["h2"]).tx_id
    ids["t_ca"] = lf.transfer(carol, alice.address, 2 * UNIT).tx_id
    ledger.seal()
    lf.clock.advance(1)
    ids["t_ac"] = lf.transfer(alice, carol.address, 1 * UNIT).tx_id
    ids["m_carol"] = lf.mint(carol.address, 7 * UNIT).tx_id
    ledger.seal()
    assert ledger.head().header.height == 4
    entries = {}
    for name, tx_id in ids.items():
        stored = ledger.transaction(tx_id)
        assert stored.block_height is not None
        entries[name] = Entry(stored.seq, tx_id, stored.block_height)
    assert [entries[n].seq for n in ids] == list(range(1, 12))
    return BuiltChain(lf, entries)


@pytest.fixture(autouse=True, params=["in-process", "workers"])
def audit_workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every tamper case twice: signatures checked in the auditor's process, and in worker
    processes (the path long chains take), with chunks small enough that these short chains
    cross several of them."""
    workers = 1 if request.param == "in-process" else 2
    monkeypatch.setattr(sys.modules[__name__], "AUDIT_WORKERS", workers)
    if workers > 1:
        monkeypatch.setattr(precheck, "PARALLEL_AFTER", 3)
        monkeypatch.setattr(precheck, "CHUNK", 4)
    return workers


AUDIT_WORKERS = 1  # set per test by the fixture above


@pytest.fixture
def built(lf: LedgerFixture) -> BuiltChain:
    chain = build_chain(lf)
    assert audit(SQLiteStore(lf.path)).ok
    return chain


@contextmanager
def attacker(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the ledger file, committed on exit."""
    with closing(sqlite3.connect(path)) as conn, conn:
        yield conn


def audit_file(path: Path, **kw: Any) -> AuditReport:
    store = SQLiteStore(path)  # fresh, as a verifier that never saw the ledger live would open it
    try:
        return audit(store, workers=AUDIT_WORKERS, **kw)
    finally:
        store.close()


def first_problem(path: Path) -> tuple[Problem, list[str]]:
    report = audit_file(path)
    assert not report.ok, "tampering went unnoticed"
    return report.problems[0], [p.code for p in report.problems]


def read_record(conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
    return json.loads(conn.execute("SELECT record FROM transactions WHERE seq = ?", [seq]).fetchone()[0])


def write_record(conn: sqlite3.Connection, seq: int, record: dict[str, Any]) -> None:
    conn.execute("UPDATE transactions SET record = ? WHERE seq = ?", [json.dumps(record, sort_keys=True), seq])


def read_block(conn: sqlite3.Connection, height: int) -> dict[str, Any]:
    return json.loads(conn.execute("SELECT record FROM blocks WHERE height = ?", [height]).fetchone()[0])


def write_block(conn: sqlite3.Connection, block: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE blocks SET record = ?, block_hash = ? WHERE height = ?",
        [json.dumps(block, sort_keys=True), block["hash"], block["header"]["height"]],
    )


def assert_names(problem: Problem, code: str, entry: Entry | None, *, height: int | None = None) -> None:
    assert problem.code == code, problem
    if entry is not None:
        assert (problem.block_height, problem.seq, problem.tx_id) == (entry.height, entry.seq, entry.tx_id)
    else:
        assert problem.block_height == height, problem


# ---- edits to transactions ----


def test_untampered_chain_passes(built: BuiltChain) -> None:
    report = audit_file(built.lf.path)
    assert report.ok, report.problems
    assert (report.blocks, report.transactions) == (5, 11)


def test_changed_amount_is_reported_at_its_transaction(built: BuiltChain) -> None:
    entry = built["t_ab"]
    with attacker(built.lf.path) as conn:
        record = read_record(conn, entry.seq)
        record["message"]["value"] = str(11 * UNIT)
        write_record(conn, entry.seq, record)
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "leaf_mismatch", entry)
    assert {"id_mismatch", "merkle_mismatch"} <= set(codes)


def test_changed_recipient_is_reported_at_its_transaction(built: BuiltChain) -> None:
    entry = built["m_carol"]
    with attacker(built.lf.path) as conn:
        record = read_record(conn, entry.seq)
        record["message"]["to"] = built.lf.party("mallory").address
        write_record(conn, entry.seq, record)
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "leaf_mismatch", entry)
    assert "balance_mismatch" in codes  # carol's 7 moved to mallory in replay, not in the table


def test_changed_recipient_with_recomputed_hashes_breaks_the_signature(built: BuiltChain) -> None:
    """A careful attacker also rewrites the stored id and leaf hash: the payer's signature remains."""
    entry = built["t_ab"]
    with attacker(built.lf.path) as conn:
        record = read_record(conn, entry.seq)
        record["message"]["to"] = built.lf.party("mallory").address
        tx = Transaction.from_dict(record)
        new_id = transaction_id(tx)
        conn.execute(
            "UPDATE transactions SET record = ?, tx_id = ?, leaf_hash = ? WHERE seq = ?",
            [json.dumps(record, sort_keys=True), new_id, leaf_hash(tx), entry.seq],
        )
    problem, codes = first_problem(built.lf.path)
    assert problem.code == "invalid_signature", problem
    assert (problem.block_height, problem.seq, problem.tx_id) == (entry.height, entry.seq, new_id)
    assert "merkle_mismatch" in codes


def test_worker_processes_report_exactly_what_the_auditor_finds_alone(
    built: BuiltChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tampered chain, checked in one process and across worker processes: the same
    problems, in the same order (workers only precompute; the replay stays in order)."""
    entry = built["t_ab"]
    with attacker(built.lf.path) as conn:
        record = read_record(conn, entry.seq)
        record["message"]["to"] = built.lf.party("mallory").address
        tx = Transaction.from_dict(record)
        conn.execute(
            "UPDATE transactions SET record = ?, tx_id = ?, leaf_hash = ? WHERE seq = ?",
            [json.dumps(record, sort_keys=True), transaction_id(tx), leaf_hash(tx), entry.seq],
        )
        conn.execute("DELETE FROM transactions WHERE seq = ?", [built["t_bc"].seq])
    alone_store = SQLiteStore(built.lf.path)
    alone = audit(alone_store, workers=1)
    alone_store.close()
    monkeypatch.setattr(precheck, "PARALLEL_AFTER", 2)
    monkeypatch.setattr(precheck, "CHUNK", 3)
    used: list[int] = []
    real = precheck._Workers.__init__

    def spying(self: Any, chain: Any, independent: bool, count: int) -> None:
        used.append(count)
        real(self, chain, independent, count)

    monkeypatch.setattr(precheck._Workers, "__init__", spying)
    store = SQLiteStore(built.lf.path)
    in_workers = audit(store, workers=2)
    store.close()
    assert used == [2]
    assert not alone.ok and [p.to_dict() for p in in_workers.problems] == [p.to_dict() for p in alone.problems]


def test_a_worker_process_that_dies_fails_the_audit_clearly(built: BuiltChain, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-audit (OOM killer, a signal): the audit stops with a clear error
    instead of hanging or reporting a verdict it did not reach."""
    monkeypatch.setattr(precheck, "PARALLEL_AFTER", 2)
    monkeypatch.setattr(precheck, "CHUNK", 2)
    real = precheck._Workers.__init__

    def doomed(self: Any, chain: Any, independent: bool, count: int) -> None:
        real(self, chain, independent, count)
        for process in self.processes:
            process.kill()
            process.wait()

    monkeypatch.setattr(precheck._Workers, "__init__", doomed)
    store = SQLiteStore(built.lf.path)
    with pytest.raises(StorageUnavailable, match="audit worker process died"):
        audit(store, workers=2)
    store.close()


def test_deleted_transaction_leaves_a_sequence_gap(built: BuiltChain) -> None:
    deleted, after = built["t_bc"], built["h1"]
    with attacker(built.lf.path) as conn:
        conn.execute("DELETE FROM transactions WHERE seq = ?", [deleted.seq])
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "sequence_gap", after)
    assert f"#{deleted.seq}" in problem.message
    assert {"tx_count_mismatch", "merkle_mismatch", "balance_mismatch"} <= set(codes)


def test_transactions_swapped_within_a_block_break_its_merkle_root(built: BuiltChain) -> None:
    """Two transfers whose order does not matter to the balances: only the commitment notices."""
    first, second = built["t_ab"], built["t_bc"]
    swap_rows(built.lf.path, first.seq, second.seq)
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "merkle_mismatch", None, height=first.height)
    assert "balance_mismatch" not in codes


def test_transactions_swapped_across_blocks_fail_replay_at_the_first_moved_one(built: BuiltChain) -> None:
    """The settle of h1 moved before h1 itself: replay refuses to settle a hold not yet open."""
    hold, settle = built["h1"], built["s1"]
    swap_rows(built.lf.path, hold.seq, settle.seq)
    problem, codes = first_problem(built.lf.path)
    assert problem.code == "hold_not_open", problem
    assert (problem.block_height, problem.seq, problem.tx_id) == (hold.height, hold.seq, settle.tx_id)
    assert {"merkle_mismatch", "log_root_mismatch"} <= set(codes)


def swap_rows(path: Path, seq_a: int, seq_b: int) -> None:
    """Exchange record, tx_id and leaf_hash between two rows (tx_id is UNIQUE: go via a temp id)."""
    with attacker(path) as conn:
        rows = {
            seq: conn.execute("SELECT tx_id, record, leaf_hash FROM transactions WHERE seq = ?", [seq]).fetchone()
            for seq in (seq_a, seq_b)
        }
        conn.execute("UPDATE transactions SET tx_id = 'swap' WHERE seq = ?", [seq_a])
        for target, source in ((seq_b, seq_a), (seq_a, seq_b)):
            conn.execute(
                "UPDATE transactions SET tx_id = ?, record = ?, leaf_hash = ? WHERE seq = ?",
                [*rows[source], target],
            )


def test_used_nonce_resubmitted_as_a_new_transaction_is_reported(built: BuiltChain) -> None:
    """A second, validly signed authorization reusing a nonce the ledger already accepted."""
    lf, original = built.lf, built["t_ab"]
    alice, bob = lf.party("alice"), lf.party("bob")
    used = lf.ledger.transaction(original.tx_id).tx.message
    assert isinstance(used, Authorization)
    now = lf.clock.now_s()
    auth = Authorization(alice.address, bob.address, 3 * UNIT, now - 5, now + 600, used.nonce)
    tx = Transaction(
        "transfer", auth, alice.address, sign_digest(alice.key, signing_digest(lf.chain, auth)), s_to_ms(now)
    )
    new_id = transaction_id(tx)
    with attacker(lf.path) as conn:
        cursor = conn.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            [new_id, "transfer", json.dumps(tx.to_dict(), sort_keys=True), leaf_hash(tx), tx.accepted_at_ms],
        )
        seq = cursor.lastrowid
    problem, codes = first_problem(lf.path)
    assert problem.code == "nonce_reused", problem
    assert (problem.block_height, problem.seq, problem.tx_id) == (None, seq, new_id)
    assert codes == ["nonce_reused"]


def test_replayed_copy_of_a_transaction_is_reported_as_a_duplicate(built: BuiltChain) -> None:
    """The same signed transfer stored again (under a made-up id: the column is UNIQUE)."""
    original = built["t_ab"]
    fake_id = "0x" + "ab" * 32
    with attacker(built.lf.path) as conn:
        tx_id, kind, record, leaf, accepted = conn.execute(
            "SELECT tx_id, kind, record, leaf_hash, accepted_at FROM transactions WHERE seq = ?", [original.seq]
        ).fetchone()
        cursor = conn.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            [fake_id, kind, record, leaf, accepted],
        )
        seq = cursor.lastrowid
    problem, codes = first_problem(built.lf.path)
    assert problem.code == "id_mismatch", problem
    assert (problem.seq, problem.tx_id) == (seq, fake_id)
    assert original.tx_id in problem.message
    assert {"duplicate_transaction", "nonce_reused"} <= set(codes)


# ---- edits to blocks ----


def test_deleted_last_block_orphans_its_transactions(built: BuiltChain) -> None:
    first_of_block = built["t_ac"]
    with attacker(built.lf.path) as conn:
        conn.execute("DELETE FROM blocks WHERE height = 4")
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "orphan_transaction", first_of_block)
    assert codes == ["orphan_transaction", "orphan_transaction"]


def test_deleted_last_block_with_its_transactions_shows_in_balances_and_supply(built: BuiltChain) -> None:
    """A clean truncation of the chain: what gives it away is the derived state it leaves behind
    (used nonces, balances, supply)."""
    with attacker(built.lf.path) as conn:
        conn.execute("DELETE FROM transactions WHERE block_height = 4")
        conn.execute("DELETE FROM blocks WHERE height = 4")
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "nonces_mismatch", None, height=None)
    assert problem.seq is None and problem.tx_id is None
    assert "balance_mismatch" in codes and "supply_mismatch" in codes
    assert all(p.block_height is None for p in audit_file(built.lf.path).problems)  # the chain itself is whole


def test_changed_merkle_root_in_a_block_record_breaks_its_hash(built: BuiltChain) -> None:
    with attacker(built.lf.path) as conn:
        block = read_block(conn, 2)
        block["header"]["merkleRoot"] = "0x" + "00" * 32
        write_block(conn, block)
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "bad_block_signature", None, height=2)
    assert "merkle_mismatch" in codes


def test_changed_merkle_root_with_recomputed_hash_breaks_the_signature(built: BuiltChain) -> None:
    with attacker(built.lf.path) as conn:
        block = SignedBlock.from_dict(read_block(conn, 2))
        header = block.header.__class__(**{**block.header.__dict__, "merkle_root": "0x" + "00" * 32})
        forged = SignedBlock(header, block_hash(header), block.sealer, block.signature)
        write_block(conn, forged.to_dict())
    problems = audit_file(built.lf.path).problems
    assert_names(problems[0], "bad_block_signature", None, height=2)
    assert "merkle_mismatch" in [p.code for p in problems]
    assert [p.block_height for p in problems if p.code == "broken_link"] == [3]


@pytest.mark.parametrize("claims_chain_sealer", [False, True], ids=["own-sealer-field", "forged-sealer-field"])
def test_block_resigned_by_another_key_is_reported(built: BuiltChain, claims_chain_sealer: bool) -> None:
    other = KeySigner(new_private_key())
    with attacker(built.lf.path) as conn:
        block = SignedBlock.from_dict(read_block(conn, 2))
        resigned = sign_header(block.header, other)
        if claims_chain_sealer:
            resigned = SignedBlock(resigned.header, resigned.block_hash, built.lf.chain.sealer, resigned.signature)
        write_block(conn, resigned.to_dict())
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "bad_block_signature", None, height=2)
    assert codes == ["bad_block_signature"]  # same header, same hash: nothing else changed


# ---- edits to the derived tables ----


def test_edited_balance_is_reported(built: BuiltChain) -> None:
    alice = built.lf.party("alice").address
    with attacker(built.lf.path) as conn:
        conn.execute("UPDATE accounts SET available = available + 1 WHERE address = ?", [alice])
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "balance_mismatch", None, height=None)
    assert alice in problem.message
    assert codes == ["balance_mismatch"]


def test_edited_supply_is_reported(built: BuiltChain) -> None:
    with attacker(built.lf.path) as conn:
        conn.execute("UPDATE supply SET minted = minted + 1")
    problem, codes = first_problem(built.lf.path)
    assert_names(problem, "supply_mismatch", None, height=None)
    assert codes == ["supply_mismatch"]


# ---- tampering with derived tables (open holds, used nonces) ----


@pytest.mark.parametrize(
    ("column", "edit"),
    [("payee", "mallory"), ("amount", "amount - 1"), ("expires_at", "expires_at + 86400")],
)
def test_edited_open_hold_is_reported(lf: LedgerFixture, column: str, edit: str) -> None:
    alice, dave = lf.party("alice"), lf.party("dave")
    lf.mint(alice.address, 10 * UNIT)
    hold_id = lf.ledger.hold(*lf.authorization(alice, dave.address, 5 * UNIT)).tx_id
    lf.ledger.seal_all()
    with attacker(lf.path) as conn:
        if edit == "mallory":
            conn.execute("UPDATE holds SET payee = ? WHERE hold_id = ?", [lf.party("mallory").address, hold_id])
        else:
            conn.execute(f"UPDATE holds SET {column} = {edit} WHERE hold_id = ?", [hold_id])
    problem, _ = first_problem(lf.path)
    assert problem.code == "holds_mismatch", problem


def test_deleted_nonce_row_is_reported(built: BuiltChain) -> None:
    used = built.lf.ledger.transaction(built["t_ab"].tx_id).tx.message
    assert isinstance(used, Authorization)
    with attacker(built.lf.path) as conn:
        conn.execute("DELETE FROM nonces WHERE nonce = ?", [used.nonce])
    assert not audit_file(built.lf.path).ok


# ---- second opinion, scale, and the CLI ----


def test_untampered_chain_passes_the_independent_verifier(built: BuiltChain) -> None:
    pytest.importorskip("ledger.audit.independent_verifier")
    report = audit_file(built.lf.path, independent=True)
    assert report.ok, report.problems
    assert (report.blocks, report.transactions) == (5, 11)


def test_independent_verifier_also_rejects_a_forged_block(built: BuiltChain) -> None:
    pytest.importorskip("ledger.audit.independent_verifier")
    with attacker(built.lf.path) as conn:
        block = SignedBlock.from_dict(read_block(conn, 3))
        resigned = sign_header(block.header, KeySigner(new_private_key()))
        forged = SignedBlock(resigned.header, resigned.block_hash, built.lf.chain.sealer, resigned.signature)
        write_block(conn, forged.to_dict())
    report = audit_file(built.lf.path, independent=True)
    assert report.problems[0].code == "bad_block_signature"
    assert report.problems[0].block_height == 3


def test_three_thousand_transactions_audit_ok_streaming(lf: LedgerFixture) -> None:
    """Big enough to cross the store's 2000-row read batch and to span several blocks."""
    lf.ledger.block_max_txs = 700
    parties = [lf.party(f"p{i}") for i in range(10)]
    for i in range(1000):
        lf.mint(parties[i % 10].address, UNIT)
    for i in range(2000):
        lf.transfer(parties[i % 10], parties[(i + 3) % 10].address, 1 + i % 7)
    lf.ledger.seal_all()
    seen: list[int] = []
    report = audit_file(lf.path, progress=seen.append)
    assert report.ok, report.problems[:5]
    assert report.transactions == 3000
    assert report.blocks == 1 + 5  # genesis and ceil(3000 / 700)
    assert sum(seen) == 3000


def test_cli_verify_exits_1_and_names_the_first_bad_block(tmp_path: Path) -> None:
    try:
        from click.testing import CliRunner

        from inferpay_cli.main import cli
    except ImportError as exc:  # the wallets package (or the CLI) is not importable yet
        pytest.skip(f"CLI not importable yet: {exc}")
    home = tmp_path / "home"
    runner = CliRunner(env={"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": "pw", "INFERPAY_SCRYPT_N": "1024"})

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == code, (args, result.output, result.stderr, result.exception)
        return result

    run("init")
    run("wallet", "create", "alice")
    bob = run("wallet", "create", "bob").stdout.strip().splitlines()[-1]
    run("mint", "alice", "100")
    run("transfer", "alice", bob, "30")
    ok = run("verify")
    assert "chain valid" in ok.stdout

    with attacker(home / "ledger.db") as conn:
        seq, height, record = conn.execute(
            "SELECT seq, block_height, record FROM transactions WHERE kind = 'transfer'"
        ).fetchone()
        changed = json.loads(record)
        changed["message"]["value"] = str(3 * UNIT)
        write_record(conn, seq, changed)

    bad = run("verify", code=1)
    lines = bad.stderr.strip().splitlines()
    assert lines[0].startswith("chain INVALID")
    assert lines[1].strip().startswith(f"block {height}, tx #{seq}")
    assert "[leaf_mismatch]" in lines[1]
    assert "Traceback" not in bad.output


def test_cli_verify_with_a_pinned_sealer_refuses_a_chain_signed_by_another_key(tmp_path: Path) -> None:
    """A chain re-keyed from genesis (every block and resolution re-signed, the chain's identity
    rewritten) is consistent with itself; from the verifier's side it is a valid chain whose
    sealer is not the one the operator published. `--expect-sealer` is what tells them apart."""
    from click.testing import CliRunner

    from inferpay_cli.main import cli

    home = tmp_path / "home"
    runner = CliRunner(env={"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": "pw", "INFERPAY_SCRYPT_N": "1024"})
    assert runner.invoke(cli, ["init"]).exit_code == 0
    sealer = SQLiteStore(home / "ledger.db").chain_info().sealer
    pinned = runner.invoke(cli, ["verify", "--expect-sealer", sealer.lower()])
    assert pinned.exit_code == 0 and "chain valid" in pinned.stdout
    impostor = KeySigner(new_private_key()).address
    refused = runner.invoke(cli, ["verify", "--expect-sealer", impostor])
    assert refused.exit_code == 1 and "[unexpected_sealer]" in refused.stderr and "Traceback" not in refused.output
    as_json = runner.invoke(cli, ["verify", "--json", "--expect-sealer", impostor])
    assert json.loads(as_json.stdout)["problems"][0]["code"] == "unexpected_sealer"
    malformed = runner.invoke(cli, ["verify", "--expect-sealer", "0x1234"])
    assert malformed.exit_code == 1 and len(malformed.stderr.strip().splitlines()) == 1
    assert "--expect-sealer" in malformed.stderr and "Traceback" not in malformed.output

"""Tamper and rollback: what an attacker with write access to the ledger file can do, and who
notices (Certificate Transparency's split view and rollback).

Every case works on a copy of the ledger the load phases built (SQLite's online backup), changed
with plain ``sqlite3`` through the helpers of ``tests.ledger.test_audit_tamper``, and audited as
``inferpay verify`` audits it (``audit_file``). Two kinds of case:

- edits, deletions, reorderings, duplications of rows, a deleted middle block, a truncated tail
  that leaves its derived state behind: ``verify`` must report each;
- changes that leave a self-consistent ledger behind: the tail cleanly removed (export, drop the
  last blocks, import), the tail replaced by blocks re-signed with the real sealer key up to the
  same height, an old copy of the database restored. ``verify`` cannot tell these from a
  genuine ledger (they are one); a client that pinned a newer signed head can: the suite serves
  each with a real gateway and runs ``check_consistency`` from the pinned head (and
  ``verify_receipt_inclusion`` for a receipt that was in the lost part), which must refuse.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import requests

from gateway.client import PaymentAuth, check_consistency, fetch_head, receipt_of, verify_receipt_inclusion
from ledger.blocks import next_block
from ledger.errors import InferpayError
from ledger.storage.dump import export_ledger, import_ledger
from ledger.storage.sqlite import SQLiteStore
from ledger.types import SignedBlock
from reliability.checks import Finding
from reliability.deploy import Deployment, backup_database, copy_home, start_server, stop_server
from tests.ledger.test_audit_tamper import (
    attacker,
    audit_file,
    read_block,
    read_record,
    swap_rows,
    write_block,
    write_record,
)
from tests.support.gateway import FLAT, PASSWORD, SCRYPT_N
from tests.support.servers import free_port


def _rows(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with attacker(path) as conn:
        return conn.execute(sql, params or []).fetchall()


# ---- cases verify must catch: each takes the copy's path and changes it ----


def edit_settle_amount(path: Path) -> str:
    (seq,) = _rows(path, "SELECT seq FROM transactions WHERE kind = 'settle' ORDER BY seq LIMIT 1 OFFSET 5")[0]
    with attacker(path) as conn:
        record = read_record(conn, seq)
        record["message"]["amount"] = str(int(record["message"]["amount"]) + 1)
        write_record(conn, seq, record)
    return f"settle #{seq}: captured amount raised by 1 base unit"


def edit_transfer_recipient_rehashed(path: Path) -> str:
    from ledger.encoding import leaf_hash, transaction_id
    from ledger.types import Transaction

    (seq,) = _rows(path, "SELECT seq FROM transactions WHERE kind = 'transfer' ORDER BY seq LIMIT 1")[0]
    with attacker(path) as conn:
        record = read_record(conn, seq)
        record["message"]["to"] = "0x" + "ab" * 20
        tx = Transaction.from_dict(record)
        conn.execute(
            "UPDATE transactions SET record = ?, tx_id = ?, leaf_hash = ? WHERE seq = ?",
            [json.dumps(record, sort_keys=True), transaction_id(tx), leaf_hash(tx), seq],
        )
    return f"transfer #{seq}: recipient changed, id and leaf hash recomputed"


def edit_balance(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute(
            "UPDATE accounts SET available = available + 1000000 WHERE address = (SELECT min(address) FROM accounts)"
        )
    return "one account's available balance raised by 1 token"


def edit_supply(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute("UPDATE supply SET minted = minted + 1")
    return "minted supply raised by 1 base unit"


def edit_allowance_cap(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute("UPDATE allowances SET cap = cap * 100 WHERE rowid = (SELECT min(rowid) FROM allowances)")
    return "an API key's allowance cap multiplied by 100 (the owner signed the original cap)"


def reset_allowance_spent(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute(
            "UPDATE allowances SET spent = 0 WHERE spent > 0 AND rowid = "
            "(SELECT min(rowid) FROM allowances WHERE spent > 0)"
        )
    return "an API key's spent amount reset to 0"


def delete_transaction(path: Path) -> str:
    (count,) = _rows(path, "SELECT count(*) FROM transactions")[0]
    with attacker(path) as conn:
        conn.execute("DELETE FROM transactions WHERE seq = ?", [count // 2])
    return f"transaction #{count // 2} deleted"


def delete_first_transaction(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute("DELETE FROM transactions WHERE seq = 1")
    return "transaction #1 (the first mint, alone in block 1) deleted"


def delete_nonce(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute("DELETE FROM nonces WHERE (signer, nonce) = (SELECT signer, nonce FROM nonces LIMIT 1 OFFSET 3)")
    return "one used nonce deleted (would let its payment be replayed)"


def delete_posting(path: Path) -> str:
    with attacker(path) as conn:
        conn.execute("DELETE FROM postings WHERE (address, seq) = (SELECT address, seq FROM postings LIMIT 1 OFFSET 7)")
    return "one row of the account-history index deleted (a transaction vanishes from /history)"


def reorder_within_block(path: Path) -> str:
    height, first, second = _rows(
        path,
        "SELECT block_height, min(seq), min(seq) + 1 FROM transactions WHERE block_height IS NOT NULL "
        "GROUP BY block_height HAVING count(*) >= 2 ORDER BY block_height LIMIT 1 OFFSET 3",
    )[0]
    swap_rows(path, first, second)
    return f"transactions #{first} and #{second} swapped inside block {height}"


def reorder_across_blocks(path: Path) -> str:
    hold_seq, settle_seq = _rows(
        path,
        "SELECT h.seq, s.seq FROM transactions h JOIN transactions s ON s.kind = 'settle' "
        "AND json_extract(s.record, '$.message.holdId') = h.tx_id WHERE h.kind = 'hold' "
        "AND s.block_height > h.block_height LIMIT 1",
    )[0]
    swap_rows(path, hold_seq, settle_seq)
    return f"hold #{hold_seq} and its settle #{settle_seq} swapped across blocks"


def duplicate_transaction(path: Path) -> str:
    with attacker(path) as conn:
        kind, record, leaf, accepted = conn.execute(
            "SELECT kind, record, leaf_hash, accepted_at FROM transactions WHERE kind = 'transfer' LIMIT 1"
        ).fetchone()
        conn.execute(
            "INSERT INTO transactions (tx_id, kind, record, leaf_hash, accepted_at) VALUES (?, ?, ?, ?, ?)",
            ["0x" + "cd" * 32, kind, record, leaf, accepted],
        )
    return "a transfer stored a second time (under a made-up id)"


def delete_middle_block(path: Path) -> str:
    (head,) = _rows(path, "SELECT max(height) FROM blocks")[0]
    with attacker(path) as conn:
        conn.execute("DELETE FROM blocks WHERE height = ?", [head // 2])
    return f"block {head // 2} of {head} deleted"


def edit_block_timestamp(path: Path) -> str:
    (head,) = _rows(path, "SELECT max(height) FROM blocks")[0]
    with attacker(path) as conn:
        block = read_block(conn, head - 1)
        block["header"]["timestamp"] -= 3_600_000
        write_block(conn, block)
    return f"block {head - 1}'s timestamp moved an hour back"


def delete_tail_with_transactions(path: Path) -> str:
    (head,) = _rows(path, "SELECT max(height) FROM blocks")[0]
    with attacker(path) as conn:
        conn.execute("DELETE FROM transactions WHERE block_height >= ?", [head - 1])
        conn.execute("DELETE FROM blocks WHERE height >= ?", [head - 1])
    return f"blocks {head - 1}..{head} and their transactions deleted (balances left as they were)"


VERIFY_CASES: dict[str, Callable[[Path], str]] = {
    f.__name__: f
    for f in (
        edit_settle_amount,
        edit_transfer_recipient_rehashed,
        edit_balance,
        edit_supply,
        edit_allowance_cap,
        reset_allowance_spent,
        delete_transaction,
        delete_first_transaction,
        delete_nonce,
        delete_posting,
        reorder_within_block,
        reorder_across_blocks,
        duplicate_transaction,
        delete_middle_block,
        edit_block_timestamp,
        delete_tail_with_transactions,
    )
}
KNOWN = {  # cases verify is known to miss, and the defect each is reported as
    "edit_allowance_cap": "audit-ignores-allowances",
    "reset_allowance_spent": "audit-ignores-allowances",
    "delete_posting": "audit-ignores-history-index",
}


# ---- cases only a client with a newer head can catch ----


def truncated_copy(source: Path, target: Path, *, drop_blocks: int = 0, keep_txs: int | None = None) -> int:
    """``target``: the ledger in ``source`` without its last ``drop_blocks`` blocks (or cut after
    the block that holds transaction number ``keep_txs``), rebuilt by ``inferpay import`` so
    that every derived table agrees: a clean, self-consistent truncation. Returns its head height."""
    store = SQLiteStore(source)
    out = io.StringIO()
    try:
        export_ledger(store, out)
    finally:
        store.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    blocks_seen = [line["block"]["header"] for line in lines if line["type"] == "block"]
    keep_to = max(h["height"] for h in blocks_seen) - drop_blocks
    if keep_txs is not None:
        keep_to = min(keep_to, next((h["height"] for h in blocks_seen if h["treeSize"] >= keep_txs), keep_to))
    kept, txs, blocks, allowances = [], 0, 0, set()
    for line in lines:
        if line["type"] == "tx" and (line["blockHeight"] is None or line["blockHeight"] > keep_to):
            continue
        if line["type"] == "block" and line["block"]["header"]["height"] > keep_to:
            continue
        if line["type"] == "tx":
            txs += 1
            allowances.add(line["txId"])
        if line["type"] == "block":
            blocks += 1
            last = line["block"]["hash"]
        if line["type"] == "apiKey" and line["allowanceId"] not in allowances:
            continue
        if line["type"] == "end":
            keys = sum(1 for k in kept if k["type"] == "apiKey")
            line = {**line, "transactions": txs, "blocks": blocks, "apiKeys": keys, "head": last}
        kept.append(line)
    target_store = SQLiteStore(target)
    try:
        import_ledger(target_store, (json.dumps(line) for line in kept))
    finally:
        target_store.close()
    return keep_to


def reseal_empty(path: Path, sealer: Any, blocks: int) -> None:
    """Append ``blocks`` empty blocks signed with the real sealer key (the attacker has it)."""
    with attacker(path) as conn:
        for _ in range(blocks):
            record, frontier = conn.execute(
                "SELECT record, frontier FROM blocks ORDER BY height DESC LIMIT 1"
            ).fetchone()
            previous = SignedBlock.from_dict(json.loads(record))
            block, grown = next_block(previous, [], json.loads(frontier), sealer, int(time.time() * 1000))
            conn.execute(
                "INSERT INTO blocks (height, record, block_hash, frontier) VALUES (?, ?, ?, ?)",
                [block.header.height, json.dumps(block.to_dict(), sort_keys=True), block.block_hash, json.dumps(grown)],
            )


def run_tamper(
    dep: Deployment, run: Any, base_txs: int, audit_clean_cases: bool
) -> tuple[dict[str, Any], list[Finding]]:
    started = time.monotonic()
    env = dep.env
    findings: list[Finding] = []
    work = dep.root / "tamper"
    work.mkdir(exist_ok=True)
    old_copy = run.rollback_copy or (work / "old.db")
    if run.rollback_copy is None:
        backup_database(dep.home / "ledger.db", old_copy)

    # Fresh acknowledged payments, sealed, then a head pinned after them: the client's view.
    wallet = env.new_wallet("tamper_client", "1")
    auth = PaymentAuth(wallet, trusted_sealer=env.chain.sealer)
    receipts = [receipt_of(requests.post(env.route_url(FLAT), json={"n": i}, auth=auth, timeout=30)) for i in range(3)]
    env.wait_quiet()
    pinned = fetch_head(env.ledger_url, env.chain)
    live = work / "live.db"
    backup_database(dep.home / "ledger.db", live)
    # The row-level cases run on the first part of the ledger (a clean truncation): what they
    # change does not depend on the ledger's length, and each audit replays the whole copy.
    base = work / "base.db"
    truncated_copy(live, base, keep_txs=base_txs)

    cases: dict[str, dict[str, Any]] = {}
    prepared: dict[str, str] = {}
    for name, tamper in VERIFY_CASES.items():
        copy = work / f"{name}.db"
        shutil.copyfile(base, copy)
        try:
            prepared[name] = tamper(copy)
        except (sqlite3.Error, IndexError, TypeError) as exc:
            cases[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
    with ProcessPoolExecutor(max_workers=2) as pool:  # each audit replays the copy: use both cores
        verdicts = dict(zip(prepared, pool.map(_audit_verdict, [str(work / f"{n}.db") for n in prepared]), strict=True))
        baseline = pool.submit(_audit_verdict, str(base)).result()
    if not baseline["ok"]:
        findings.append(Finding("tamper_baseline", f"the untampered copy does not audit clean: {baseline}"))
    for name, what in prepared.items():
        verdict = verdicts[name]
        cases[name] = {"what": what, "expectedDetector": "verify", "detectedByVerify": verdict["ok"] is False}
        if verdict.get("crashed"):
            cases[name]["verifyCrashed"] = verdict["crashed"]
            findings.append(
                Finding(
                    "verify_reports_not_crashes",
                    f"{name}: {what}: audit raised {verdict['crashed']}",
                    {"defect": "audit-crashes-on-deleted-transaction"} if "IndexError" in verdict["crashed"] else {},
                )
            )
        elif verdict["ok"]:
            findings.append(
                Finding(
                    "tamper_detected_by_verify",
                    f"{name}: {what}: verify reports nothing",
                    {"defect": KNOWN[name]} if name in KNOWN else {},
                )
            )
        else:
            cases[name]["firstProblem"] = verdict["first"]
        (work / f"{name}.db").unlink()

    drop = 2
    truncated = work / "truncated.db"
    keep_to = truncated_copy(live, truncated, drop_blocks=drop)
    rewritten = work / "rewritten.db"
    shutil.copyfile(truncated, rewritten)
    reseal_empty(rewritten, _sealer(dep), drop)
    client_cases = {
        "tail_removed_cleanly": (truncated, f"blocks after {keep_to} removed, the rest rebuilt by import"),
        "tail_rewritten_and_resigned": (
            rewritten,
            f"blocks after {keep_to} replaced by {drop} blocks re-signed with the real sealer key (same height)",
        ),
        "old_copy_restored": (old_copy, "an older copy of the database put back"),
    }
    for name, (path, what) in client_cases.items():
        # verify cannot tell these from a genuine ledger (each is one); shown in full runs.
        verdict = _audit_verdict(str(path)) if audit_clean_cases else {"ok": None}
        detected, how = _client_detects(dep, path, pinned, receipts)
        cases[name] = {
            "what": what,
            "expectedDetector": "client with a newer signed head",
            "detectedByVerify": None if verdict["ok"] is None else verdict["ok"] is False,
            "detectedByClient": detected,
            "clientSaw": how,
        }
        if not detected:
            findings.append(Finding("tamper_detected_by_client", f"{name}: {what}: the client noticed nothing"))
    detected = sum(1 for c in cases.values() if c.get("detectedByVerify") or c.get("detectedByClient"))
    figures = {
        "cases": sum(1 for c in cases.values() if "skipped" not in c),
        "detected": detected,
        "verifyCrashedInsteadOfReporting": sum(1 for c in cases.values() if c.get("verifyCrashed")),
        "verifyMissed": sorted(
            n
            for n, c in cases.items()
            if c.get("detectedByVerify") is False
            and c.get("expectedDetector") == "verify"
            and not c.get("verifyCrashed")
        ),
        "byCase": cases,
        "pinnedHead": pinned.header.height,
        "rowCasesLedgerTransactions": base_txs,
        "durationSeconds": round(time.monotonic() - started, 1),
    }
    return figures, findings


def _audit_verdict(path: str) -> dict[str, Any]:
    """Audit one copy (in a worker process): ok, the first problem, or how the auditor crashed."""
    try:
        report = audit_file(Path(path))
    except Exception as exc:  # verify must report a damaged ledger, never crash on it
        return {"ok": None, "crashed": f"{type(exc).__name__}: {exc}"}
    return {"ok": report.ok, "first": str(report.problems[0]) if report.problems else None}


def _sealer(dep: Deployment) -> Any:
    from gateway.server.home import Home

    return Home(dep.home).sealer()


def _client_detects(
    dep: Deployment, database: Path, pinned: SignedBlock, receipts: list[Any]
) -> tuple[bool, list[str]]:
    """Serve ``database`` with a real gateway; the client checks its pinned head and receipts."""
    home = copy_home(dep.home, dep.root / "tamper" / f"home-{database.stem}", database)
    port = free_port()
    config = home / "gateway.toml"
    config.write_text(dep.config_text(port))
    handle = start_server(  # the gateway of a tampered copy: the client cannot tell it from the real one
        [sys.executable, "-m", "inferpay_cli", "--home", str(home), "gateway", "--config", str(config)],
        port,
        dep.logs,
        env={"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N},
        ready_path="/health",
    )
    saw: list[str] = []
    try:
        ledger_url = f"http://127.0.0.1:{port}/ledger"
        chain = dep.env.chain
        try:
            check_consistency(ledger_url, pinned, chain)
            saw.append("check_consistency: accepted")
        except InferpayError as exc:
            saw.append(f"check_consistency: {exc.code}: {exc.message[:120]}")
        for receipt in receipts[-1:]:
            try:
                verify_receipt_inclusion(ledger_url, receipt, chain, timeout=2)
                saw.append("verify_receipt_inclusion: accepted")
            except InferpayError as exc:
                saw.append(f"verify_receipt_inclusion: {exc.code}: {exc.message[:120]}")
    finally:
        stop_server(handle, dep.logs / "tamper-gateway.log")
    return saw[0] != "check_consistency: accepted", saw

"""How the reliability workload files each answer: the checks trust these classes (a refusal
must have charged nothing; an ambiguous call may have been charged once), so a commit of
unknown outcome filed as a refusal would turn a correct gateway into a finding, and a 500 filed
as a refusal would hide one."""

from __future__ import annotations

import json

import pytest

from ledger.errors import CommitOutcomeUnknown, InferpayError, InsufficientFunds, StorageUnavailable
from reliability.workload import Op, _classify_failure, _refused


def op() -> Op:
    return Op(kind="paid", wallet="w0", client=0, started=0.0)


def body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "..."}}).encode()


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (503, "commit_outcome_unknown", "ambiguous"),  # it may have been recorded, once
        (503, "storage_unavailable", "refused"),  # nothing done
        (502, "upstream_unavailable", "refused"),
        (402, "insufficient_funds", "refused"),
        (500, "internal_error", "error"),  # never allowed
        (504, "upstream_timeout", "error"),
    ],
)
def test_an_http_answer_is_filed_by_its_code_and_status(status: int, code: str, outcome: str) -> None:
    filed = op()
    _classify_failure(filed, status, body(code))
    assert (filed.outcome, filed.code) == (outcome, code)


def test_an_answer_that_is_not_json_is_filed_by_its_status() -> None:
    filed = op()
    _classify_failure(filed, 500, b"<html>Internal Server Error</html>")
    assert filed.outcome == "error" and filed.code is None and "500" in (filed.detail or "")


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (503, CommitOutcomeUnknown("the database went away mid-commit", txId="0x" + "ab" * 32), "ambiguous"),
        (503, StorageUnavailable("the database is down"), "refused"),
        (402, InsufficientFunds("not enough"), "refused"),
        (500, StorageUnavailable("a 500 is never a refusal"), "error"),
    ],
)
def test_an_sdk_error_is_filed_by_its_class_and_status(status: int, error: InferpayError, outcome: str) -> None:
    filed = op()
    _refused(filed, status, error)
    assert filed.outcome == outcome

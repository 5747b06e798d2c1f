from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.go_verifier import go_tlog  # noqa: F401 (a session fixture)
from tests.support.ledger import BACKENDS, LedgerFixture, drop_leftover_schemas, make_ledger, postgres_unavailable

# Keystores in tests use a light scrypt cost; production keeps the v3 default (n = 2**18).
os.environ.setdefault("INFERPAY_SCRYPT_N", "1024")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Test modules that reach under the store into the SQLite file itself (plain ``sqlite3``, or a
# ``SQLiteStore`` opened on ``lf.path``): their PostgreSQL runs are skipped, and
# tests/ledger/test_pg_store.py makes the same checks against PostgreSQL with PostgreSQL's own tools.
SQLITE_ONLY_MODULES = {
    "test_concurrency.py": "races through SQLiteStore(lf.path) and watches the file with sqlite3; "
    "test_pg_store.py races threads and processes on PostgreSQL",
    "test_audit_tamper.py": "tampers with the SQLite file through sqlite3; "
    "test_pg_store.py tampers with PostgreSQL rows",
}


@pytest.fixture(params=BACKENDS)
def lf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFixture]:
    """A fresh real ledger with an operator, a sealer and a settable clock: once on SQLite (a
    file in tmp_path) and once on PostgreSQL (a schema of its own, dropped afterwards)."""
    if request.param == "postgres" and (reason := postgres_unavailable()):
        pytest.skip(reason)
    fixture = make_ledger(tmp_path, backend=request.param)
    yield fixture
    fixture.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    yield
    drop_leftover_schemas()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("lf") != "postgres":
            continue
        if reason := SQLITE_ONLY_MODULES.get(item.path.name):
            item.add_marker(pytest.mark.skip(reason=f"SQLite-specific: {reason}"))

"""The house's one-way dependencies, checked on the source: gateway → wallets → ledger, and
storage is the ledger's own business (callers use ``ledger``'s public API)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", ["gateway", "inferpay_cli", "wallets", "model_server", "witness"])
def test_callers_import_storage_things_from_ledger_never_from_ledger_storage(package: str) -> None:
    leaks = {
        path: sorted(m for m in names if m == "ledger.storage" or m.startswith("ledger.storage."))
        for path, names in imported_modules(package).items()
    }
    assert {path: mods for path, mods in leaks.items() if mods} == {}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("ledger", ("wallets", "gateway", "inferpay_cli", "flask", "witness")),
        ("wallets", ("gateway", "inferpay_cli", "flask")),
        ("witness", ("gateway", "wallets", "inferpay_cli", "model_server")),
    ],
)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        path: sorted(m for m in names if m.split(".")[0] in forbidden)
        for path, names in imported_modules(package).items()
    }
    assert {path: mods for path, mods in wrong.items() if mods} == {}


def test_importing_the_ledger_package_loads_no_database_driver_or_web_library() -> None:
    probe = (
        "import sys, ledger; "
        "print(sorted(m for m in ('sqlite_utils', 'psycopg', 'flask', 'requests', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_only_the_ed25519_module_imports_cryptography() -> None:
    users = sorted(
        path
        for package in ("ledger", "wallets", "gateway", "inferpay_cli", "witness")
        for path, names in imported_modules(package).items()
        if any(m.split(".")[0] == "cryptography" for m in names)
    )
    assert users == ["ledger/tlog/ed25519.py"]


def test_the_tlog_primitives_do_no_io_and_read_no_clock() -> None:
    """ledger/tlog is pure computation: bytes in, bytes out (its module docstrings say so)."""
    allowed = {"__future__", "base64", "binascii", "re", "hashlib", "dataclasses", "collections", "typing"}
    wrong = {
        path: sorted(m for m in names if m.split(".")[0] not in allowed | {"ledger", "cryptography"})
        for path, names in imported_modules("ledger/tlog").items()
    }
    assert {path: mods for path, mods in wrong.items() if mods} == {}
    reaching_up = {
        path: sorted(
            m for m in names if m.startswith("ledger.") and m.split(".")[1] not in {"errors", "merkle", "tlog"}
        )
        for path, names in imported_modules("ledger/tlog").items()
    }
    assert {path: mods for path, mods in reaching_up.items() if mods} == {}


def test_in_the_witness_only_the_store_talks_sql_and_only_app_and_serve_load_a_web_server() -> None:
    modules = imported_modules("witness")
    sql = sorted(path for path, names in modules.items() if names & {"sqlite3", "sqlite_utils"})
    web = sorted(
        path for path, names in modules.items() if any(m.split(".")[0] in ("flask", "gunicorn") for m in names)
    )
    assert sql == ["witness/store.py"]
    assert web == ["witness/app.py", "witness/serve.py"]


def test_importing_the_witness_client_loads_no_web_library() -> None:
    probe = (
        "import sys, witness, witness.client; "
        "print(sorted(m for m in ('sqlite_utils', 'flask', 'requests', 'httpx', 'gunicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_only_the_ledgers_storage_modules_import_a_database_driver() -> None:
    """The gateway, wallets and CLI keep no database of their own: what they remember beyond
    the ledger (API keys, checkpoints, facilitator records, rate counts) goes through
    ``ledger``'s storage interfaces."""
    drivers = {"sqlite3", "sqlite_utils", "psycopg", "psycopg_pool"}
    importing = sorted(
        path
        for package in ("ledger", "wallets", "gateway", "inferpay_cli", "model_server")
        for path, names in imported_modules(package).items()
        if {name.split(".")[0] for name in names} & drivers
    )
    assert importing == [
        "ledger/audit/disk_set.py",  # the auditor's scratch set on disk (a temporary file, not a store)
        "ledger/storage/postgres.py",
        "ledger/storage/rate_counts.py",
        "ledger/storage/sqlite.py",
    ], importing

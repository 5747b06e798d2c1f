"""inferpay's token ledger: what other packages may use of it.

The gateway, the CLI and wallets import from here, never from ``ledger.storage`` (the storage
backends and their row types are this package's business). Importing it loads no web framework,
no HTTP client and no database driver: SQLite's and PostgreSQL's are imported when a store is
opened (``open_store``).

This package must never import ``wallets`` or ``gateway``.
"""

from __future__ import annotations

from ledger.audit import AuditReport, Problem, audit
from ledger.errors import InferpayError
from ledger.ledger import Ledger, TxResult
from ledger.storage import describe, is_postgres_url, open_store
from ledger.storage.base import (
    AllowanceRow,
    ApiKeyRow,
    ApiKeyStore,
    CheckpointStore,
    FacilitatorRecordStore,
    HoldRow,
    LedgerStore,
    RawTx,
    StoredTx,
)
from ledger.storage.dump import export_ledger, import_ledger, read_header
from ledger.storage.rate_counts import Counter, RateCounts

__all__ = [
    "AllowanceRow",
    "ApiKeyRow",
    "ApiKeyStore",
    "AuditReport",
    "CheckpointStore",
    "Counter",
    "FacilitatorRecordStore",
    "HoldRow",
    "InferpayError",
    "Ledger",
    "LedgerStore",
    "Problem",
    "RateCounts",
    "RawTx",
    "StoredTx",
    "TxResult",
    "audit",
    "describe",
    "export_ledger",
    "import_ledger",
    "is_postgres_url",
    "open_store",
    "read_header",
]

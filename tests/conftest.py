from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ledger_helpers import LedgerFixture, make_ledger

# Keystores in tests use a light scrypt cost; production keeps the v3 default (n = 2**18).
os.environ.setdefault("INFERPAY_SCRYPT_N", "1024")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def lf(tmp_path: Path) -> LedgerFixture:
    """A fresh real SQLite ledger with an operator, a sealer and a settable clock."""
    return make_ledger(tmp_path)

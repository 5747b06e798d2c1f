"""Fixtures of the wallet tests: a fast scrypt work factor, and an empty wallet store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.keystores import FAST_N
from wallets import WalletStore


@pytest.fixture(autouse=True, scope="module")
def fast_scrypt() -> Iterator[None]:
    # Module-scoped so Hypothesis tests can use it too; 1024 keeps each keystore ~5 ms.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFERPAY_SCRYPT_N", str(FAST_N))
        yield


@pytest.fixture
def store(tmp_path: Path) -> WalletStore:
    return WalletStore(tmp_path / "home")

"""Wallets: named secp256k1 keys, kept encrypted on disk, that sign ledger messages.

What it is for: the client side of inferpay's money. ``WalletStore`` keeps Web3 v3 keystores
under ``<home>/wallets``; ``Wallet`` signs EIP-712 messages through ``ledger.crypto``;
``load`` unlocks one wallet in a single call. ``home`` is ``$INFERPAY_HOME`` or ``~/.inferpay``.

This package may import ``ledger`` but never ``gateway`` or Flask, must never touch the curve
except through ``ledger.crypto``, and must never log or print a private key or password.
"""

from __future__ import annotations

import os
from pathlib import Path

from wallets.store import WalletStore
from wallets.wallet import Wallet

__all__ = ["Wallet", "WalletStore", "default_home", "load"]

HOME_ENV = "INFERPAY_HOME"


def default_home() -> Path:
    """``$INFERPAY_HOME`` if set (and not empty), else ``~/.inferpay``."""
    configured = os.environ.get(HOME_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".inferpay"


def load(name: str, *, password: str, home: str | Path | None = None) -> Wallet:
    """Unlock the wallet ``name`` from ``home`` (default: ``default_home()``)."""
    return WalletStore(default_home() if home is None else Path(home)).load(name, password)

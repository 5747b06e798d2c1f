"""The CLI's view of a home directory: ``gateway.server.home.Home`` plus how it asks for passwords
and how it opens a store that must not hold a ledger yet (init, import).

Passwords come from ``--password-file``, ``INFERPAY_PASSWORD``, or a no-echo prompt, and are
never printed or logged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from gateway.server.home import OPERATOR_WALLET
from gateway.server.home import Home as DataHome
from ledger import LedgerStore
from ledger.errors import InvalidInput, LedgerNotInitialized, WalletExists

__all__ = ["OPERATOR_WALLET", "Home"]


@dataclass
class Home(DataHome):
    password_file: Path | None = None

    def password(self, prompt: str, *, confirm: bool = False) -> str:
        if self.password_file is not None:
            try:
                return self.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise InvalidInput(f"cannot read password file {self.password_file}: {exc.strerror}") from exc
        env = os.environ.get("INFERPAY_PASSWORD")
        if env is not None:
            return env
        if not sys.stdin.isatty():
            raise InvalidInput("no password: use --password-file, set INFERPAY_PASSWORD, or run in a terminal")
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))

    def empty_store(self) -> LedgerStore:
        """The store of this home's ledger location, which must not hold a ledger yet."""
        store = self.create_store()
        try:
            store.chain_info()
        except LedgerNotInitialized:
            return store
        store.close()
        raise WalletExists(f"{self.ledger_description} already holds a ledger; use another database or schema")

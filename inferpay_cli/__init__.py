"""The `inferpay` command line: one click group over the ledger, wallets and gateway."""

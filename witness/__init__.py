"""inferpay's transparency-log witness (c2sp.org/tlog-witness): it cosigns a log's checkpoints
once it has checked each one extends the last it cosigned, and never cosigns two that disagree.

Modules: ``config`` (the TOML file), ``keys`` (its cosignature/v1 key file, mode 0600),
``store`` (its state in SQLite: the only module importing sqlite-utils), ``core`` (the
add-checkpoint rules, top to bottom, no HTTP), ``app`` (``create_app(config)``, Flask),
``serve`` (gunicorn) and ``client`` (what a log calls: ``add_checkpoint``).

This package imports ``ledger`` only, never ``gateway``, ``wallets`` or the CLI; importing it
(or ``witness.client``) starts no web framework.
"""

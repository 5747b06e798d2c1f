"""A real witness process for tests: a config file in a temporary directory, ``inferpay witness``
started on a free port, stopped (or SIGKILLed, by the test that wants it) afterwards."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ledger.tlog.note import NoteSigner
from tests.support.servers import ServerHandle, run_server_command

WITNESS_NAME = "witness.test/w1"


def write_config(directory: Path, logs: Sequence[NoteSigner], *, workers: int = 1, threads: int = 8) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[witness]",
        f'name = "{WITNESS_NAME}"',
        'key_file = "keys/witness.key"',
        'db_path = "state/witness.db"',
        'listen = "127.0.0.1:0"',
        f"workers = {workers}",
        f"threads = {threads}",
    ]
    for log in logs:
        lines += ["", "[[witness.logs]]", f'origin = "{log.name}"', f'vkey = "{log.vkey}"']
    path = directory / "witness.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_witness(config: Path) -> ServerHandle:
    argv = [sys.executable, "-m", "inferpay_cli", "witness", "--config", str(config), "--port", "{port}"]
    return run_server_command(argv, ready_path="/health", startup_timeout=60)

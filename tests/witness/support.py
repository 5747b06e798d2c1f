"""A real witness process for tests: a config file in a temporary directory, ``inferpay witness``
started on a free port, stopped (or SIGKILLed, by the test that wants it) afterwards."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tests.support.servers import ServerHandle, run_server_command

WITNESS_NAME = "witness.test/w1"


class Log(Protocol):
    """What a witness is told of a log: its key's name (the origin) and vkey."""

    @property
    def name(self) -> str: ...

    @property
    def vkey(self) -> str: ...


def write_config(
    directory: Path, logs: Sequence[Log], *, workers: int = 1, threads: int = 8, name: str = WITNESS_NAME
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[witness]",
        f'name = "{name}"',
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


def witness_vkey(config: Path) -> str:
    """The vkey `inferpay witness vkey` prints for the witness of ``config``."""
    done = subprocess.run(
        [sys.executable, "-m", "inferpay_cli", "witness", "vkey", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_witness(config: Path, port: int | None = None) -> ServerHandle:
    """``port``: restart a witness where the logs that push to it expect it."""
    argv = [sys.executable, "-m", "inferpay_cli", "witness", "--config", str(config), "--port", "{port}"]
    return run_server_command(argv, ready_path="/health", startup_timeout=60, port=port)

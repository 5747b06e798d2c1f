"""The gateway's WSGI app for granian (bench ``wsgi`` phase only): ``create()`` is granian's
``--factory`` target, called in each of its worker processes.

The config and home come from the environment (``INFERPAY_BENCH_CONFIG``, ``INFERPAY_HOME``),
read as ``inferpay gateway`` reads them. Metrics count across workers as under gunicorn: the
benchmark points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before granian starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def create() -> Any:
    from gateway.server.app import create_app
    from gateway.server.config import load_config

    return create_app(load_config(Path(os.environ["INFERPAY_BENCH_CONFIG"]), home=Path(os.environ["INFERPAY_HOME"])))

"""A gunicorn worker that exits closes what its app opened: the auto-sealer (its thread and the
lock file that elects the host's sealer), the upstream pool and the ledger store."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from gateway.server.app import close_app, create_app
from gateway.server.config import GatewayConfig, parse_config
from gateway.server.serve import gateway_application
from gateway.server.services import EXTENSION, Services
from inferpay_cli.main import cli
from tests.support.gateway import PASSWORD, SCRYPT_N


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the descriptor drops a lock taken through it
    return True


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An initialised home (ledger, sealer key, operator wallet)."""
    home = tmp_path / "home"
    env = {"INFERPAY_HOME": str(home), "INFERPAY_PASSWORD": PASSWORD, "INFERPAY_SCRYPT_N": SCRYPT_N}
    assert CliRunner().invoke(cli, ["init"], env=env, catch_exceptions=False).exit_code == 0
    return home


def _config(home: Path) -> GatewayConfig:
    return parse_config({"routes": [{"path": "/v1/x", "upstream": "http://127.0.0.1:1", "price": "0.001"}]}, home=home)


def test_a_worker_exiting_closes_its_services(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    application = gateway_application(_config(home))  # what `inferpay gateway` runs
    worker = SimpleNamespace(wsgi=application.wsgi())  # loaded as a worker loads it, after the fork
    services: Services = worker.wsgi.extensions[EXTENSION]
    assert services.auto_sealer is not None and services.auto_sealer.elected()  # this worker holds the lock
    lock = home / "auto-sealer.lock"
    assert not _lock_is_free(lock)
    closed: list[str] = []
    store_close = services.ledger.store.close
    monkeypatch.setattr(services.ledger.store, "close", lambda: (closed.append("store"), store_close())[1])

    import gateway.server.app as app_module

    dead: list[int] = []
    monkeypatch.setattr(app_module, "mark_worker_dead", dead.append)
    application.cfg.worker_exit(None, worker)  # what gunicorn calls in the worker as it exits

    assert closed == ["store"]
    assert dead == [os.getpid()], "the worker's live metrics must be marked dead as it exits"
    assert _lock_is_free(lock), "the exited worker still holds the sealer's lock: no other worker could seal"
    assert services.upstream.client.is_closed
    assert not services.auto_sealer._thread.is_alive()


def test_the_httpx_log_level_is_left_to_the_process(home: Path) -> None:
    """The library leaves logging alone; ``serve_gateway`` (the process's entry point) sets it."""
    config = _config(home)
    httpx_logger = logging.getLogger("httpx")
    before = httpx_logger.level
    close_app(create_app(config, start_sealer=False))
    assert httpx_logger.level == before


def test_the_master_marks_a_gone_worker_dead_for_the_metrics(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However a worker went (a SIGKILL included), the master's child_exit marks its metrics dead."""
    import gateway.server.metrics as metrics

    dead: list[int] = []
    monkeypatch.setattr(metrics, "mark_worker_dead", dead.append)
    application = gateway_application(_config(home))
    application.cfg.child_exit(None, SimpleNamespace(pid=4242))
    assert dead == [4242]

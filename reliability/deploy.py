"""A whole inferpay deployment the suite can kill: home, wallets, two upstreams and the gateway.

Built the way ``tests.support.gateway.start_gateway_env`` builds one (the same CLI steps, the
same routes and TOML template, the same ``GatewayEnv`` handle, whose helpers the suite uses),
with three differences a fault campaign needs:

- every server keeps its port for the whole run, so it can be restarted where clients and the
  gateway's config expect it; ports come from ``tests.support.servers.free_port`` once, at creation;
- any server can be killed with SIGKILL, its whole process group at once (gunicorn's master and
  its workers together), at any moment, and started again;
- the gateway runs with the suite's clock (``reliability.clock``) and a short ``hold_seconds``,
  so holds stranded by a crash expire within seconds.

Processes are started and watched with ``tests.support.servers``' own helpers, so they live in process
groups of their own and are stopped at exit even if the suite dies. Nothing here touches a
process it did not start.

A deployment may run several gateways on one ledger (``gateway_names``; each its own server,
port and config, the same home): ``reliability.pg`` builds one on PostgreSQL that way. Clients
pick theirs with ``gateway_url(client)``; with one gateway that is always ``url``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gateway.server.home import Home
from ledger.ledger import Ledger
from ledger.storage.base import LedgerStore
from ledger.storage.sqlite import SQLiteStore
from reliability.clock import ClockControl
from tests.support.gateway import (
    PASSWORD,
    SCRYPT_N,
    GatewayEnv,
    gateway_config,
)
from tests.support.servers import ServerHandle, _spawn, _wait_ready, free_port  # the tests' own process plumbing

HOST = "127.0.0.1"
STARTUP_SECONDS = 60.0
# A werkzeug server for one of the test upstreams, on a port given on the command line (the
# tests' runner binds port 0, and an upstream restarted after a crash must come back where the
# gateway's config points).
_UPSTREAM = (
    "import sys; from werkzeug.serving import make_server; "
    "from tests.support.upstreams.{module} import {factory} as factory; "
    "make_server('127.0.0.1', int(sys.argv[1]), factory(), threaded=True).serve_forever()"
)
UPSTREAMS = {
    "echo": _UPSTREAM.format(module="echo_upstream", factory="create_echo_app"),
    "chat": _UPSTREAM.format(module="chat_upstream", factory="create_chat_app"),
}


class Deployment:
    """The servers of one run and the ``GatewayEnv`` that reads its ledger."""

    database: str | None = None  # a postgresql:// URL named in every gateway's config (reliability.pg)

    def __init__(
        self,
        root: Path,
        clock: ClockControl,
        *,
        hold_seconds: int = 10,
        upstream_timeout: int = 2,
        seal_ms: int = 50,
    ) -> None:
        self.root = root
        self.clock = clock
        self.home = root / "home"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.hold_seconds = hold_seconds
        self.upstream_timeout = upstream_timeout
        self.seal_ms = seal_ms
        self.gateway_names: list[str] = ["gateway"]  # a subclass may add more, on the same ledger
        self.ports = {"gateway": free_port(HOST), "echo": free_port(HOST), "chat": free_port(HOST)}
        self.servers: dict[str, ServerHandle | None] = {"gateway": None, "echo": None, "chat": None}
        self.started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {"gateway": 0, "echo": 0, "chat": 0}
        self._lock = threading.RLock()  # one kill or start at a time
        self.env = GatewayEnv(
            directory=root,
            home=self.home,
            config_path=root / "gateway.toml",
            gateway=None,  # type: ignore[arg-type]  # set by start_gateway
            echo=None,  # type: ignore[arg-type]
            chat=None,  # type: ignore[arg-type]
            store=None,  # type: ignore[arg-type]  # set once the ledger exists
            ledger=None,  # type: ignore[arg-type]
        )

    # ---- building it ----

    def create(self, funds: dict[str, str]) -> GatewayEnv:
        """``inferpay init``, one funded wallet per entry of ``funds`` (name -> tokens), the
        config, the upstreams and the gateway(s); returns the ready ``GatewayEnv``."""
        env = self.env
        env.cli("init")
        store = self.open_store()
        env.store, env.ledger = store, Ledger(store)  # type: ignore[assignment]  # any LedgerStore reads alike
        for name, amount in funds.items():
            env.new_wallet(name, amount)
        env.wallets["operator"] = Home(self.home).wallets.load("operator", PASSWORD)
        for name in self.gateway_names:
            self.config_path(name).write_text(self.config_text(self.ports[name]))
        for name in ("echo", "chat"):
            self.start(name)
        for name in self.gateway_names:
            self.start(name)
        return env

    def open_store(self) -> LedgerStore:
        """A new handle on this deployment's ledger (the caller closes it)."""
        return SQLiteStore(self.home / "ledger.db")

    def config_path(self, gateway: str) -> Path:
        return self.env.config_path if gateway == "gateway" else self.root / f"{gateway}.toml"

    def config_text(self, port: int | None = None) -> str:
        return gateway_config(
            f"http://{HOST}:{self.ports['echo']}",
            f"http://{HOST}:{self.ports['chat']}",
            hold_seconds=self.hold_seconds,
            timeout=self.upstream_timeout,
            seal_ms=self.seal_ms,
            database=self.database,
            host=HOST,
        ).replace("@PORT@", str(self.ports["gateway"] if port is None else port))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports['gateway']}"

    def gateway_url(self, client: int) -> str:
        """The gateway client number ``client`` talks to: the gateways in turn."""
        return f"http://{HOST}:{self.ports[self.gateway_names[client % len(self.gateway_names)]]}"

    def gateway_env_vars(self) -> dict[str, str]:
        return {
            "INFERPAY_HOME": str(self.home),
            "INFERPAY_PASSWORD": PASSWORD,
            "INFERPAY_SCRYPT_N": SCRYPT_N,
            **self.clock.child_env(),
        }

    # ---- starting and killing ----

    def start(self, name: str) -> ServerHandle:
        with self._lock:
            if (running := self.servers[name]) is not None and running.alive():
                return running
            if name in self.gateway_names:
                argv = [sys.executable, "-m", "inferpay_cli", "--home", str(self.home), "gateway"]
                handle = start_server(
                    [*argv, "--config", str(self.config_path(name))],
                    self.ports[name],
                    self.logs,
                    env=self.gateway_env_vars(),
                    ready_path="/health",
                )
                if name == "gateway":
                    self.env.gateway = handle
            else:
                handle = start_server(
                    [sys.executable, "-c", UPSTREAMS[name], str(self.ports[name])],
                    self.ports[name],
                    self.logs,
                    ready_path="/health",
                )
                setattr(self.env, name, handle)
            self.servers[name] = handle
            self.started_at[name] = time.monotonic()
            return handle

    def kill(self, name: str) -> None:
        """SIGKILL the server's whole process group: no shutdown, no flush, no goodbye."""
        with self._lock:
            handle = self.servers[name]
            self.servers[name] = None
            if handle is not None:
                kill_server(handle, self.logs / f"{name}.log")

    def restart(self, name: str, down_seconds: float = 0.0) -> None:
        with self._lock:
            self.kill(name)
            time.sleep(down_seconds)
            self.start(name)
            self.restarts[name] += 1

    def up(self, name: str = "gateway") -> bool:
        handle = self.servers[name]
        return handle is not None and handle.alive()

    def up_for(self, name: str = "gateway") -> float:
        """Seconds since the server was last started (0 when it is down)."""
        return time.monotonic() - self.started_at[name] if self.up(name) else 0.0

    def stop(self) -> None:
        for name in [*self.gateway_names, "echo", "chat"]:
            handle = self.servers[name]
            self.servers[name] = None
            if handle is not None:
                stop_server(handle, self.logs / f"{name}.log")
        if self.env.store is not None:
            self.env.store.close()

    def gateway_log(self) -> str:
        """Everything every gateway process of this run wrote (access log and errors)."""
        saved = self.logs / "gateway.log"
        text = saved.read_text(errors="replace") if saved.exists() else ""
        handle = self.servers["gateway"]
        return text + (handle.log_text() if handle is not None else "")


def start_server(
    argv: list[str], port: int, logs: Path, *, env: dict[str, str] | None = None, ready_path: str | None = None
) -> ServerHandle:
    """Start ``argv`` (which binds ``port`` itself) in a process group of its own; return once
    ``ready_path`` answers 2xx. Retries a few times while the port is still held by the one just
    killed (its sockets close with the last process of the group)."""
    last: Exception | None = None
    for _ in range(5):
        workdir = Path(tempfile.mkdtemp(prefix="inferpay-reliability-", dir=logs))
        handle = ServerHandle(_spawn(argv, workdir, env), HOST, port, workdir)
        try:
            _wait_ready(handle, time.monotonic() + STARTUP_SECONDS, ready_path)
            return handle
        except RuntimeError as exc:  # it died (port in use?) or never came up: its log is in exc
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"could not start {argv[:4]} on port {port}: {last}")


def kill_server(handle: ServerHandle, log: Path) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(handle.process.pid, signal.SIGKILL)  # the group is this server's alone
    with contextlib.suppress(subprocess.TimeoutExpired):
        handle.process.wait(timeout=10)
    _keep_log(handle, log)
    handle.stop()


def stop_server(handle: ServerHandle, log: Path) -> None:
    """gunicorn's quick shutdown (SIGINT), then ``ServerHandle.stop`` (SIGTERM, SIGKILL)."""
    if handle.alive():
        handle.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            handle.process.wait(timeout=5)
    _keep_log(handle, log)
    handle.stop()


def _keep_log(handle: ServerHandle, log: Path) -> None:
    """``ServerHandle.stop`` deletes the process's work directory: keep its log first."""
    with open(log, "a", encoding="utf-8", errors="replace") as out:
        out.write(handle.log_text())


def copy_home(source: Path, target: Path, database: Path | None = None) -> Path:
    """A copy of an inferpay home (wallets, sealer key), with ``database`` as its ledger.db."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ledger.db*"))
    if database is not None:
        shutil.copyfile(database, target / "ledger.db")
    return target


def backup_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite ledger (SQLite's online backup, safe while it is written)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def env_summary(dep: Deployment) -> dict[str, Any]:
    return {
        "gatewayWorkers": 2,
        "gatewayThreadsPerWorker": 8,
        "holdSeconds": dep.hold_seconds,
        "upstreamTimeoutSeconds": dep.upstream_timeout,
        "sealIntervalMs": dep.seal_ms,
        "clock": dep.clock.mechanism,
    }

"""Real server processes for tests, on 127.0.0.1, on ports chosen at run time, always stopped.

Two ways in, one handle out (``ServerHandle``: ``.url``, ``.port``, ``.stop()``, a context
manager):

- ``run_wsgi_in_process("pkg.module:factory", *args, server="werkzeug" | "gunicorn")`` runs
  ``factory(*args)`` in a separate Python process (this module is its runner:
  ``python -m tests.support.servers``). The child binds port 0 itself and reports the port the kernel
  gave it, so two test runs never race for a port. ``args`` must be JSON-serializable.
  werkzeug's threaded server is enough for test upstreams; ``"gunicorn"`` (1 gthread worker,
  the factory called in the worker after the fork) is the production stack.
- ``run_server_command([...argv...])`` runs any command that takes its port on the command
  line; each ``{port}`` in argv becomes a free port picked just before the start.

Both wait until the port accepts connections (and, if asked, until a path answers 2xx),
raise with the server's log if it dies or never comes up, and stop it with SIGTERM, then
SIGKILL to its process group. Use them in a fixture (``with ... as server: yield server``);
an atexit hook stops anything a test forgot. This module never touches a process it did not
start.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PORT_PLACEHOLDER = "{port}"

_LIVE: set[ServerHandle] = set()


class ServerHandle:
    """A server process this module started. ``stop()`` is idempotent."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, workdir: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self._workdir = workdir
        _LIVE.add(self)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._workdir / "server.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        _terminate(self.process, timeout)
        _LIVE.discard(self)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, pid={self.process.pid})"


@atexit.register
def _stop_all() -> None:
    for handle in list(_LIVE):
        handle.stop(timeout=3.0)


def run_wsgi_in_process(
    app_factory_import_path: str,
    *args: Any,
    server: str = "werkzeug",
    host: str = "127.0.0.1",
    threads: int = 8,
    env: dict[str, str] | None = None,
    startup_timeout: float = 30.0,
    ready_path: str | None = None,
) -> ServerHandle:
    """Serve ``factory(*args)`` (``"pkg.module:factory"``) from a new process; return once it listens."""
    if server not in ("werkzeug", "gunicorn"):
        raise ValueError(f"server must be 'werkzeug' or 'gunicorn', not {server!r}")
    workdir = Path(tempfile.mkdtemp(prefix="inferpay-server-"))
    port_file = workdir / "port"
    argv = [
        sys.executable,
        "-m",
        "tests.support.servers",
        "--port-file",
        str(port_file),
        "--server",
        server,
        "--host",
        host,
        "--threads",
        str(threads),
        app_factory_import_path,
        json.dumps(list(args)),
    ]
    process = _spawn(argv, workdir, env)
    deadline = time.monotonic() + startup_timeout
    while not port_file.exists():
        _check_starting(process, workdir, deadline, f"{app_factory_import_path} did not report a port")
        time.sleep(0.05)
    handle = ServerHandle(process, host, int(port_file.read_text()), workdir)
    _wait_ready(handle, deadline, ready_path)
    return handle


def run_server_command(
    argv: Sequence[str],
    *,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    ready_path: str | None = None,
    port: int | None = None,
) -> ServerHandle:
    """Run a server command whose argv has ``{port}`` where its port goes; return once it listens.

    The port is free when picked and bound by the child a moment later: a small window, fine
    for a test machine, and the only way with a program that cannot report the port it bound.
    ``port`` reuses a given one instead (a server restarted where its clients expect it).
    """
    if not any(PORT_PLACEHOLDER in arg for arg in argv):
        raise ValueError(f"argv must contain {PORT_PLACEHOLDER!r} where the port goes")
    port = free_port(host) if port is None else port
    workdir = Path(tempfile.mkdtemp(prefix="inferpay-server-"))
    process = _spawn([arg.replace(PORT_PLACEHOLDER, str(port)) for arg in argv], workdir, env)
    handle = ServerHandle(process, host, port, workdir)
    _wait_ready(handle, time.monotonic() + startup_timeout, ready_path)
    return handle


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _spawn(argv: list[str], workdir: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH")) if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    with open(workdir / "server.log", "wb") as log:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() can clear its workers
        )


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL to the process group: the group is this child's alone."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    # Also clears a gunicorn worker that outlives its master by a moment. start_new_session made
    # the child the leader of a group of its own, so this cannot reach another process.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def _check_starting(process: subprocess.Popen[bytes], workdir: Path, deadline: float, what: str) -> None:
    """Raise, with the server's log, if the process died or the deadline passed; stop it first."""
    if process.poll() is not None:
        failure = f"server exited with {process.returncode} before it was ready"
    elif time.monotonic() > deadline:
        failure = f"{what} in time"
    else:
        return
    _terminate(process, 3.0)
    log = (workdir / "server.log").read_text(errors="replace")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"{failure}: {process.args!r}\n--- server log ---\n{log[-4000:]}")


def _wait_ready(handle: ServerHandle, deadline: float, ready_path: str | None) -> None:
    def check(what: str) -> None:
        try:
            _check_starting(handle.process, handle._workdir, deadline, what)
        except RuntimeError:
            _LIVE.discard(handle)
            raise

    while True:
        check(f"port {handle.port} did not accept connections")
        try:
            with socket.create_connection((handle.host, handle.port), timeout=1.0):
                break
        except OSError:
            time.sleep(0.05)
    if ready_path is None:
        return
    while True:
        check(f"{ready_path} did not answer 2xx")
        try:
            with urllib.request.urlopen(handle.url + ready_path, timeout=5.0) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)


# ---- the runner: python -m tests.support.servers --port-file F --server S pkg.module:factory '[args]'


def _write_port(port_file: str, port: int) -> None:
    tmp = port_file + ".tmp"
    Path(tmp).write_text(str(port))
    os.replace(tmp, port_file)  # the parent never reads half a number


def _load_factory(import_path: str) -> Any:
    module_name, _, attr = import_path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'pkg.module:factory', got {import_path!r}")
    return getattr(importlib.import_module(module_name), attr)


def _serve_werkzeug(app: Any, host: str, port_file: str) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, 0, app, threaded=True)
    _write_port(port_file, server.server_port)
    server.serve_forever()


def _serve_gunicorn(factory: Any, args: list[Any], host: str, threads: int, port_file: str) -> None:
    from gunicorn.app.base import BaseApplication

    def when_ready(arbiter: Any) -> None:
        _write_port(port_file, arbiter.LISTENERS[0].sock.getsockname()[1])

    options = {
        "bind": [f"[{host}]:0" if ":" in host else f"{host}:0"],
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 3,
        "accesslog": "-",
        "errorlog": "-",
        "when_ready": when_ready,
        "control_socket_disable": True,  # a fixed per-user path: parallel servers would clash
    }

    class TestApplication(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return factory(*args)

    TestApplication().run()


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.servers")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--server", choices=("werkzeug", "gunicorn"), default="werkzeug")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("factory")
    parser.add_argument("args", nargs="?", default="[]")
    ns = parser.parse_args(argv)
    factory = _load_factory(ns.factory)
    args = json.loads(ns.args)
    if ns.server == "werkzeug":
        _serve_werkzeug(factory(*args), ns.host, ns.port_file)
    else:
        _serve_gunicorn(factory, args, ns.host, ns.threads, ns.port_file)


if __name__ == "__main__":
    _main(sys.argv[1:])

"""Server processes for the benchmark: the fast upstream, the pass-through proxy and the real
gateway (``inferpay gateway --config``), each on 127.0.0.1 on a port picked at run time,
each in a process group of its own, always stopped.

Also reads the CPU time a process tree has used (``/proc``), so the benchmark can say how many
CPU milliseconds each component spent per request. Never touches a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server process started here; ``stop()`` is idempotent."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.port = port
        self.log_path = log_path
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH")) if p)
        child_env["PYTHONUNBUFFERED"] = "1"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: stop() clears its workers with it
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str = "/health", timeout: float = 60.0) -> Server:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer {path} in {timeout} s:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2.0) as response:
                    if 200 <= response.status < 300:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        # Every worker must be up, not just the first: wait until the tree stops growing.
        time.sleep(1.0)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """This server's process and all its descendants (gunicorn master and workers)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                    todo.extend(int(c) for c in text.split())
        return found

    def worker_pids(self) -> list[int]:
        return [p for p in self.pids() if p != self.process.pid]

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the live processes of this server."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        # The group is this child's alone (start_new_session), so this reaches nothing else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_upstream(out: Path, workers: int = 1, threads: int = 16) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    return Server("upstream", argv, port, out / "upstream.log").wait_ready()


def start_passthrough(
    out: Path, config_for: Callable[[str], str], name: str = "passthrough", server: str = "gunicorn"
) -> Server:
    """The same gateway with payment switched off: ``inferpay gateway`` with ``config_for(pay_to)``
    (the benchmark's routes marked ``free = true``: ``bench.p1_gateway.gateway_config``), on a
    home and ledger of its own that no paid call touches."""
    from bench.common import new_ledger
    from gateway.server.home import Home

    home = Home(out / f"{name}-home")
    home.ensure()
    home.create_sealer_key()
    fixture = new_ledger(home.ledger_path, 0, sealer_key=bytes.fromhex(home.sealer_path.read_text()))
    fixture.ledger.store.close()
    return start_gateway(out, home.path, config_for(fixture.operator.address), name=name, server=server)


def start_gateway(out: Path, home: Path, config_text: str, name: str = "gateway", server: str = "gunicorn") -> Server:
    """``inferpay gateway --config`` exactly as an operator runs it; ``@PORT@`` in the config
    becomes the port picked here. ``name`` names its config and log (``<name>.toml``,
    ``<name>.log``), so several gateways can share one directory.

    ``server="granian"`` serves the same app from granian instead (the ``wsgi`` phase): its
    workers and threads taken from the config's ``workers`` and ``threads``."""
    port = free_port()
    config = out / f"{name}.toml"
    config.write_text(config_text.replace("@PORT@", str(port)))
    if server == "gunicorn":
        argv = [sys.executable, "-m", "inferpay_cli", "--home", str(home), "gateway", "--config", str(config)]
        return Server(name, argv, port, out / f"{name}.log").wait_ready()
    if server != "granian":
        raise ValueError(f"server must be gunicorn or granian, not {server!r}")
    import tomllib

    settings = tomllib.loads(config.read_text())["gateway"]
    metrics = out / f"{name}-metrics"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(settings["workers"]),
        "--blocking-threads",
        str(settings["threads"]),
        "--no-ws",
        "bench.granian_app:create",
    ]
    env = {"INFERPAY_BENCH_CONFIG": str(config), "INFERPAY_HOME": str(home), "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    return Server(name, argv, port, out / f"{name}.log", env=env).wait_ready()

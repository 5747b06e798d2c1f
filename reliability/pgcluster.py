"""A PostgreSQL cluster of the suite's own, so it may be killed: ``initdb`` into a temporary
directory, ``postgres`` on a free loopback port with trust authentication, SIGKILL and restart.

The server binaries (``initdb``, ``postgres``) are looked up on PATH, then in
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root: when the suite runs as root the
cluster's directory is given to the ``postgres`` user and both binaries run as that user (the
``user=`` of ``subprocess.Popen``); otherwise they run as whoever runs the suite.

``postgres`` is started directly (not through ``pg_ctl``) in a process group of its own, so a
kill reaches the postmaster and every backend at once, as a machine losing power would: no
shutdown checkpoint, and the next start runs crash recovery from the WAL. Nothing here touches a
process it did not start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.servers import free_port

HOST = "127.0.0.1"
READY_SECONDS = 60.0


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable() -> str | None:
    """None if a cluster can be made here, else why not."""
    for name in ("initdb", "postgres"):
        if find_binary(name) is None:
            return f"no {name} on PATH or in /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


class PgCluster:
    """One throwaway cluster in a temporary directory of its own: ``create()``, ``kill()``,
    ``start()``, ``stop()`` (which removes the directory)."""

    def __init__(self, *, database: str = "inferpay") -> None:
        # Directly under the system's temporary directory, not inside the run's (mode 0700, the
        # suite's user): the postgres user must be able to reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="inferpay-reliability-pg-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "sockets"
        self.log = self.directory / "postgres.log"
        self.database = database
        self.port = free_port(HOST)
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.starts = 0
        self._user: int | None = None
        self._group: int | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._user, self._group = entry.pw_uid, entry.pw_gid

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{self.database}"

    def create(self) -> None:
        """initdb (trust auth, no fsync during initdb only), start, and create the database."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self._user is not None:
            for path in (self.directory, self.sockets):
                os.chown(path, self._user, self._group or -1)
        made = subprocess.run(
            [find_binary("initdb") or "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
            + ["--no-sync", "--no-instructions"],
            capture_output=True,
            text=True,
            user=self._user,
            group=self._group,
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed ({made.returncode}): {made.stderr.strip()[-500:]}")
        self.start()
        with contextlib.closing(self.connect("postgres")) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def connect(self, database: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user="postgres",
            dbname=database or self.database,
            autocommit=True,
            connect_timeout=3,
        )

    def start(self) -> None:
        """Start the server (crash recovery first, if it was killed) and wait until it answers."""
        if self.alive():
            return
        log = open(self.log, "ab")  # noqa: SIM115  # handed to the child; closed when it is
        if self._user is not None:
            os.chown(self.log, self._user, self._group or -1)
        argv = [find_binary("postgres") or "postgres", "-D", str(self.data), "-p", str(self.port)]
        # Durable commits (fsync on, the default): what is acknowledged must survive the kill.
        argv += ["-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.sockets}"]
        argv += ["-c", "max_connections=200", "-c", "shared_buffers=32MB"]
        self.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches every backend
            user=self._user,
            group=self._group,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                with contextlib.closing(self.connect("postgres")) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {exc}\n{self.log_tail()}") from exc
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once: no shutdown, no checkpoint.

        Each backend is a session of its own (PostgreSQL's children call ``setsid``, so the
        postmaster can signal their groups): killing the postmaster's group alone would leave
        them running, and committing, until they notice their parent is gone."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.process.pid, signal.SIGSTOP)  # it forks no backend while they are listed
        everyone = [self.process.pid, *_children(self.process.pid)]
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        _wait_dead(everyone)
        self.process = None
        self.kills += 1

    def stop(self, *, remove: bool = True) -> None:
        """A fast shutdown (SIGINT), then the kill if it does not end; the directory removed."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
                self.process = None
            except subprocess.TimeoutExpired:
                self.kill()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PgCluster:
        self.create()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _stat(pid: str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after "pid (comm) ": state, ppid, pgrp, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) is not None and int(fields[1]) == parent:
            found.append(int(entry))
    return found


def _wait_dead(pids: list[int], timeout: float = 10.0) -> None:
    """Until none of ``pids`` is alive (a zombie counts as dead: nobody may reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [_stat(str(pid)) for pid in pids]
        if all(fields is None or fields[0] in ("Z", "X") for fields in states):
            return
        time.sleep(0.01)

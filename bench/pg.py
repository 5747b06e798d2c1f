"""PostgreSQL plumbing for the benchmark: a throwaway schema per run, what the server is, and
how much CPU it used.

Every PostgreSQL phase works in a schema of its own (``inferpay_bench_<random>``, named by the
``?schema=`` parameter the ledger's URLs take), created by the ledger on first open and dropped
here afterwards, whatever happened. The benchmark reaches past the ledger's store only for what
the store has no business offering: dropping a schema, reading the server's settings, and the
server's CPU time (``/proc``, for servers on this machine). Never touches another schema.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledger.storage.postgres_schema import is_postgres_url, parse_postgres_url

SCHEMA_PREFIX = "inferpay_bench_"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The server settings that decide what a commit costs and what it promises.
SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections")


def check_base_url(url: str) -> str:
    """The URL the benchmark makes its schemas under; refuse one that names a schema itself
    (the benchmark never writes into a schema it did not create)."""
    if not is_postgres_url(url):
        raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")
    if parse_postgres_url(url).schema is not None:
        raise ValueError("leave ?schema= out of the URL: every benchmark run makes (and drops) a schema of its own")
    return url


def with_schema(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


def _connect(base: str) -> Any:
    import psycopg  # only the PostgreSQL phases need it; the SQLite benchmark never imports it

    return psycopg.connect(parse_postgres_url(base).conninfo, autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def throwaway_schema(base: str) -> Iterator[str]:
    """A ledger URL naming a new, unique schema (the store creates it on first open); the schema
    and everything in it are dropped on exit."""
    schema = SCHEMA_PREFIX + secrets.token_hex(5)
    try:
        yield with_schema(base, schema)
    finally:
        with contextlib.closing(_connect(base)) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def server_info(base: str) -> dict[str, Any]:
    """Version and the commit-related settings, as the server reports them."""
    with contextlib.closing(_connect(base)) as conn:
        info: dict[str, Any] = {"version": conn.execute("SHOW server_version").fetchone()[0]}
        for name in SETTINGS:
            info[name] = conn.execute(f"SHOW {name}").fetchone()[0]
    info["database"] = parse_postgres_url(base).display
    info["local_server_pids_visible"] = bool(server_pids())
    return info


def server_pids() -> list[int]:
    """Processes on this machine named ``postgres`` (the server and its backends), if any."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                found.append(int(entry.name))
    return found


def server_cpu_seconds() -> float:
    """User + system CPU used so far by every live ``postgres`` process on this machine: the
    whole server, including work for anything else using it (0 for a remote server)."""
    total = 0.0
    for pid in server_pids():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total

"""Test helpers for ledger tests: a real ledger (SQLite in a temp dir, or PostgreSQL in a schema
of its own), keys, and signed messages.

Ledger-level tests sign with raw keys through ``ledger.crypto`` so they do not depend on the
wallets package; wallet tests live apart.

Backends: ``make_ledger(..., backend="postgres")`` creates a fresh schema in the database at
``$INFERPAY_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
``LedgerFixture.close()`` drops it. ``make_ledger`` without a backend uses
``$INFERPAY_TEST_BACKEND`` (default ``sqlite``), so any test module can be run against
PostgreSQL as a whole: ``INFERPAY_TEST_BACKEND=postgres pytest tests/ledger/test_ledger_model.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.clock import ms_to_s, s_to_ms, system_now_ms
from ledger.crypto import KeySigner, address_of, new_private_key, sign_digest
from ledger.encoding import signing_digest
from ledger.ledger import Ledger, TxResult
from ledger.storage import open_store
from ledger.storage.base import LedgerStore
from ledger.storage.postgres_schema import is_postgres_url, parse_postgres_url
from ledger.types import UPTO_PERMIT2_PROXY_ADDRESS, Address, Authorization, ChainInfo, Mint, Permit2Authorization

UNIT = 1_000_000  # one token in base units
BACKENDS = ("sqlite", "postgres")
POSTGRES_URL = os.environ.get("INFERPAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA_PREFIX = "inferpay_test_"

_backend_override: list[str] = []
_created_schemas: set[str] = set()
_postgres_check: list[str | None] = []


def default_backend() -> str:
    if _backend_override:
        return _backend_override[-1]
    return os.environ.get("INFERPAY_TEST_BACKEND", "sqlite")


@contextlib.contextmanager
def using_backend(backend: str) -> Iterator[None]:
    """``make_ledger`` without an explicit backend uses ``backend`` inside this block."""
    _backend_override.append(backend)
    try:
        yield
    finally:
        _backend_override.pop()


def postgres_unavailable() -> str | None:
    """None if the test PostgreSQL server answers, else why not (as a skip reason); checked once."""
    if not _postgres_check:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _postgres_check.append(None)
        except Exception as exc:  # any reason at all means: skip, saying why
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _postgres_check.append(f"PostgreSQL not reachable at {POSTGRES_URL}: {first}")
    return _postgres_check[0]


def new_postgres_url(base: str = POSTGRES_URL, **params: str) -> str:
    """A URL for a fresh, uniquely named schema (created on first open, dropped by ``drop_schema``)."""
    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    _created_schemas.add(schema)
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
    return f"{base}{'&' if '?' in base else '?'}{query}"


def _admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)


def drop_schema(url: str) -> None:
    schema = parse_postgres_url(url).schema
    assert schema is not None and schema.startswith(SCHEMA_PREFIX), url
    with _admin() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _created_schemas.discard(schema)
    _snapshot_queries.pop(schema, None)


def drop_leftover_schemas() -> None:
    """Drop every schema this process created and did not drop yet (run once at session end)."""
    if not _created_schemas or postgres_unavailable():
        return
    with _admin() as conn:
        for schema in sorted(_created_schemas):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _created_schemas.clear()


class FakeClock:
    """A settable clock in integer milliseconds (the ledger's ``MsClock``), so tests can move
    time without sleeping."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.now_ms = system_now_ms() if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.now_ms

    def now_s(self) -> int:
        """Whole seconds (what signed windows and expiries are written in)."""
        return ms_to_s(self())

    def advance(self, seconds: int) -> None:
        self.now_ms += s_to_ms(seconds)

    def set_s(self, seconds: int) -> None:
        """Move to the first millisecond of whole second ``seconds``."""
        self.now_ms = s_to_ms(seconds)


@dataclass
class Party:
    key: bytes
    address: Address

    @classmethod
    def new(cls) -> Party:
        key = new_private_key()
        return cls(key, address_of(key))


@dataclass
class LedgerFixture:
    path: Path | str  # the SQLite file, or the PostgreSQL URL (naming the fixture's own schema)
    ledger: Ledger
    operator: Party
    sealer_key: bytes
    clock: FakeClock
    parties: dict[str, Party] = field(default_factory=dict)
    backend: str = "sqlite"
    stores: list[LedgerStore] = field(default_factory=list)  # every store opened, closed by close()

    @property
    def chain(self) -> ChainInfo:
        return self.ledger.chain

    def party(self, name: str) -> Party:
        if name not in self.parties:
            self.parties[name] = Party.new()
        return self.parties[name]

    def mint(self, to: Address, value: int) -> TxResult:
        message = Mint(to, value, "0x" + secrets.token_hex(32))
        return self.ledger.mint(message, sign_digest(self.operator.key, signing_digest(self.chain, message)))

    def authorization(
        self,
        payer: Party,
        to: Address,
        value: int,
        *,
        ttl: int = 600,
        nonce: str | None = None,
        valid_after: int | None = None,
        chain: ChainInfo | None = None,
    ) -> tuple[Authorization, str]:
        now = self.clock.now_s()
        auth = Authorization(
            payer.address,
            to,
            value,
            now - 5 if valid_after is None else valid_after,
            now + ttl,
            nonce or "0x" + secrets.token_hex(32),
        )
        return auth, sign_digest(payer.key, signing_digest(chain or self.chain, auth))

    def permit2(
        self,
        payer: Party,
        to: Address,
        amount: int,
        *,
        ttl: int = 600,
        nonce: int | None = None,
        valid_after: int = 0,
        chain: ChainInfo | None = None,
        **fields: Any,
    ) -> tuple[Permit2Authorization, str]:
        """An x402 upto Permit2 authorization for this ledger (its token, the upto proxy as
        spender, its sealer as facilitator; validAfter 0 and a deadline ``ttl`` from now, as the
        official client makes them), signed by ``payer``; ``fields`` override any field."""
        chain = chain or self.chain
        values: dict[str, Any] = {
            "from_": payer.address,
            "token": chain.token_address,
            "amount": amount,
            "spender": UPTO_PERMIT2_PROXY_ADDRESS,
            "nonce": secrets.randbits(256) if nonce is None else nonce,
            "deadline": self.clock.now_s() + ttl,
            "to": to,
            "facilitator": chain.sealer,
            "valid_after": valid_after,
            **fields,
        }
        permit = Permit2Authorization(**values)
        return permit, sign_digest(payer.key, signing_digest(chain, permit))

    def transfer(self, payer: Party, to: Address, value: int, **kw: object) -> TxResult:
        auth, sig = self.authorization(payer, to, value, **kw)  # type: ignore[arg-type]
        return self.ledger.transfer(auth, sig)

    def open_store(self) -> LedgerStore:
        """Another store on the same ledger (another connection, or pool), closed by ``close()``."""
        store = open_store(self.path)
        self.stores.append(store)
        return store

    def reopen(self) -> Ledger:
        """A second Ledger on the same database (as another worker would have)."""
        return Ledger(self.open_store(), sealer=KeySigner(self.sealer_key), clock=self.clock)

    def close(self) -> None:
        """Close every store this fixture opened; a PostgreSQL fixture also drops its schema."""
        for store in [self.ledger.store, *self.stores]:
            store.close()
        self.stores.clear()
        if self.backend == "postgres":
            drop_schema(str(self.path))


def make_ledger(
    directory: Path, clock: FakeClock | None = None, chain_id: int = 4242, backend: str | None = None
) -> LedgerFixture:
    """A new ledger with an operator and a sealer: a SQLite file in ``directory``, or (backend
    "postgres") a fresh schema; ``backend`` defaults to ``default_backend()``."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown test backend {backend!r}: expected one of {BACKENDS}")
    clock = clock or FakeClock()
    operator = Party.new()
    sealer_key = new_private_key()
    target: Path | str = directory / "ledger.db" if backend == "sqlite" else new_postgres_url()
    ledger = Ledger.create(
        open_store(target), operator=operator.address, sealer=KeySigner(sealer_key), chain_id=chain_id, clock=clock
    )
    return LedgerFixture(target, ledger, operator, sealer_key, clock, backend=backend)


Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(target: LedgerFixture | Path | str) -> Snapshot:
    """Every row of every table of a ledger, tables by name and rows in full column order, on
    either backend: equal snapshots of one ledger mean nothing in it changed."""
    where = target.path if isinstance(target, LedgerFixture) else target
    if is_postgres_url(where):
        return _postgres_snapshot(str(where))
    conn = sqlite3.connect(where)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found = {}
        for table in tables:
            width = len(conn.execute(f'SELECT * FROM "{table}" LIMIT 0').description)
            order = ", ".join(str(i) for i in range(1, width + 1))
            found[table] = [_plain(r) for r in conn.execute(f'SELECT * FROM "{table}" ORDER BY {order}')]
        return found
    finally:
        conn.close()


def _postgres_snapshot(url: str) -> Snapshot:
    from psycopg import sql

    schema = parse_postgres_url(url).schema
    assert schema is not None, url
    conn = _snapshot_connection()
    if schema not in _snapshot_queries:  # the tables of a ledger schema never change under a test
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", [schema]
        ).fetchall()
        queries = []
        for (table,) in tables:
            name = sql.Identifier(schema, table)
            width = len(conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(name)).description or [])
            order = sql.SQL(", ").join(sql.Literal(i) for i in range(1, width + 1))
            queries.append((table, sql.SQL("SELECT * FROM {} ORDER BY {}").format(name, order)))
        _snapshot_queries[schema] = queries
    return {table: [_plain(r) for r in conn.execute(query).fetchall()] for table, query in _snapshot_queries[schema]}


_snapshot_queries: dict[str, list[tuple[str, Any]]] = {}
_snapshot_connections: list[Any] = []


def _snapshot_connection() -> Any:
    if not _snapshot_connections or _snapshot_connections[0].closed:
        _snapshot_connections[:] = [_admin()]
    return _snapshot_connections[0]


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview | bytearray) else v for v in row)


def dump(path: Path | str) -> list[str]:
    """Every row of every table, as text: equal dumps mean the ledger is unchanged. A SQLite
    file dumps as SQL (``iterdump``); a PostgreSQL URL as one line per row of ``snapshot``."""
    if is_postgres_url(path):
        return [f"{table}: {row!r}" for table, rows in snapshot(path).items() for row in rows]
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()

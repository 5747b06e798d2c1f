"""The PostgreSQL ledger's schema migrations and how a ``postgresql://`` URL is read.

Plain data and parsing only: no connection is made here and psycopg is not imported (only
``ledger.storage.postgres`` talks to the server). The tables mirror ``ledger.storage.sqlite`` column for
column, with amounts and times as BIGINT, text keys in the "C" collation (byte order, as SQLite
sorts, whatever the database's locale), and two additions PostgreSQL needs to keep the same
meaning under concurrency: ``seq_counter`` (see ``ledger.storage.postgres``: it hands out transaction
sequence numbers gap-free and in commit order) and insertion-order ``row_id`` columns so that
ties are listed in the order SQLite's rowids would give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ledger.errors import InvalidInput

# (name, SQL) in order; applied once each, recorded in schema_migrations. Never edit one that
# has shipped: add the next.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_ledger",
        """
        CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE supply (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            minted BIGINT NOT NULL CHECK (minted >= 0)
        );
        CREATE TABLE seq_counter (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_seq BIGINT NOT NULL CHECK (last_seq >= 0)
        );
        CREATE TABLE accounts (
            address TEXT COLLATE "C" PRIMARY KEY,
            available BIGINT NOT NULL DEFAULT 0 CHECK (available >= 0),
            held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0)
        );
        CREATE TABLE transactions (
            seq BIGINT PRIMARY KEY CHECK (seq > 0),
            tx_id TEXT COLLATE "C" NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            record TEXT NOT NULL,
            leaf_hash BYTEA NOT NULL,
            block_height BIGINT,
            accepted_at BIGINT NOT NULL
        );
        CREATE INDEX transactions_by_block ON transactions (block_height, seq);
        CREATE INDEX transactions_unsealed ON transactions (seq) WHERE block_height IS NULL;
        CREATE TABLE nonces (
            signer TEXT COLLATE "C" NOT NULL,
            nonce TEXT COLLATE "C" NOT NULL,
            tx_id TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (signer, nonce)
        );
        CREATE TABLE postings (
            address TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (address, seq)
        );
        CREATE TABLE allowances (
            allowance_id TEXT COLLATE "C" PRIMARY KEY,
            owner TEXT COLLATE "C" NOT NULL,
            spender TEXT COLLATE "C" NOT NULL,
            cap BIGINT NOT NULL CHECK (cap > 0),
            spent BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent <= cap),
            valid_before BIGINT NOT NULL
        );
        CREATE TABLE holds (
            hold_id TEXT COLLATE "C" PRIMARY KEY,
            payer TEXT COLLATE "C" NOT NULL,
            payee TEXT COLLATE "C" NOT NULL,
            amount BIGINT NOT NULL CHECK (amount > 0),
            expires_at BIGINT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'settle', 'void', 'expire')),
            captured BIGINT NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
            resolution_tx TEXT COLLATE "C",
            allowance_id TEXT COLLATE "C",
            row_id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
        );
        CREATE INDEX holds_open ON holds (status, expires_at, row_id);
        CREATE TABLE blocks (
            height BIGINT PRIMARY KEY CHECK (height >= 0),
            record TEXT NOT NULL,
            block_hash TEXT COLLATE "C" NOT NULL UNIQUE,
            frontier TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            key_hash TEXT COLLATE "C" PRIMARY KEY,
            key_prefix TEXT COLLATE "C" NOT NULL,
            allowance_id TEXT COLLATE "C" NOT NULL REFERENCES allowances (allowance_id),
            label TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT false,
            row_id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
        );
        CREATE INDEX api_keys_by_prefix ON api_keys (key_prefix);
        CREATE INDEX api_keys_by_allowance ON api_keys (allowance_id);
        INSERT INTO supply (id, minted) VALUES (1, 0);
        INSERT INTO seq_counter (id, last_seq) VALUES (1, 0);
        """,
    ),
    (
        "0002_checkpoints",
        """
        CREATE TABLE checkpoints (
            tree_size BIGINT PRIMARY KEY CHECK (tree_size >= 0),
            note TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        """,
    ),
    (
        "0003_facilitator_records",
        """
        CREATE TABLE facilitator_holds (
            payer TEXT COLLATE "C" NOT NULL,
            nonce TEXT COLLATE "C" NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('placing', 'placed', 'foreign')),
            hold_id TEXT COLLATE "C",
            claimed_at BIGINT NOT NULL,
            PRIMARY KEY (payer, nonce)
        );
        CREATE INDEX facilitator_holds_by_age ON facilitator_holds (claimed_at);
        CREATE TABLE facilitator_payment_ids (
            payment_id TEXT COLLATE "C" NOT NULL,
            operation TEXT NOT NULL CHECK (operation IN ('verify', 'settle')),
            request_digest TEXT COLLATE "C" NOT NULL,
            answer TEXT,
            claimed_at BIGINT NOT NULL,
            PRIMARY KEY (payment_id, operation)
        );
        CREATE INDEX facilitator_payment_ids_by_age ON facilitator_payment_ids (claimed_at);
        """,
    ),
    (
        # The compute pool (ledger.storage.sql_pool), as SQLite's m006_pool.
        "0004_pool",
        """
        ALTER TABLE supply ADD COLUMN redeemed BIGINT NOT NULL DEFAULT 0 CHECK (redeemed >= 0);
        CREATE TABLE providers (
            address TEXT COLLATE "C" PRIMARY KEY,
            registration_id TEXT COLLATE "C" NOT NULL,
            record TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'withdrawn')),
            registered_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE TABLE provider_approvals (
            address TEXT COLLATE "C" PRIMARY KEY,
            approved BOOLEAN NOT NULL,
            approval_tx TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE pool_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            fee_bps BIGINT NOT NULL CHECK (fee_bps >= 0 AND fee_bps <= 10000),
            flat_fee BIGINT NOT NULL CHECK (flat_fee >= 0),
            fee_id TEXT COLLATE "C" NOT NULL,
            version BIGINT NOT NULL CHECK (version >= 0)
        );
        INSERT INTO pool_state (id, fee_bps, flat_fee, fee_id, version)
            VALUES (1, 0, 0, '0x0000000000000000000000000000000000000000000000000000000000000000', 0);
        CREATE TABLE pool_earnings (
            address TEXT COLLATE "C" PRIMARY KEY,
            calls BIGINT NOT NULL CHECK (calls >= 0),
            earned BIGINT NOT NULL CHECK (earned >= 0),
            refunded BIGINT NOT NULL CHECK (refunded >= 0),
            redeemed BIGINT NOT NULL CHECK (redeemed >= 0)
        );
        CREATE TABLE pool_operator_fees (
            payee TEXT COLLATE "C" PRIMARY KEY,
            fees BIGINT NOT NULL CHECK (fees >= 0)
        );
        CREATE TABLE refunds_by_settle (
            settle_id TEXT COLLATE "C" NOT NULL,
            address TEXT COLLATE "C" NOT NULL,
            credited BIGINT NOT NULL CHECK (credited > 0),
            refunded BIGINT NOT NULL CHECK (refunded > 0 AND refunded <= credited),
            PRIMARY KEY (settle_id, address)
        );
        """,
    ),
)

SCHEMES = ("postgresql", "postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Query parameters that are ours, not libpq's: removed before the URL reaches libpq.
_OWN_PARAMETERS = ("schema", "pool_size", "pool_timeout")


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.split("://", 1)[0].lower() in SCHEMES and "://" in target


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed ``postgresql://user[:password]@host[:port]/db?schema=NAME&...`` URL."""

    conninfo: str  # what libpq gets: the URL without our own parameters
    display: str  # the URL as it is safe to print: never the password
    schema: str | None  # set search_path to it on every connection, creating it if missing
    pool_size: int  # most connections one process keeps open
    pool_timeout: float  # seconds an operation waits for a connection before StorageUnavailable
    has_connect_timeout: bool


def parse_postgres_url(url: str) -> PostgresTarget:
    """Read a PostgreSQL URL; raise ``InvalidInput`` naming what is wrong (never echoing a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # urlsplit checks the port only when asked
    except ValueError as exc:
        raise InvalidInput(f"bad PostgreSQL URL: {exc}") from exc
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInput(f"not a PostgreSQL URL (expected postgresql://...): {parts.scheme}://...")
    user = unquote(parts.username) + "@" if parts.username else ""
    host = parts.hostname or ""
    netloc_shown = f"{user}{host}{f':{port}' if port is not None else ''}"
    params = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in params if k in _OWN_PARAMETERS}
    passed = [(k, v) for k, v in params if k not in _OWN_PARAMETERS]
    shown_query = urlencode([(k, v) for k, v in params if k not in ("password", "passfile")])
    display = urlunsplit(("postgresql", netloc_shown, parts.path, shown_query, ""))
    schema = own.get("schema") or None
    if schema is not None and not _IDENTIFIER.fullmatch(schema):
        raise InvalidInput(
            f"bad schema name {schema!r} in {display}: use letters, digits and _ (not first), at most 63"
        )
    pool_size = _number(own.get("pool_size", "10"), "pool_size", display, int, 1, 1000)
    pool_timeout = _number(own.get("pool_timeout", "5"), "pool_timeout", display, float, 0.1, 3600)
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passed), ""))
    return PostgresTarget(
        conninfo, display, schema, int(pool_size), float(pool_timeout), any(k == "connect_timeout" for k, _ in passed)
    )


def _number(text: str, name: str, display: str, kind: type[int] | type[float], low: float, high: float) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise InvalidInput(f"bad {name} {text!r} in {display}: expected a number from {low:g} to {high:g}")
    return value

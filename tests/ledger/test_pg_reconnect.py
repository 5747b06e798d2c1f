"""The PostgreSQL store's pool reconnects at a steady pace after an outage, not with
psycopg_pool's doubling delay (1, 2, 4, 8 s ...), which kept a gateway answering 503 for seconds
after its database was back (docs/reliability.md, "Recovery after a PostgreSQL restart").
The override rides on a private method of psycopg_pool, so these tests say when an upgrade
would silently drop it."""

from __future__ import annotations

import inspect

from psycopg_pool import ConnectionPool

from ledger.storage.postgres import _RECONNECT_EVERY_S, _Pool, _SteadyReconnect


def test_the_reconnection_delay_never_grows_past_the_steady_pace() -> None:
    attempt = _SteadyReconnect(timeout=300.0)
    delays = []
    for now in range(10):
        attempt.update_delay(float(now))
        delays.append(attempt.delay)
    assert max(delays) <= _RECONNECT_EVERY_S
    assert delays[-1] > 0  # still trying, not given up


def test_the_pool_hook_the_override_replaces_still_exists_with_its_signature() -> None:
    parameters = list(inspect.signature(ConnectionPool._add_connection).parameters)
    assert parameters[:3] == ["self", "attempt", "growing"]
    assert _Pool._add_connection is not ConnectionPool._add_connection

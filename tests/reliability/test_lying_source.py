"""``inferpay mirror`` against ``reliability.tlog_attacks.LyingLedger``: a source whose tiles or
entry bundles are truncated or altered is refused (exit 1, one line naming the code), nothing
of it is kept, and with the lie switched off the same mirror carries on to the gateway's head."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.storage.sqlite import SQLiteStore
from ledger.tlog.note import NoteSigner
from reliability.tlog_attacks import LyingLedger
from tests.support.gateway import GatewayEnv, start_gateway_env
from tests.support.mirror import pay, published, run_mirror, stderr_line


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayEnv]:
    with start_gateway_env(Path(tmp_path_factory.mktemp("gw-lying-source"))) as started:
        pay(started, 3)
        started.wait_quiet()
        yield started


@pytest.fixture(scope="module")
def liar(env: GatewayEnv) -> Iterator[LyingLedger]:
    made = LyingLedger(env.url, NoteSigner.from_skey((env.home / "checkpoint.key").read_text().strip()))
    yield made
    made.close()


@pytest.mark.parametrize(
    ("lie", "code"),
    [
        ("tile_truncated", "malformed_tile"),
        ("tile_altered", "history_rewritten"),
        ("entries_truncated", "malformed_tile"),
        ("entry_altered", "history_rewritten"),
    ],
)
def test_a_mirror_refuses_altered_tiles_and_recovers(
    env: GatewayEnv, liar: LyingLedger, tmp_path: Path, lie: str, code: str
) -> None:
    home = tmp_path / "mirror"
    assert run_mirror(liar.url, home).returncode == 0
    pay(env, 2)
    published(env)
    liar.lie = lie
    try:
        refused = run_mirror(liar.url, home)
    finally:
        liar.lie = None
    assert liar.told[lie] > 0
    assert refused.returncode == 1, refused.stderr
    assert stderr_line(refused).endswith(f"[{code}]")
    assert run_mirror(liar.url, home).returncode == 0
    store = SQLiteStore(home / "ledger.db")
    try:
        assert store.head().to_dict() == env.ledger.head().to_dict()
    finally:
        store.close()

"""The home's JSON snapshots (pool health, witness status): whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.server.snapshots import read_snapshot, write_snapshot


def test_a_snapshot_reads_back_and_a_missing_or_torn_one_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_snapshot(path) is None
    write_snapshot(path, {"witnesses": [{"name": "w", "size": 3}]})
    assert read_snapshot(path) == {"witnesses": [{"name": "w", "size": 3}]}
    path.write_text('{"witnesses": [')  # what a reader must never take for a snapshot
    assert read_snapshot(path) is None
    path.write_text("[1, 2]")
    assert read_snapshot(path) is None


def test_a_write_on_a_full_disk_keeps_the_old_snapshot_and_leaves_no_temporary() -> None:
    from reliability.diskfull import Tmpfs, unavailable

    if (why := unavailable()) is not None:
        pytest.skip(f"cannot mount a tmpfs here: {why}")
    with Tmpfs("1m") as disk:
        path = disk.path / "status.json"
        write_snapshot(path, {"n": 1})
        disk.fill()
        try:
            write_snapshot(path, {"n": 2, "pad": "x" * 65536})  # logged, not raised
        finally:
            disk.release()
        assert read_snapshot(path) == {"n": 1}
        assert sorted(p.name for p in disk.path.iterdir()) == ["status.json"]

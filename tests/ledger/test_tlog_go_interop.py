"""Our transparency-log bytes checked by Go's reference code (golang.org/x/mod/sumdb/note and
sumdb/tlog, from Debian's golang-golang-x-mod-dev): signed checkpoints with cosignatures
(note.Open), tlog-proofs (tlog.CheckRecord), consistency proofs (tlog.CheckTree) and tiles
(tlog.TileHashReader, which authenticates them against the root). The Go program,
tests/support/go_tlog/main.go, is built once per session, offline (GOPATH mode, GOPROXY=off);
the tests are skipped, saying why, where Go or the package is missing (.ci/run installs both)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger import merkle
from ledger.tlog.checkpoint import Checkpoint
from ledger.tlog.note import Note, format_note
from ledger.tlog.proof import format_tlog_proof
from ledger.tlog.text import b64encode
from ledger.tlog.tiles import TILE_WIDTH, new_tiles, tile_hashes
from tests.ledger.tlog_support import MemoryLog, witness


def run(binary: Path, *args: str | Path, ok: bool = True) -> Any:
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=60)
    if not ok:
        assert done.returncode == 1 and done.stderr.startswith("FAIL:"), (done.stdout, done.stderr)
        return done.stderr
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def vkey_args(*vkeys: str) -> list[str]:
    return [arg for vkey in vkeys for arg in ("-vkey", vkey)]


def a_log(count: int) -> MemoryLog:
    log = MemoryLog()
    log.append(*(b"inferpay entry %d" % i for i in range(count)))
    return log


def test_go_opens_our_signed_and_cosigned_checkpoints(go_tlog: Path, tmp_path: Path) -> None:
    log, w1, w2 = a_log(13), witness("go1"), witness("go2")
    signed = write(tmp_path / "note", log.signed(None, w1, w2, timestamp_s=1_712_345_678))
    out = run(go_tlog, "note", "-note", signed, *vkey_args(log.signer.vkey, w1.vkey, w2.vkey))
    assert out["verified"] == [f"{k.name}+{k.key_id.hex()}" for k in (log.signer, w1, w2)]
    assert out["cosignature_times"] == {w1.name: 1_712_345_678, w2.name: 1_712_345_678}
    assert out["text"] == log.checkpoint().body().decode()
    # Keys Go was not given are unverified, not errors; its checkpoint parse agrees with ours.
    only_log = run(go_tlog, "note", "-note", signed, *vkey_args(log.signer.vkey))
    assert only_log["unverified"] == 2
    cp = run(go_tlog, "checkpoint", "-note", signed, *vkey_args(log.signer.vkey))
    assert (cp["origin"], cp["size"], cp["root"]) == (log.origin, 13, b64encode(log.checkpoint().root_hash))


def test_go_refuses_what_we_tampered(go_tlog: Path, tmp_path: Path) -> None:
    """The Go side is not vacuous: a flipped byte of our note or a cosignature fails there too."""
    log, w = a_log(4), witness("go3")
    signed = log.signed(None, w)
    body_flip = signed.replace(b"\n4\n", b"\n5\n", 1)
    run(go_tlog, "note", "-note", write(tmp_path / "a", body_flip), *vkey_args(log.signer.vkey), ok=False)
    lines = signed.decode().splitlines(keepends=True)
    cosig = lines[-1]
    broken = cosig[:-6] + ("A" if cosig[-6] != "A" else "B") + cosig[-5:]
    tampered = "".join(lines[:-1]) + broken
    assert run(go_tlog, "note", "-note", write(tmp_path / "b", tampered.encode()), *vkey_args(log.signer.vkey))
    run(go_tlog, "note", "-note", write(tmp_path / "c", tampered.encode()), *vkey_args(w.vkey), ok=False)


@pytest.mark.parametrize("size", [1, 2, 7, 256, 300])
def test_go_checks_our_tlog_proofs(go_tlog: Path, tmp_path: Path, size: int) -> None:
    log, w = a_log(size), witness("go4")
    for index in sorted({0, size // 2, size - 1}):
        proof = write(tmp_path / f"proof{index}", format_tlog_proof(log.proof(index, None, w)))
        entry = write(tmp_path / f"entry{index}", log.entries[index])
        out = run(go_tlog, "inclusion", "-proof", proof, "-entry", entry, *vkey_args(log.signer.vkey))
        assert (out["index"], out["size"]) == (index, size)
    wrong = write(tmp_path / "wrong", b"not the entry")
    run(go_tlog, "inclusion", "-proof", proof, "-entry", wrong, *vkey_args(log.signer.vkey), ok=False)


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 7), (4, 8), (6, 6), (100, 257), (256, 1000), (1, 5)])
def test_go_checks_our_consistency_proofs(go_tlog: Path, tmp_path: Path, old: int, new: int) -> None:
    log = a_log(new)
    proof = merkle.consistency_proof(log.leaves, old)
    hashes = write(tmp_path / "hashes", "".join(b64encode(h) + "\n" for h in proof).encode())
    old_note, new_note = write(tmp_path / "old", log.signed(old)), write(tmp_path / "new", log.signed(new))
    out = run(
        go_tlog, "consistency", "-old", old_note, "-new", new_note, "-hashes", hashes, *vkey_args(log.signer.vkey)
    )
    assert (out["old"], out["new"]) == (old, new)
    if old not in (0, new):
        # A checkpoint that rewrote history: the same old size, another root.
        forked = MemoryLog(entries=[b"forged", *log.entries[1:]], signer=log.signer)
        fork_note = write(tmp_path / "fork", forked.signed(old))
        run(
            go_tlog,
            "consistency",
            "-old",
            fork_note,
            "-new",
            new_note,
            "-hashes",
            hashes,
            *vkey_args(log.signer.vkey),
            ok=False,
        )


def write_tiles(root: Path, hashes: Sequence[bytes]) -> None:
    for tile in new_tiles(0, len(hashes)):
        assert tile.level is not None
        span = TILE_WIDTH**tile.level
        start = tile.index * TILE_WIDTH * span
        data = tile_hashes(tile.level, tile.index, tile.width, hashes[start : start + tile.hash_count * span])
        path = root / tile.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.mark.parametrize("size", [1, 255, 256, 257, 1000, 65_537])
def test_go_authenticates_our_tiles_and_proves_from_them(go_tlog: Path, tmp_path: Path, size: int) -> None:
    hashes = [merkle.leaf_hash(b"tile entry %d" % i) for i in range(size)]
    write_tiles(tmp_path, hashes)
    root = merkle.merkle_root(hashes)
    index = size * 2 // 3
    out = run(go_tlog, "tiles", "-dir", tmp_path, "-size", str(size), "-root", b64encode(root), "-index", str(index))
    assert out["root"] == b64encode(root)
    assert (out["inclusion"] or []) == [b64encode(h) for h in merkle.inclusion_proof(hashes, index)]
    # One flipped byte in the rightmost level-0 tile and Go refuses the tiles.
    level0 = sorted((tmp_path / "tile" / "0").rglob("*"), key=lambda p: (len(str(p)), str(p)))[-1]
    data = bytearray(level0.read_bytes())
    data[0] ^= 1
    level0.write_bytes(bytes(data))
    run(
        go_tlog,
        "tiles",
        "-dir",
        tmp_path,
        "-size",
        str(size),
        "-root",
        b64encode(root),
        "-index",
        str(size - 1),
        ok=False,
    )


def test_go_reads_a_checkpoint_with_extensions(go_tlog: Path, tmp_path: Path) -> None:
    log = a_log(3)
    body = Checkpoint(log.origin, 3, log.checkpoint().root_hash, ("inferpay-height 7",)).body()
    signed = write(tmp_path / "note", format_note(Note(body, (log.signer.sign(body),))))
    assert run(go_tlog, "checkpoint", "-note", signed, *vkey_args(log.signer.vkey))["size"] == 3

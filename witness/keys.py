"""The witness's cosignature/v1 key: one skey line in a file of mode 0600.

``load_or_create_key`` makes the key on first start (mode 0600, written and fsynced, then
linked into place, so two starting processes can never hold two keys) and refuses
a file that others may read or whose key name is not the configured one. The key never
leaves this module as text except through ``CosignatureSigner.skey``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ledger.errors import MalformedNote, WitnessConfigError
from ledger.tlog.cosignature import CosignatureSigner


def load_key(path: Path, name: str) -> CosignatureSigner:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise WitnessConfigError(f"no witness key at {path} (inferpay witness init makes one)") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise WitnessConfigError(f"witness key {path} is readable by others (mode {stat.S_IMODE(mode):o}; chmod 600)")
    try:
        signer = CosignatureSigner.from_skey(path.read_text(encoding="ascii").strip())
    except (MalformedNote, UnicodeDecodeError) as exc:
        raise WitnessConfigError(f"witness key {path} is not a cosignature/v1 skey") from exc
    if signer.name != name:
        raise WitnessConfigError(f"witness key {path} is for {signer.name!r}, not the configured name {name!r}")
    return signer


def load_or_create_key(path: Path, name: str) -> tuple[CosignatureSigner, bool]:
    """The key at ``path``, made first if there is none; and whether it was made just now.

    The new key is written and fsynced under a temporary name, then linked into place, which
    fails if a key appeared meanwhile: a reader never sees half a key, and two starting
    processes end with the same one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return load_key(path, name), False
    signer = CosignatureSigner.generate(name)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (signer.skey + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
        made = True
    except FileExistsError:
        made = False
    finally:
        os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the name survives a crash too, not only the bytes
    finally:
        os.close(directory)
    return load_key(path, name), made

"""Small JSON files a gateway process writes into its home for other programs to read
(``inferpay info``): the pool's health figures, the witnesses' last answers. Written whole or
not at all (a temporary file renamed over the old one), read as "what was last written, or
None"."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("inferpay.snapshots")


def write_snapshot(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically; a failure (a full disk, say) is logged, the old
    file stays, and no temporary file is left behind. Callers that write from several threads
    serialize themselves: the temporary's name is per process."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)  # atomic: a reader sees one whole file
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

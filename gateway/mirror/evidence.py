"""What a mirror keeps when its source contradicts what the log signed: one file per finding in
the mirror's home, then ``HistoryRewritten`` naming it.

A file holds the signed things the finding rests on, so anyone can check it without the mirror:
the checkpoint note the mirror was syncing to (verifiable with the pinned vkey it names), the
sealer-signed block(s) concerned, and each entry that is not what they commit to, with the
bytes the source served, their leaf hash and the leaf the source's own tiles (or the mirror's
copy) hold. Two checkpoints that cannot both be true are kept by ``CheckpointTracker`` instead
(both notes in one file), in the same directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import merkle
from ledger.errors import HistoryRewritten
from ledger.types import SignedBlock

KIND = "inferpay-mirror-evidence"


@dataclass(frozen=True)
class BadEntry:
    index: int
    served: bytes  # the entry as the source served it
    expected_leaf: bytes | None  # what the tile, or the mirror's own copy, holds for it
    where: str  # "tile" or "mirror"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "served": base64.b64encode(self.served).decode(),
            "servedLeafHash": "0x" + merkle.leaf_hash(self.served).hex(),
            "expectedLeafHash": None if self.expected_leaf is None else "0x" + self.expected_leaf.hex(),
            "expectedFrom": self.where,
        }


@dataclass(frozen=True)
class Finding:
    reason: str
    source: str
    vkey: str
    checkpoint_note: bytes | None = None
    blocks: Sequence[SignedBlock] = ()
    entries: Sequence[BadEntry] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "reason": self.reason,
            "source": self.source,
            "vkey": self.vkey,
            "checkpoint": None if self.checkpoint_note is None else self.checkpoint_note.decode("utf-8", "replace"),
            "blocks": [b.to_dict() for b in self.blocks],
            "entries": [e.to_dict() for e in self.entries],
            **self.details,
        }


def keep(directory: Path, finding: Finding) -> HistoryRewritten:
    """Write ``finding`` to a new evidence file in ``directory``; the error to raise, naming it."""
    slug = hashlib.sha256(finding.vkey.encode()).hexdigest()[:16]
    path = directory / f"evidence-{slug}-{time.time_ns()}.json"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(finding.to_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    where: dict[str, Any] = {"evidence": str(path)}
    if finding.entries:
        where["index"] = finding.entries[0].index
    if finding.blocks:
        where["height"] = finding.blocks[-1].header.height
    return HistoryRewritten(f"{finding.source}: {finding.reason}", **where)

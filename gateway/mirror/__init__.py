"""Mirrors: follow a ledger's transparency log over its ledger API, keep a verified copy in a
local ledger of one's own, and serve the same read API from it (``inferpay mirror``).

What is trusted, and what is checked:

- Trusted once: the source's checkpoint key (``--vkey``, or on first use the one the source
  names), pinned in the mirror's home (``source.vkey``) and never asked for again; and, on the
  first run, the chain identity the source describes, which is then checked as far as it can
  be: the genesis block must commit to it and be signed by its sealer, and, when the log's
  origin is the default one (it carries the genesis hash), be the genesis the origin names.
  From then on the mirror's own ledger holds the chain identity.
- Checked, every checkpoint: its signature under the pinned key, its origin, and its
  consistency with the newest one seen before (``CheckpointTracker`` in the home: a second
  history is refused and both notes kept as evidence).
- Checked, every entry: it is the canonical bytes of one transaction; it hashes to the leaf the
  source's level-0 tile holds; its block is signed by the chain's sealer, links to the previous
  block and has exactly these leaves under its merkle root; the transaction is properly signed,
  and the mirror's own store accepts it by the ledger's rules (nonces once, balances never
  negative, holds resolved once), at the position it has in the log; the log tree regrown with
  it has the block's root. This is import's replay (``ledger.replay``), block by block.
- Checked, every pass: the mirror's head is the checkpoint (same size, same root), and the
  source's checkpoint tiles hash to that root.

The source's JSON API is used only for block headers (signed) and the chain identity (first
run); entries come from the tiles API, so what is replayed is exactly what the log commits to.
Anything that contradicts a signature stops the mirror with ``HistoryRewritten`` (or
``InconsistentCheckpoints``) and an evidence file in the home. Unsealed transactions are never
mirrored: the source's log holds sealed history only.
"""

from gateway.mirror.follow import Mirror, SyncResult, locked_home, pinned_vkey
from gateway.mirror.source import Source

__all__ = ["Mirror", "Source", "SyncResult", "locked_home", "pinned_vkey"]

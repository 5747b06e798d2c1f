"""An audit worker process: ``python -m ledger.audit.worker CHAIN_JSON INDEPENDENT``.

Started by ``ledger.audit.precheck`` as a fresh interpreter. It reads pickled lists of stored
records on stdin and writes the stateless checks of each list back on stdout, until EOF. It is a
module of its own, never imported by the auditor, so ``-m`` runs it exactly once.
"""

from __future__ import annotations

import json
import pickle
import sys

from ledger.audit.precheck import check_chunk
from ledger.types import ChainInfo


def serve(chain: ChainInfo, independent: bool) -> None:
    """A worker's life: a pickled list of records in, a pickled list of results out, until EOF."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            records = pickle.load(source)
        except EOFError:
            return
        pickle.dump(check_chunk(chain, independent, records), sink, protocol=pickle.HIGHEST_PROTOCOL)
        sink.flush()


if __name__ == "__main__":
    serve(ChainInfo.from_dict(json.loads(sys.argv[1])), sys.argv[2] == "1")

"""A remote node's chain, read over its public ledger API, for ``inferpay verify --node URL``.

It downloads blocks and their transactions page by page and hands them to the same auditor
that checks a local database, so a remote ledger is verified independently: every signature,
id, Merkle root, link and balance rule is recomputed here. Only sealed history is visible
remotely, so the database-side comparisons (stored balances, nonce table) are not made.
Must not import Flask.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from ledger.encoding import leaf_hash
from ledger.errors import InferpayError, MalformedRecord, NotFound, StorageUnavailable
from ledger.storage.base import RawTx
from ledger.types import ChainInfo, Transaction

PAGE = 200


class RemoteChain:
    def __init__(self, node_url: str, session: requests.Session | None = None, timeout: float = 30.0) -> None:
        self.base = node_url.rstrip("/")
        if not self.base.endswith("/ledger"):
            self.base += "/ledger"
        self.session = session or requests.Session()
        self.timeout = timeout
        # The chain grows while it is read: fix the head once, and read up to it only.
        self.head_height = int(self._get("/head")["header"]["height"])

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self.session.get(self.base + path, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise StorageUnavailable(f"cannot reach {self.base}: {type(exc).__name__}") from exc
        if response.status_code == 404:
            raise NotFound(f"{self.base}{path} not found")
        if response.status_code != 200:
            raise StorageUnavailable(f"{self.base}{path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedRecord(f"{self.base}{path} did not answer JSON") from exc

    def chain_info(self) -> ChainInfo:
        info = self._get("/info")
        if not isinstance(info, dict):
            raise MalformedRecord("/ledger/info is not an object")
        return ChainInfo.from_dict(
            {k: info.get(k) for k in ("chainId", "tokenAddress", "operator", "sealer", "name", "version")}
        )

    def iter_raw_blocks(self) -> Iterator[tuple[int, str]]:
        start = 0
        while start <= self.head_height:
            page = self._get("/blocks", **{"from": start, "limit": min(PAGE, self.head_height + 1 - start)})
            blocks = page.get("blocks", []) if isinstance(page, dict) else []
            if not blocks:
                return
            for block in blocks:
                yield int(block["header"]["height"]), json.dumps(block)
            start = int(blocks[-1]["header"]["height"]) + 1

    def iter_raw_transactions(self, after_seq: int = 0, batch: int = 2000) -> Iterator[RawTx]:
        for height in range(self.head_height + 1):
            try:
                found = self._get(f"/blocks/{height}")
            except NotFound:
                continue  # the auditor reports the missing block from the block list
            for entry in found.get("transactions", []):
                record = entry["transaction"]
                try:
                    leaf = leaf_hash(Transaction.from_dict(record))
                except InferpayError:
                    leaf = b"\0" * 32  # the auditor reports the record itself
                yield RawTx(int(entry["seq"]), str(entry["txId"]), json.dumps(record), leaf, entry["blockHeight"])

"""The witness's configuration: one TOML file with a ``[witness]`` table and its logs.

    [witness]
    name = "witness.example/w1"      # its key name (cosignature lines say it)
    key_file = "witness.key"         # its skey, mode 0600; made on first start (relative: to this file)
    db_path = "witness.db"           # its state, SQLite (relative: to this file)
    listen = "127.0.0.1:8404"        # host:port ("[::1]:8404" for IPv6)
    # workers = 1, threads = 8

    [[witness.logs]]
    origin = "inferpay.example/log"  # the checkpoint origin line; the vkey's name must be it
    vkey = "inferpay.example/log+1234abcd+A..."

Unknown keys, missing keys and bad values stop the witness at start-up with a
``WitnessConfigError`` naming the key. It must never open the key file or the database.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import MalformedNote, WitnessConfigError
from ledger.tlog.note import NoteVerifier, check_key_name

_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})")
_WITNESS_KEYS = {"name", "key_file", "db_path", "listen", "workers", "threads", "logs"}
_LOG_KEYS = {"origin", "vkey"}


@dataclass(frozen=True)
class LogConfig:
    origin: str
    vkey: str

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_vkey(self.vkey)


@dataclass(frozen=True)
class WitnessConfig:
    name: str
    key_file: Path
    db_path: Path
    host: str
    port: int
    logs: tuple[LogConfig, ...]
    workers: int = 1
    threads: int = 8

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (the test harness passes configs to a server process as JSON)."""
        return {
            "name": self.name,
            "key_file": str(self.key_file),
            "db_path": str(self.db_path),
            "listen": f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}",
            "workers": self.workers,
            "threads": self.threads,
            "logs": [{"origin": log.origin, "vkey": log.vkey} for log in self.logs],
        }

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], base: Path | None = None) -> WitnessConfig:
        return parse_witness_table(table, base or Path.cwd())


def load_witness_config(path: str | Path) -> WitnessConfig:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise WitnessConfigError(f"no witness config file at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WitnessConfigError(f"{path} is not valid TOML: {exc}") from exc
    extra = set(document) - {"witness"}
    if extra or "witness" not in document:
        raise WitnessConfigError(f"{path}: a witness config has one [witness] table (found {sorted(document)})")
    return parse_witness_table(document["witness"], path.resolve().parent)


def parse_witness_table(table: Mapping[str, Any], base: Path) -> WitnessConfig:
    if not isinstance(table, Mapping):
        raise WitnessConfigError("[witness] is a table")
    unknown = set(table) - _WITNESS_KEYS
    if unknown:
        raise WitnessConfigError(f"unknown [witness] keys: {', '.join(sorted(unknown))}")
    name = _string(table, "name")
    try:
        check_key_name(name, MalformedNote)
    except MalformedNote as exc:
        raise WitnessConfigError(f"[witness] name: {exc.message}") from exc
    listen = _string(table, "listen")
    match = _LISTEN.fullmatch(listen)
    if match is None or not 0 <= int(match["port"]) <= 65535:
        raise WitnessConfigError(f"[witness] listen {listen!r} is not host:port")
    logs = table.get("logs", [])
    if not isinstance(logs, list) or not logs:
        raise WitnessConfigError("[witness] needs at least one [[witness.logs]] table")
    parsed_logs = tuple(_log(entry, number) for number, entry in enumerate(logs, start=1))
    origins = [log.origin for log in parsed_logs]
    if len(set(origins)) != len(origins):
        raise WitnessConfigError("[[witness.logs]]: each origin once")
    return WitnessConfig(
        name=name,
        key_file=base / _string(table, "key_file"),
        db_path=base / _string(table, "db_path"),
        host=match["v6"] or match["host"],
        port=int(match["port"]),
        logs=parsed_logs,
        workers=_count(table, "workers", 1),
        threads=_count(table, "threads", 8),
    )


def _log(entry: object, number: int) -> LogConfig:
    if not isinstance(entry, Mapping):
        raise WitnessConfigError(f"[[witness.logs]] #{number} is a table")
    unknown = set(entry) - _LOG_KEYS
    if unknown:
        raise WitnessConfigError(f"[[witness.logs]] #{number}: unknown keys {', '.join(sorted(unknown))}")
    log = LogConfig(_string(entry, "origin", f"[[witness.logs]] #{number}"), _string(entry, "vkey", f"log {number}"))
    try:
        verifier = log.verifier
    except MalformedNote as exc:
        raise WitnessConfigError(f"[[witness.logs]] #{number} vkey: {exc.message}") from exc
    if verifier.name != log.origin:
        # tlog-policy: a log's key name is its origin; a key of another name cannot speak for it.
        raise WitnessConfigError(f"[[witness.logs]] #{number}: the vkey's name {verifier.name!r} is not the origin")
    return log


def _string(table: Mapping[str, Any], key: str, where: str = "[witness]") -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise WitnessConfigError(f"{where} {key} is a non-empty string")
    return value


def _count(table: Mapping[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
        raise WitnessConfigError(f"[witness] {key} is an integer from 1 to 64")
    return value

"""The ledger's own EIP-55 addresses (``ledger.addresses``) against eth_utils', which they replace
on the ledger's import path, and the start-up cost they remove (an audit worker never imports
eth_utils, nor pydantic through it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import eth_utils
from hypothesis import given
from hypothesis import strategies as st

from ledger.addresses import is_checksum_address, is_hex_address, to_checksum_address

ROOT = Path(__file__).resolve().parents[2]
hex_bodies = st.text(alphabet="0123456789abcdefABCDEF", min_size=40, max_size=40)


@given(st.binary(min_size=20, max_size=20))
def test_raw_bytes_checksum_as_eth_utils_does(raw: bytes) -> None:
    assert to_checksum_address(raw) == eth_utils.to_checksum_address(raw)


@given(hex_bodies, st.sampled_from(["0x", "0X", ""]))
def test_hex_text_checksums_and_checks_as_eth_utils_does(body: str, prefix: str) -> None:
    text = prefix + body
    assert is_hex_address(text) == eth_utils.is_hex_address(text)
    assert to_checksum_address(text) == eth_utils.to_checksum_address(text)
    assert is_checksum_address(text) == eth_utils.is_checksum_address(text)
    checksummed = to_checksum_address(text)
    assert is_checksum_address(checksummed) and eth_utils.is_checksum_address(checksummed)


@given(st.one_of(st.text(max_size=44), st.integers(), st.none(), st.binary(max_size=44)))
def test_anything_else_is_no_hex_address(value: object) -> None:
    assert is_hex_address(value) == eth_utils.is_hex_address(value)
    assert is_checksum_address(value) == eth_utils.is_checksum_address(value)


def test_an_audit_worker_starts_without_eth_utils_or_pydantic() -> None:
    code = "import sys, ledger.audit.worker; print(sorted({'eth_utils', 'pydantic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

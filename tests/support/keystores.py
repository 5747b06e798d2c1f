"""The key and password the wallet tests encrypt, the scrypt work factor they use, and the Web3
v3 keystore vector (tests/vectors/web3-keystore-v3-scrypt.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
PASSWORD = "correct horse battery staple"
FAST_N = 1024  # INFERPAY_SCRYPT_N for tests: about 5 ms a keystore (the v3 standard is 2**18)
VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "web3-keystore-v3-scrypt.json").read_text(encoding="utf-8")
)

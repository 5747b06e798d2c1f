"""docs/security.md names the test behind each claim: every test it names must exist, so a
renamed or deleted test cannot leave a claim standing on nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`((?:tests/[\w/]+\.py|[\w]+\.py))?::(test_\w+)`|`(tests/[\w/]+\.py)`")


def _named_tests() -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    current: str | None = None
    for match in REFERENCE.finditer(DOC.read_text()):
        file, test, bare_file = match.groups()
        if bare_file:
            current = bare_file
            continue
        if file:
            current = file if file.startswith("tests/") else _find(file)
        assert current is not None, f"::{test} follows no test file in {DOC.name}"
        named.append((current, test))
    return named


def _find(name: str) -> str:
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob(name))
    assert len(found) == 1, f"{name} names {found or 'no file'} under tests/"
    return found[0]


def test_every_test_the_threat_model_names_exists() -> None:
    named = _named_tests()
    assert len(named) > 40
    missing = [
        f"{file}::{test}"
        for file, test in named
        if not re.search(rf"^\s*def {test}\(", (ROOT / file).read_text(), re.MULTILINE)
    ]
    assert missing == []

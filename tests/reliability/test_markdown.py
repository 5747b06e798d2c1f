"""``reliability.markdown.phase_table``: one row per phase of every report given, with the
phase's own figures (a dash where it has none) and its findings counted."""

from __future__ import annotations

from typing import Any

from reliability.markdown import phase_table


def test_one_row_per_phase_with_its_figures_and_findings() -> None:
    report: dict[str, Any] = {
        "phaseSeconds": {"bank": 160.2},
        "phases": {
            "bank": {
                "operations": {"total": 46509, "acknowledged": 9199},
                "reconcile": {"lostAcknowledged": 0},
                "monitor": {"overspendBaseUnits": 0},
                "faults": {"injected": 3},
            },
            "tamper": {"detected": 18, "cases": 19},
        },
        "findings": [{"phase": "tamper", "check": "tamper_detected"}],
    }
    other: dict[str, Any] = {
        "phases": {"rate-limits": {"durationSeconds": 60.0, "operations": {"total": 9000, "admitted": 700}}},
        "findings": [],
    }
    header, rule, bank, tamper, limits = phase_table([report, other])
    assert header.startswith("| phase | seconds | operations |") and rule.count("---") == 10
    assert bank == "| bank | 160.2 | 46,509 | 9,199 | 0 | 0 | 3 | – | – | 0 |"
    assert tamper == "| tamper | – | – | – | – | – | – | – | 18 / 19 | 1 |"
    assert limits == "| rate-limits | 60.0 | 9,000 | 700 | – | – | 0 | – | – | 0 |"

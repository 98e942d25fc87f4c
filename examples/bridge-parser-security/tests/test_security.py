"""The security-advisory plugin, tested with the bridge's public test kit only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bridge_parser_security import SecurityParser

from bridge.sdk import parse_message
from bridge.testing import broken_cases, check_broken, golden_cases, run_case, validate

HERE = Path(__file__).parent
CASES = golden_cases(HERE / "fixtures")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case):
    outcome = run_case([SecurityParser()], case.eml)
    assert outcome == case.expected()
    for event in outcome if isinstance(outcome, list) else []:
        validate(event, SecurityParser())


@pytest.mark.parametrize("case", broken_cases(HERE / "broken"), ids=lambda c: c.name)
def test_broken(case):
    check_broken([SecurityParser()], case)


def test_bridge_parsers_lists_the_plugin_found_through_its_entry_point():
    listed = subprocess.run(
        [sys.executable, "-m", "bridge", "parsers"], capture_output=True, text=True, check=True
    )
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    (row,) = [r for r in rows if r[0] == "security"]
    assert row[2].startswith("bridge-parser-security ") and row[3:] == ["ok", "security.advisory"]


def test_bug_tracker_mail_is_not_taken_for_an_advisory():
    bug = parse_message(b"Subject: Bug#1: hello: crashes\nX-Debian-PR-Message: report 1\n\nx\n")
    assert not SecurityParser().accepts(bug)

from __future__ import annotations

import re
from pathlib import Path

import pytest
from debian import deb822

from bridge.mail import header, parse_message
from bridge.pipeline import Pipeline
from bridge.testing import CorpusRun, broken_cases, check_broken, golden_cases, run_case, validate
from parsers.changes import find_changes, read_changes, upload_fields
from parsers.dak import DakParser
from tests.helpers import FIXTURES

CASES = golden_cases(FIXTURES / "dak")
BROKEN = FIXTURES / "dak-broken"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_fixture(case):
    outcome = run_case([DakParser()], case.eml)
    assert outcome == case.expected()
    for event in outcome if isinstance(outcome, list) else []:
        validate(event, DakParser())


def test_list_announcement_and_maintainer_copy_are_one_event():
    pipeline = Pipeline([DakParser()])
    (announced,) = pipeline.process(
        (FIXTURES / "dak" / "accepted-2008-latin1-qp.eml").read_bytes()
    ).events
    (copy,) = pipeline.process(
        (FIXTURES / "dak" / "accepted-maintainer-copy.eml").read_bytes()
    ).events
    assert announced.dedup_key == copy.dedup_key == "hello/2.10-3/unstable"


@pytest.mark.parametrize("case", broken_cases(BROKEN), ids=lambda c: c.name)
def test_a_broken_changes_is_a_clear_failure_not_a_half_event(case):
    check_broken([DakParser()], case)


def test_every_dak_mail_in_the_corpus(corpus: Path, capsys):
    run = CorpusRun(DakParser(), sorted(corpus.glob("mails/dak-*/*.eml")))
    assert len(run.paths) == 129
    for path, raw, outcome in run:
        subject = header(parse_message(raw), "Subject")
        named = re.match(r"Accepted (\S+) (\S+) |(\S+?)_(\S+?)_\S+\.changes ACCEPTED", subject)
        if named:
            (event,) = outcome.events
            source, version = (
                (named.group(1), named.group(2)) if named.group(1) else named.group(3, 4)
            )
            assert event.topic == "dak.upload.accepted"
            assert event.body["source"] == source
            # file names drop the epoch that the .changes Version keeps
            assert event.body["version"].split(":")[-1] == version.split(":")[-1], path
    with capsys.disabled():
        print("\n" + run.report())
    assert run.counts["dak.upload.accepted"] >= 61


def test_every_changes_file_reads_as_deb822_reads_it(corpus: Path):
    paths = sorted(corpus.glob("changes/*.changes"))
    assert len(paths) == 98
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        reference = deb822.Changes(text)
        fields = upload_fields(read_changes(find_changes(text)))
        assert fields["fields"] == {k: reference.get_as_string(k) for k in reference}, path
        assert fields["source"] == reference["Source"].split()[0]
        assert fields["version"] == reference["Version"]
        assert fields["architecture"] == reference["Architecture"].split()
        names = [f["name"] for f in reference.get("Files", [])]
        assert [f["name"] for f in fields["files"]][: len(names)] == names


def test_an_announcement_without_a_suite_takes_debian_suite_then_the_distribution():
    raw = (FIXTURES / "dak" / "accepted-2008-latin1-qp.eml").read_bytes()
    assert b"Debian-Suite" not in raw and b"into " not in raw.split(b"\n\n")[0]
    pipeline = Pipeline([DakParser()])
    (plain,) = pipeline.process(raw).events
    assert plain.body["suite"] == "unstable"  # the .changes says Distribution: unstable
    (labelled,) = pipeline.process(b"Debian-Suite: experimental\n" + raw).events
    assert labelled.body["suite"] == "experimental"
    assert labelled.dedup_key == "hello/2.10-3/experimental"

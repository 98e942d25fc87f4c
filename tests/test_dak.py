from __future__ import annotations

import re
from email.message import Message
from pathlib import Path

import pytest
from debian import deb822

from bridge.mail import header, parse_message
from bridge.pipeline import Pipeline
from bridge.testing import CorpusRun, broken_cases, check_broken, golden_cases, run_case, validate
from parsers.changes import find_changes, read_changes, upload_fields
from parsers.dak import DakParser, body_text
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
        fields = upload_fields(read_changes(find_changes(text)), {"truncated": []})
        assert list(fields["fields"]) == list(reference), path
        for name, plain in fields["fields"].items():
            raw = reference.get_as_string(name)
            if "\n" not in raw:
                assert plain == raw.strip(), (path, name)
                continue
            written = [line.rstrip() for line in raw.split("\n")]
            first = written[0].strip()
            assert as_deb822(plain, first) == "\n".join([first, *written[1:]]).rstrip("\n"), (
                path,
                name,
            )
        assert fields["source"] == reference["Source"].split()[0]
        assert fields["version"] == reference["Version"]
        assert fields["architecture"] == reference["Architecture"].split()
        names = [f["name"] for f in reference.get("Files", [])]
        assert [f["name"] for f in fields["files"]][: len(names)] == names


def as_deb822(plain: str, first_line: str) -> str:
    """*plain* written back as deb822 writes a value: continuation lines with one leading
    space and `` .`` for an empty line, after the value's own first line."""
    lines = plain.split("\n")
    if first_line:
        head, lines = lines[0], lines[1:]
    else:
        head = ""
    return "\n".join([head, *(" " + (line or ".") for line in lines)])


def test_an_announcement_without_a_suite_takes_debian_suite_then_the_distribution():
    raw = (FIXTURES / "dak" / "accepted-2008-latin1-qp.eml").read_bytes()
    assert b"Debian-Suite" not in raw and b"into " not in raw.split(b"\n\n")[0]
    pipeline = Pipeline([DakParser()])
    (plain,) = pipeline.process(raw).events
    assert plain.body["suite"] == "unstable"  # the .changes says Distribution: unstable
    (labelled,) = pipeline.process(b"Debian-Suite: experimental\n" + raw).events
    assert labelled.body["suite"] == "experimental"
    assert labelled.dedup_key == "hello/2.10-3/experimental"


def only_headers(*lines: str) -> Message:
    return parse_message(("\n".join(lines) + "\n\nbody\n").encode())


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        (["X-DAK: dak process-upload"], True),
        (["X-Katie: $Revision: 1.65 $"], True),
        (["Debian-Archive-Action: accept"], True),
        (["X-Debian: DAK"], True),
        (["Debian: DAK"], True),
        (["X-Debian: PTS"], False),
        (
            [
                "Sender: Archive Administrator <dak@ftp-master.debian.org>",
                "Subject: Accepted hello 2.10-3 (source i386)",
            ],
            True,
        ),
        (
            [
                "Sender: Archive Administrator <dak@ftp-master.debian.org>",
                "Subject: a question about NEW",
            ],
            False,
        ),
        (["Subject: Accepted hello 2.10-3 (source i386)"], False),  # anyone could write that
        (["X-DAK: dak", "X-Debian-PR-Message: closed 1"], False),  # the bug tracker's copy
    ],
)
def test_accepts_mail_marked_by_dak_and_nothing_else(headers, accepted):
    assert DakParser().accepts(only_headers(*headers)) is accepted


CHANGES = (FIXTURES / "dak" / "accepted-maintainer-copy.eml").read_text(encoding="utf-8")
SIGNED = CHANGES[CHANGES.index("-----BEGIN PGP SIGNED MESSAGE-----") :]


def test_a_new_notice_that_carries_its_changes_gives_the_upload_fields():
    raw = (FIXTURES / "dak" / "new.eml").read_bytes() + b"\n" + SIGNED.encode()
    raw = raw.replace(b"Debian-Archive-Action: new\n", b"")
    (event,) = Pipeline([DakParser()]).process(raw).events
    # from the .changes appended (hello 2.10-3 for unstable), not from the subject
    assert (event.body["source"], event.body["version"]) == ("hello", "2.10-3")
    assert event.body["changed_by"]["email"] == "jose@example.org"
    assert event.body["suite"] == "unstable"  # its Distribution, as the mail has no Debian-Suite


def test_find_changes_returns_the_whole_signed_text_wherever_it_starts():
    assert find_changes(SIGNED) == SIGNED[: SIGNED.index("-----END PGP SIGNATURE-----") + 27] + "\n"
    assert find_changes("preamble\n\n" + SIGNED).endswith("-----END PGP SIGNATURE-----\n")


def test_the_text_of_a_pgp_mime_announcement_leaves_out_the_signature_part():
    raw = (FIXTURES / "dak" / "accepted-2022-pgp-mime.eml").read_bytes()
    message = parse_message(raw)
    parts = [p.get_content_type() for p in message.walk()]
    assert "application/pgp-signature" in parts
    # the text part holds the clear-signed .changes (one signature); the detached
    # signature of the PGP/MIME wrapper must not be read as text too
    assert body_text(message).count("BEGIN PGP SIGNATURE") == 1


def test_a_rejection_reason_is_capped_at_8192_characters():
    raw = (FIXTURES / "dak" / "rejected.eml").read_bytes()
    head, _, _ = raw.partition(b"\n\n")
    long = head + b"\n\n" + b"lintian: something is wrong\n" * 1000
    (event,) = Pipeline([DakParser()]).process(long).events
    assert len(event.body["reason"]) == 8192

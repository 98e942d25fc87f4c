from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest

from bridge.pipeline import Pipeline
from bridge.sdk import BODY_CAP
from bridge.testing import CorpusRun, golden_cases, run_case, validate
from parsers.debbugs import DebbugsParser
from tests.helpers import FIXTURES, bridge

CASES = golden_cases(FIXTURES / "debbugs")
BTS_TOPICS = {
    "report": "debbugs.bug.report",
    "followup": "debbugs.bug.followup",
    "closed": "debbugs.bug.closed",
    "transcript": "debbugs.bug.control",
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_fixture(case):
    outcome = run_case([DebbugsParser()], case.eml)
    assert outcome == case.expected()
    for event in outcome if isinstance(outcome, list) else []:
        validate(event, DebbugsParser())


def test_ack_and_error_mails_say_why_they_give_nothing():
    pipeline = Pipeline([DebbugsParser()])
    ack = pipeline.process((FIXTURES / "debbugs" / "ack-info.eml").read_bytes())
    assert ack.status == "ignored" and "acknowledgement" in ack.reason
    error = pipeline.process((FIXTURES / "debbugs" / "error-without-bug-number.eml").read_bytes())
    assert error.status == "ignored" and "without a bug number" in error.reason


def test_the_same_message_through_two_lists_has_one_dedup_key():
    mail = (FIXTURES / "debbugs" / "closed-marked-as-done.eml").read_bytes()
    other_list = mail.replace(
        b"<XLb3CFFruKG.A.KM.be0CIB@liszt.debian.org>", b"<other@lists.example.org>"
    )
    pipeline = Pipeline([DebbugsParser()])
    (first,) = pipeline.process(mail).events
    (second,) = pipeline.process(other_list).events
    assert first.dedup_key == second.dedup_key == "debbugs:handler.476162.D.476162.120869836218025"


def test_bridge_parse_calls_a_2008_report_labelled_followup_a_followup():
    result = bridge("parse", str(FIXTURES / "debbugs" / "followup-2008-labelled-report.eml"))
    assert result.returncode == 0
    assert '"topic": "org.debian.dev.debbugs.bug.followup"' in result.stdout.decode()


def _label(raw: bytes) -> tuple[str, int | None]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    kind, _, number = str(message.get("X-Debian-PR-Message", "")).strip().partition(" ")
    return kind, int(number) if number.strip().isdigit() else None


def _expected_topic(folder: str, kind: str) -> str:
    if kind == "report":  # the corpus sorts 2008 follow-ups labelled "report" into bts-followup
        return "debbugs.bug.followup" if folder == "bts-followup" else "debbugs.bug.report"
    return BTS_TOPICS[kind]


def test_every_bug_tracker_mail_in_the_corpus(corpus: Path, capsys):
    run = CorpusRun(DebbugsParser(), sorted(corpus.glob("mails/bts-*/*.eml")))
    assert len(run.paths) == 482
    for path, raw, outcome in run:
        kind, bug = _label(raw)
        if kind not in BTS_TOPICS:
            assert not outcome.events
            continue
        (event,) = outcome.events
        assert event.topic == _expected_topic(path.parent.name, kind), path
        if kind == "transcript":
            body_bugs = _transcript_bugs(raw)
            assert body_bugs <= set(event.body["bugs"]), path
        else:
            assert event.body["bug"] == bug, path
    with capsys.disabled():
        print("\n" + run.report())
    assert run.counts["debbugs.bug.report"] > 100 and run.counts["debbugs.bug.closed"] > 100


def _transcript_bugs(raw: bytes) -> set[int]:
    """Bug numbers the BTS names in its replies (``Bug #N [...]``), read independently."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    text = message.get_payload(decode=True).decode("utf-8", "replace")
    return {int(n) for n in re.findall(r"^Bug #(\d+) ", text, re.MULTILINE)}


def with_label(raw: bytes, label: str) -> bytes:
    return re.sub(rb"X-Debian-PR-Message: [^\r\n]*", f"X-Debian-PR-Message: {label}".encode(), raw)


REPORT = (FIXTURES / "debbugs" / "report.eml").read_bytes()


@pytest.mark.parametrize(
    ("label", "topic"),
    [
        ("report 1056001", "debbugs.bug.report"),
        ("followup 1056001", "debbugs.bug.followup"),
        ("forwarded 1056001", "debbugs.bug.forwarded"),
        ("done 1056001", "debbugs.bug.closed"),
        ("closed 1056001", "debbugs.bug.closed"),
        ("they-closed 1056001", "debbugs.bug.closed"),
        ("transcript", "debbugs.bug.control"),
    ],
)
def test_every_label_debbugs_sends_gives_its_topic(label, topic):
    (event,) = Pipeline([DebbugsParser()]).process(with_label(REPORT, label)).events
    assert event.topic == topic
    if label != "transcript":
        assert event.body["bug"] == 1056001 and event.body["type"] == label.split()[0]


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("ack 1056001", "debbugs ack for #1056001: an acknowledgement, not news"),
        ("ack-info 1056001", "debbugs ack-info for #1056001: an acknowledgement, not news"),
        ("ack-done 1056001", "debbugs ack-done for #1056001: an acknowledgement, not news"),
        ("ack-infodone 1056001", "debbugs ack-infodone for #1056001: an acknowledgement"),
        ("error", "debbugs 'error' message without a bug number"),
        ("error 1056001", "debbugs message type 'error' is not an event"),
    ],
)
def test_acknowledgements_and_errors_give_no_event_and_say_why(label, reason):
    outcome = Pipeline([DebbugsParser()]).process(with_label(REPORT, label))
    assert outcome.status == "ignored" and reason in outcome.reason


FOLLOWUP_2008 = (FIXTURES / "debbugs" / "followup-2008-labelled-report.eml").read_bytes()


def without_handler_ids(raw: bytes) -> bytes:
    """The mail as some list copies have it: no handler id in Resent-Message-ID."""
    return re.sub(rb"Resent-Message-ID: <handler[^>]*>", b"Resent-Message-ID: <x@liszt>", raw)


@pytest.mark.parametrize(
    ("received", "topic"),
    [
        (b"476948-submit@bugs.debian.org id=B476948.12087044774283", "debbugs.bug.followup"),
        (b"476948@bugs.debian.org id=B476948.12087044774283", "debbugs.bug.followup"),
        (b"submit@bugs.debian.org id=B.12087044774283", "debbugs.bug.report"),
    ],
)
def test_without_a_handler_id_the_via_spool_line_tells_report_from_followup(received, topic):
    raw = re.sub(
        rb"Received: via spool by \S+ id=\S+",
        b"Received: via spool by " + received,
        without_handler_ids(FOLLOWUP_2008),
    )
    (event,) = Pipeline([DebbugsParser()]).process(raw).events
    assert event.topic == topic
    assert event.dedup_key == "debbugs:handler.476948." + received.split(b"id=")[
        1
    ].decode().replace("B", "B.", 1)


def report_with_body(text: str) -> dict:
    raw = REPORT.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in REPORT else REPORT.split(b"\n\n")[0]
    (event,) = Pipeline([DebbugsParser()]).process(raw + b"\n\n" + text.encode()).events
    return dict(event.body)


def test_pseudo_headers_are_the_lines_at_the_top_of_a_report_only():
    body = report_with_body("Package: hello\nVersion: 2.10-3\nSeverity: grave\n\nIt crashes.\n")
    assert (body["version"], body["severity"]) == ("2.10-3", "grave")
    later = report_with_body("Package: hello\nThis crashes.\nVersion: 9.9\nSeverity: grave\n")
    # no Severity: line at the top: debbugs records the report as normal
    assert (later["version"], later["severity"]) == (None, "normal")
    first_wins = report_with_body("Package: hello\nVersion: 1.0\nVersion: 2.0\n\nBody\n")
    assert first_wins["version"] == "1.0"


def test_a_title_that_repeats_the_package_is_not_repeated_in_the_summary():
    body = report_with_body("Package: hello\n\nIt crashes.\n")
    assert body["title"] == "hello: segfaults on start with an empty HOME"
    assert body["summary"].endswith("against hello: segfaults on start with an empty HOME")


def headers_only(*lines: str):
    return email.message_from_bytes(("\n".join(lines) + "\n\nbody\n").encode())


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        (["X-Debian-PR-Message: report 1"], True),
        (["X-Loop: owner@bugs.debian.org"], True),  # a raw log copy: taken, then skipped
        (["X-Loop: someone@lists.example.org", "X-Loop: owner@bugs.debian.org"], True),
        (["X-Loop: owner@lists.debian.org"], False),
        (["Subject: Bug#1: hello: crashes"], False),
    ],
)
def test_accepts_only_mail_the_bug_tracker_labelled_or_looped(headers, accepted):
    assert DebbugsParser().accepts(headers_only(*headers)) is accepted


def test_a_handler_id_alone_tells_a_2008_followup_from_a_report():
    no_received = re.sub(rb"Received: via spool by [^\n]*\n", b"", FOLLOWUP_2008)
    (event,) = Pipeline([DebbugsParser()]).process(no_received).events
    assert event.topic == "debbugs.bug.followup"  # handler.476948.B476948: a follow-up's id


def test_a_followup_sent_to_submit_is_a_followup_by_its_id():
    raw = re.sub(
        rb"Received: via spool by \S+ id=\S+",
        b"Received: via spool by submit@bugs.debian.org id=B476948.12087044774283",
        without_handler_ids(FOLLOWUP_2008),
    )
    (event,) = Pipeline([DebbugsParser()]).process(raw).events
    assert event.topic == "debbugs.bug.followup"


def test_a_report_without_handler_id_or_spool_line_is_a_report():
    raw = re.sub(rb"Received: via spool by [^\r\n]*\r?\n", b"", without_handler_ids(REPORT))
    raw = re.sub(rb"Resent-Message-ID: [^\r\n]*\r?\n", b"", raw)
    (event,) = Pipeline([DebbugsParser()]).process(raw).events
    assert event.topic == "debbugs.bug.report"


def test_a_closure_takes_the_fixed_version_from_a_fixed_in_subject():
    raw = (FIXTURES / "debbugs" / "closed-marked-as-done.eml").read_bytes()
    # the closing mail (the last attached message) says "fixed in roundcube 0.1.1-2" in its
    # Subject and again as Source-Version; without the latter, the Subject must do
    closing = raw.rindex(b"Content-Type: message/rfc822")
    without_source_version = raw[:closing] + raw[closing:].replace(
        b"Source-Version: 0.1.1-2\n", b""
    )
    (event,) = Pipeline([DebbugsParser()]).process(without_source_version).events
    assert event.body["fixed_version"] == "0.1.1-2"
    neither = without_source_version[:closing] + without_source_version[closing:].replace(
        b"fixed in roundcube 0.1.1-2", b"closed by the maintainer"
    )
    (event,) = Pipeline([DebbugsParser()]).process(neither).events
    assert event.body["fixed_version"] is None


def transcript_touching(bugs: list[int], ending: list[str]) -> bytes:
    """A control transcript with one command per bug, then *ending* lines."""
    raw = (FIXTURES / "debbugs" / "control-transcript.eml").read_bytes()
    head = raw.split(b"\n\n", 1)[0].replace(b"quoted-printable", b"8bit")
    lines = ["Processing commands for control@bugs.debian.org:", ""]
    for bug in bugs:
        lines += [f"> tags {bug} + patch", f"Bug #{bug} [hello] crashes", "Added tag(s) patch."]
    lines += [*ending, "> tags 999999 + x", "Bug #999999 [x] y", ""]
    return head + b"\n\n" + "\n".join(lines).encode()


def commands_of(raw: bytes) -> list[list[int]]:
    (event,) = Pipeline([DebbugsParser()]).process(raw).events
    return [c["bugs"] for c in event.body["commands"]]


def test_a_transcript_summary_says_one_change_to_many_bugs_once():
    bugs = list(range(1000001, 1000010))
    (event,) = Pipeline([DebbugsParser()]).process(transcript_touching(bugs, ["-- "])).events
    assert event.body["bugs"] == bugs
    # the transcript's To: is Chris Example; each command adds the tag patch to one bug
    assert event.body["summary"] == "Chris Example: tags +patch on 9 bugs"


def test_a_transcript_ends_at_a_signature_even_without_its_trailing_space():
    # list servers strip trailing blanks: "-- " arrives as "--"
    assert commands_of(transcript_touching([1000001], ["", "--"])) == [[1000001]]
    assert commands_of(transcript_touching([1000001], ["", "-- "])) == [[1000001]]


def test_nothing_after_a_stop_word_is_a_command():
    ending = ["> thanks", "Stopping processing here.", ""]
    (event,) = Pipeline([DebbugsParser()]).process(transcript_touching([1000001], ending)).events
    commands = event.body["commands"]
    assert [(c["verb"], c["status"]) for c in commands] == [("tags", "applied"), ("thanks", "noop")]


def test_bug_number_one_is_a_bug_like_any_other():
    assert commands_of(transcript_touching([1], ["-- "])) == [[1]]


def test_bodies_are_capped_at_the_sdks_body_cap():
    body = report_with_body("Package: hello\n\n" + "x" * 40_000)
    assert len(body["body"]) == BODY_CAP == 16 * 1024


def _closing_mail(raw: bytes) -> email.message.Message | None:
    """The last attached message of a "marked as done" notice, read without the parser."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    attached = [
        p.get_payload()[0] for p in message.walk() if p.get_content_type() == "message/rfc822"
    ]
    return attached[-1] if attached else None


def test_every_corpus_closure_is_credited_to_who_closed_it(corpus: Path):
    by_dak = credited = 0
    for path in sorted(corpus.glob("mails/bts-done/*.eml")):
        raw = path.read_bytes()
        (event,) = Pipeline([DebbugsParser()]).process(raw).events
        agent = event.body["agent"]["email"]
        assert not agent.endswith(("@ftp-master.debian.org", "@bugs.debian.org")), path
        closing = _closing_mail(raw)
        if closing is None:
            continue
        text = closing.get_payload(decode=True) or b""
        done = re.search(rb"^Done: .*<([^>]+)>", text.split(b"\n\n", 1)[0], re.MULTILINE)
        if "ftpmaster@ftp-master.debian.org" in str(closing.get("From", "")):
            by_dak += 1
            assert done is not None, path  # dak names who uploaded
        if done is not None:
            assert agent == done.group(1).decode(), path
            credited += 1
    assert by_dak > 0 and credited >= by_dak


def test_a_second_bug_prefix_is_not_part_of_the_title():
    raw = (FIXTURES / "debbugs" / "report.eml").read_bytes()
    for subject, title in [
        (
            b"Bug#379192: [Pkg-xfce-devel] Bug#379192: user is unable to shut down",
            "user is unable to shut down",
        ),
        (b"Bug#434396: Bug#434396: Bug#434396: sbuild: LVM snapshot", "sbuild: LVM snapshot"),
        (b"Bug#476906: Re: Bug#457906: mirror submission", "mirror submission"),
        (b"Bug#1: [PATCH] hello: fix", "[PATCH] hello: fix"),
        (
            b"Bug#475332: closed by Jo (Bug#474932: fixed in x 1)",
            "closed by Jo (Bug#474932: fixed in x 1)",
        ),
    ]:
        mail = re.sub(rb"^Subject: [^\n]*(\n[ \t][^\n]*)*", b"Subject: " + subject, raw, flags=re.M)
        (event,) = Pipeline([DebbugsParser()]).process(mail).events
        assert event.body["title"] == title
        assert "Bug#" not in event.body["summary"].split(":", 1)[-1] or "closed by" in title


def test_an_error_cut_at_its_cap_is_marked_truncated():
    raw = (FIXTURES / "debbugs" / "control-transcript.eml").read_bytes()
    head = raw.split(b"\n\n", 1)[0].replace(b"quoted-printable", b"8bit")
    answer = "Failed to set severity of Bug 1: " + "x" * 2000
    text = f"Processing commands for control@bugs.debian.org:\n\n> severity 1 grave\n{answer}\n"
    (event,) = Pipeline([DebbugsParser()]).process(head + b"\n\n" + text.encode()).events
    (command,) = event.body["commands"]
    assert command["status"] == "failed" and len(command["error"]) == 1024
    assert command["error"] == answer[:1024]
    # the answer's one line is over the reply's line cap too
    assert event.body["truncated"] == ["commands.reply", "commands.error"]

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest

from bridge.pipeline import Pipeline
from bridge.testing import golden_cases, run_case, validate
from parsers.debbugs import DebbugsParser
from tests.helpers import FIXTURES, SCHEMAS, CorpusRun, bridge

CASES = golden_cases(FIXTURES / "debbugs")
BTS_TOPICS = {
    "report": "debbugs.bug.report",
    "followup": "debbugs.bug.followup",
    "closed": "debbugs.bug.closed",
    "transcript": "debbugs.bug.control",
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_fixture(case):
    events = run_case([DebbugsParser()], case.eml)
    assert events == case.expected()
    for event in events:
        validate(event, SCHEMAS)


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
    run.report(capsys)
    assert run.counts["debbugs.bug.report"] > 100 and run.counts["debbugs.bug.closed"] > 100


def _transcript_bugs(raw: bytes) -> set[int]:
    """Bug numbers the BTS names in its replies (``Bug #N [...]``), read independently."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    text = message.get_payload(decode=True).decode("utf-8", "replace")
    return {int(n) for n in re.findall(r"^Bug #(\d+) ", text, re.MULTILINE)}

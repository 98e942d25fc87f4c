"""The worker in-process, on a real spool and a real journal: one mail never stalls the rest."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge.intake.spool import Spool
from bridge.journal import SqliteJournal
from bridge.pipeline import Pipeline
from bridge.pipeline.plugins import discover
from bridge.pipeline.worker import CURSOR, Worker
from tests.helpers import sql
from tests.mails import bug_report

POISON_BUG = 760003


@pytest.fixture
def spool(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    yield spool
    spool.close()


def worker_for(spool: Spool, journal: SqliteJournal) -> Worker:
    return Worker(spool, journal, Pipeline(discover(only=["debbugs"]).parsers))


def bugs_in(journal: SqliteJournal) -> list[int]:
    return [b for (b,) in sql(journal.path, "SELECT bug FROM event_bugs ORDER BY bug")]


def refuse_bug(journal: SqliteJournal, bug: int) -> None:
    """A journal that refuses one row as a real constraint would (sqlite3.IntegrityError)."""
    sql(
        journal.path,
        "CREATE TRIGGER refuse BEFORE INSERT ON event_bugs"
        f" WHEN NEW.bug = {bug} BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END",
    )


def test_a_row_the_journal_refuses_sends_only_its_mail_to_failed(spool, tmp_path):
    bugs = list(range(760001, 760007))
    for bug in bugs:
        spool.write_now({"n": bug}, bug_report(bug))
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    refuse_bug(journal, POISON_BUG)
    worker = worker_for(spool, journal)
    assert worker.step() is True  # one batch of six: retried mail by mail
    assert worker.step() is False  # and nothing is left to do
    assert bugs_in(journal) == [b for b in bugs if b != POISON_BUG]
    (reason,) = spool.failed_dir.glob("*.reason")
    assert "the journal refused its events" in reason.read_text()
    assert "refused by a constraint" in reason.read_text()
    assert journal.cursor(CURSOR) == spool.committed_position
    assert journal.counters()["failed"] == 1


def test_a_locked_journal_is_waited_for_not_blamed_on_a_mail(spool, tmp_path):
    spool.write_now({}, bug_report(760100))
    journal = SqliteJournal(tmp_path / "journal.sqlite3", timeout=0.2)
    other = SqliteJournal(tmp_path / "journal.sqlite3")
    worker = worker_for(spool, journal)
    with other.batch():
        assert worker.step() is False  # retried later, not sent to failed/
    assert list(spool.failed_dir.iterdir()) == []
    assert worker.step() is True
    assert bugs_in(journal) == [760100]


def test_the_worker_thread_drains_the_spool_and_stops(spool, tmp_path):
    for bug in range(760200, 760300):
        spool.write_now({}, bug_report(bug))
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    worker = worker_for(spool, journal)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert bugs_in(journal) == list(range(760200, 760300))


def test_retry_journals_what_now_works_and_keeps_a_refused_mail_in_failed(spool, tmp_path):
    for bug in (760401, POISON_BUG):
        spool.keep("failed", f"mail-{bug}", bug_report(bug), {}, "a parser bug, since fixed")
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    refuse_bug(journal, POISON_BUG)
    worker = worker_for(spool, journal)
    done = worker.retry(sorted(spool.failed_dir.glob("*.eml")))
    statuses = {d.record.meta["retried"].rsplit("/", 1)[1]: d.outcome.status for d in done}
    assert statuses == {"mail-760401.eml": "published", f"mail-{POISON_BUG}.eml": "failed"}
    assert bugs_in(journal) == [760401]
    (left,) = spool.failed_dir.glob("*.eml")
    assert left.stem == f"mail-{POISON_BUG}"
    assert sorted(p.name for p in spool.failed_dir.iterdir()) == [left.name, f"{left.stem}.reason"]
    assert "the journal refused its events" in left.with_suffix(".reason").read_text()
    assert journal.cursor(CURSOR) == 0  # a retry never moves the spool position


def test_one_info_line_per_mail_with_its_message_id_and_exact_counters(spool, tmp_path, caplog):
    spool.write_now({}, bug_report(760501))
    spool.write_now({}, b"Message-ID: <plain@example.org>\nSubject: hi\n\nnot for us\n")
    spool.write_now({}, b"no headers at all\n")
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    worker = worker_for(spool, journal)
    with caplog.at_level("INFO", logger="bridge.pipeline.worker"):
        assert worker.step() is True
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mail ")]
    assert len(lines) == 3
    assert lines[0].startswith("mail <report-760501@example.org> spool=00000001-000000000000")
    assert "parser=debbugs topics=debbugs.bug.report outcome=published new=1" in lines[0]
    assert "reason=" not in lines[0]
    assert lines[1].startswith("mail <plain@example.org> spool=")
    assert "parser=- topics=- outcome=ignored new=0 duplicates=0 reason='no parser" in lines[1]
    assert lines[2].startswith("mail <no Message-ID> spool=")
    assert journal.counters() == {"events": 1, "ignored": 2, "processed": 3}


def test_a_damaged_record_is_counted_once(spool, tmp_path):
    for bug in (760601, 760602, 760603):
        spool.write_now({}, bug_report(bug))
    middle = spool.read_after(spool.start_position())[1]
    with open(spool.segment_path(1), "r+b") as fh:
        fh.seek(middle.offset + 60)
        fh.write(b"\xff" * 8)
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    assert worker_for(spool, journal).step() is True
    assert bugs_in(journal) == [760601, 760603]
    counters = journal.counters()
    assert (counters["spool_damaged"], counters["failed"], counters["processed"]) == (1, 1, 3)


def test_the_drop_policy_keeps_a_mail_nothing_vouches_for_in_rejected(spool, tmp_path):
    from bridge.config import TrustConfig
    from bridge.trust import Trust

    spool.write_now({"n": 1}, bug_report(760101))
    trust = TrustConfig(dns=False, keyrings=[], policy={"debbugs": "drop"})
    pipeline = Pipeline(discover(only=["debbugs"]).parsers, Trust(trust))
    with SqliteJournal(tmp_path / "journal.sqlite3") as journal:
        worker = Worker(spool, journal, pipeline, policy_for=trust.policy_for)
        assert worker.step() is True
        assert journal.count() == 0 and journal.counters()["rejected"] == 1
    (kept,) = spool.rejected_dir.glob("*.eml")
    assert kept.read_bytes() == bug_report(760101)
    reason = kept.with_suffix(".reason").read_text()
    assert reason.startswith("debbugs.bug.report: trust verdict none (no DKIM signature);")
    assert "policy drop for debbugs" in reason

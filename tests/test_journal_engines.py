"""The same contract from both journal engines: the same events appended to SQLite and to
PostgreSQL answer every query, statistic and replay selection the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bridge.events import Envelope, Event, Naming
from bridge.journal import Criteria, Journal, ReplaySelection, SqliteJournal
from bridge.journal.migrations import POSTGRES_SCHEMA_VERSION as SCHEMA_VERSION
from bridge.journal.postgres import PostgresJournal, migrate
from tests.helpers import bridge, postgres_schema, sql

NAMING = Naming("org.debian", "test", "svc")
DAY = 86400
START = 1_700_000_000  # 2023-11-14, a Tuesday: weeks and months change within the series


def events() -> list[Event]:
    """Sixty facts over two months: reports, closures and uploads, with packages, bugs,
    people, and three that repeat an earlier one."""
    made = []
    for n in range(60):
        when = START + n * DAY + 3600 * (n % 5)
        iso = _iso(when)
        topic = ("debbugs.bug.report", "debbugs.bug.closed", "dak.upload.accepted")[n % 3]
        package = ("hello", "xfsprogs", "gcc")[n % 4 % 3]
        made.append(
            Event(
                topic,
                {"n": n, "summary": f"fact {n}", "origin": {"auth": {"verdict": "none"}}},
                dedup_key=f"fact-{n}",
                packages=(package,),
                bugs=(1000 + n % 7,),
                people=(f"Person {n % 4}", f"p{n % 4}@example.org"),
                occurred_at=iso,
            )
        )
    for n in (3, 10, 42):  # the same facts again: duplicates
        made.append(Event(made[n].topic, {"n": n, "again": True}, dedup_key=f"fact-{n}"))
    return made


def _iso(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def engines(tmp_path) -> Iterator[tuple[Journal, Journal]]:
    url, drop = postgres_schema()
    sqlite = SqliteJournal(tmp_path / "journal.sqlite3", NAMING)
    postgres = PostgresJournal(url, NAMING)
    for journal in (sqlite, postgres):
        batch = events()
        journal.append(batch[:40], "smtp", backfill=True)  # dated by occurred_at
        journal.append(batch[40:50], "mbox:a", live=False, backfill=True)
        journal.append(batch[50:], "smtp", backfill=True)
    yield sqlite, postgres
    sqlite.close()
    postgres.close()
    drop()


def same(sqlite_answer, postgres_answer) -> None:
    assert sqlite_answer == postgres_answer


def shape(envelopes) -> list[tuple]:
    return [(e.seq_id, e.topic, e.msg, e.packages, e.bugs) for e in envelopes]


CRITERIA = [
    Criteria(),
    Criteria(topics=("debbugs",)),
    Criteria(topics=("org.debian.test.dak.upload.accepted",)),
    Criteria(topics=("debbugs.bug.closed", "dak")),
    Criteria(packages=("xfsprogs",)),
    Criteria(packages=("xfsprogs", "gcc"), not_topics=("dak",)),
    Criteria(bugs=(1003,)),
    Criteria(bugs=(999_999,)),
    Criteria(people=("PERSON 2",)),
    Criteria(people=("p1@example.org",)),
    Criteria(people=("p1@example.org",), not_packages=("hello",)),
    Criteria(not_people=("person 2", "person 3")),
    Criteria(contains=("fact 1",), topics=("debbugs",)),
    Criteria(contains=("fact 2", "fact 5"), packages=("xfsprogs", "gcc")),
    Criteria(since=START + 10 * DAY, until=START + 20 * DAY),
    Criteria(topics=("debbugs",), since=START + 10 * DAY + 7, until=START + 10 * DAY + 9000),
    Criteria(not_topics=("dak",), since=START + 3 * DAY),
    Criteria(until=START + 40 * DAY + 100),
    Criteria(topics=("no.such.topic",), packages=("hello",)),
    Criteria(topics=("debbugs.bug.closed",), packages=("hello",), since=START + 5 * DAY),
]


@pytest.mark.parametrize("criteria", CRITERIA, ids=lambda c: repr(c)[8:60])
def test_find_and_stats_agree(engines, criteria):
    sqlite, postgres = engines
    for newest_first in (True, False):
        for limit, offset in ((50, 0), (7, 7), (100, 3)):
            same(
                shape(sqlite.find(criteria, newest_first=newest_first, limit=limit, offset=offset)),
                shape(
                    postgres.find(criteria, newest_first=newest_first, limit=limit, offset=offset)
                ),
            )
    for period in ("hour", "day", "week", "month"):
        same(sqlite.stats(criteria, period), postgres.stats(criteria, period))


@pytest.mark.parametrize("criteria", CRITERIA, ids=lambda c: repr(c)[8:60])
def test_stats_and_counts_add_up_the_events_found(engines, criteria):
    """The daily counts (and the edges of a window read from the events) give what counting
    the events themselves gives."""
    from collections import Counter
    from datetime import UTC, datetime

    for journal in engines:
        found = journal.find(criteria, limit=1000)
        assert journal.count(criteria) == len(found)
        for period, form in (("day", "%Y-%m-%d"), ("month", "%Y-%m")):
            expected: Counter = Counter()
            for envelope in found:
                when = datetime.fromtimestamp(
                    START + envelope.msg["n"] * DAY + 3600 * (envelope.msg["n"] % 5), UTC
                )
                expected[when.strftime(form), NAMING.event_topic(envelope.topic)] += 1
            table = journal.stats(criteria, period)
            got = {(when, topic): n for when, row in table.items() for topic, n in row.items()}
            assert got == dict(expected)


def test_rows_counts_replays_and_bookkeeping_agree(engines):
    sqlite, postgres = engines
    same(sqlite.count(), postgres.count())
    # the ten history rows are never published: fifty are waiting for a sink
    assert sqlite.unsent("publisher") == postgres.unsent("publisher") == 50
    for journal in engines:
        journal.set_cursor("publisher", 45)
    assert sqlite.unsent("publisher") == postgres.unsent("publisher") == 10  # 51 to 60
    same(sqlite.last_seq_id(), postgres.last_seq_id())
    for live_only in (False, True):
        same(
            [(r.seq_id, r.topic) for r in sqlite.rows_after(5, 100, live_only=live_only)],
            [(r.seq_id, r.topic) for r in postgres.rows_after(5, 100, live_only=live_only)],
        )
    stamps = [e.timestamp for e in sqlite.find(Criteria(), limit=1)]
    selections = [
        ReplaySelection(seq_ids=(1, 2, 45, 55)),
        ReplaySelection(seq_id_ranges=((3, 12), (38, 52))),
        ReplaySelection(seq_id_after=30),
        ReplaySelection(times=((stamps[0] - 5, stamps[0] + 5),)),
        ReplaySelection(),
    ]
    for selection in selections:
        same(
            [(r.seq_id, r.topic) for r in sqlite.replay(selection, 1000)],
            [(r.seq_id, r.topic) for r in postgres.replay(selection, 1000)],
        )
        same(sqlite.replay_count(selection), postgres.replay_count(selection))
    for journal in (sqlite, postgres):
        with journal.batch() as batch:
            batch.set_cursor("publisher", 12)
            batch.add_counters({"processed": 3, "events": 2})
            batch.add_counters({"processed": 1})
            batch.set_resume_point("/archive.mbox", 4096, 10)
            batch.set_resume_point("/archive.mbox", 8192, 5)
    same(sqlite.counters(), postgres.counters())
    same(sqlite.cursor("publisher"), postgres.cursor("publisher"))
    same(sqlite.resume_point("/archive.mbox"), postgres.resume_point("/archive.mbox"))
    for journal in (sqlite, postgres):
        journal.forget_resume_point("/archive.mbox")
    same(sqlite.resume_point("/archive.mbox"), postgres.resume_point("/archive.mbox"))
    assert sqlite.check() == postgres.check() == []


def test_a_better_vouched_event_supersedes_in_both(engines):
    sqlite, postgres = engines
    better = Event(
        "debbugs.bug.report",
        {"n": 0, "origin": {"auth": {"verdict": "pass"}}},
        dedup_key="fact-0",
    )
    worse = Event("debbugs.bug.report", {"n": 0, "origin": {"auth": {"verdict": "fail"}}},
                  dedup_key="fact-0")  # fmt: skip
    for journal in (sqlite, postgres):
        first = journal.find(Criteria(), newest_first=False, limit=1)[0]
        result = journal.append([better], "smtp")
        assert len(result.seq_ids) == 1
        (new,) = journal.envelopes(journal.rows_after(result.seq_ids[0] - 1, 1))
        assert new.supersedes == first.msg_id
        assert journal.append([better, worse], "smtp").duplicates == 2


def test_migrate_is_versioned_and_idempotent():
    url, drop = postgres_schema()
    try:
        assert migrate(url) == (0, SCHEMA_VERSION)
        assert migrate(url) == (SCHEMA_VERSION, SCHEMA_VERSION)
    finally:
        drop()


def _first_version_row(mark: str, **engine_columns: object) -> tuple[str, tuple]:
    """An events row as the first schema of either engine held it: people only in the agent
    column."""
    row = {
        "seq_id": 1,
        "msg_id": "m-1",
        "topic": "org.debian.test.a.b",
        "event_topic": "a.b",
        "timestamp": 1,
        "event_time": 1,
        "dedup_key": "a.b|1",
        "source": "smtp",
        "agent": "jane doe\njdoe@debian.org",
        "envelope": '{"msg":{},"msg_id":"m-1","seq_id":1,"timestamp":1,"topic":"a.b"}',
        **engine_columns,
    }
    marks = ", ".join(mark for _ in row)
    return f"INSERT INTO events ({', '.join(row)}) VALUES ({marks})", tuple(row.values())


def stored_envelopes(url: str) -> list[bytes]:
    import psycopg

    with psycopg.connect(url) as db:
        return [row[0] for row in db.execute("SELECT envelope FROM events ORDER BY seq_id")]


def test_a_postgresql_journal_of_the_first_schema_gets_its_people_lookup():
    import psycopg

    from bridge.journal.migrations import MIGRATIONS

    url, drop = postgres_schema()
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(MIGRATIONS[0])
            db.execute("CREATE TABLE bridge_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO bridge_schema VALUES (1)")
            db.execute(*_first_version_row("%s", base_key="a.b|1"))
        assert migrate(url) == (1, SCHEMA_VERSION)
        with PostgresJournal(url, NAMING) as journal:
            for who in ("JDOE", "jane doe", "jdoe@debian.org"):
                assert [e.seq_id for e in journal.find(Criteria(people=(who,)))] == [1]
                assert journal.count(Criteria(people=(who,))) == 1  # totals counted on upgrade
            journal.append([Event("a.b", {"note": "a second fact"}, dedup_key="two")], "smtp")
            # the old row's envelope is its JSON as bytes, the new one's compressed
            as_json, compressed = stored_envelopes(url)
            assert as_json.startswith(b'{"msg":{}') and compressed.startswith(b"\x78")
            before = journal.find(Criteria(), newest_first=False)
            assert [e.msg for e in before] == [{}, {"note": "a second fact"}]
            assert [e.seq_id for e in journal.find(Criteria(contains=("m-1",)))] == [1]
            assert [e.seq_id for e in journal.find(Criteria(contains=("second fact",)))] == [2]
            assert journal.check(thorough=True) == []
            # `bridge migrate` compresses what an older bridge stored as JSON, once
            done = bridge("migrate", "--to", url)
            assert done.returncode == 0, done.stderr
            assert b"1 envelope(s) stored as JSON by an older bridge compressed" in done.stdout
            assert b"packed envelopes up to seq_id 1 of 1 (100%" in done.stderr
            assert all(envelope.startswith(b"\x78") for envelope in stored_envelopes(url))
            assert journal.find(Criteria(), newest_first=False) == before
            again = bridge("migrate", "--to", url)
            assert again.returncode == 0 and b"compressed" not in again.stdout
    finally:
        drop()


# The journal as the first release wrote it: envelopes as text, people in the agent column.
FIRST_SQLITE_SCHEMA = """
CREATE TABLE events (
    seq_id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL,
    event_topic TEXT NOT NULL, timestamp INTEGER NOT NULL, event_time INTEGER NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE, source TEXT NOT NULL, agent TEXT NOT NULL DEFAULT '',
    live INTEGER NOT NULL DEFAULT 1, envelope TEXT NOT NULL);
CREATE INDEX events_timestamp ON events (timestamp);
CREATE INDEX events_event_time ON events (event_time);
CREATE INDEX events_topic ON events (topic);
CREATE TABLE event_packages (seq_id INTEGER NOT NULL, package TEXT NOT NULL);
CREATE INDEX event_packages_package ON event_packages (package);
CREATE TABLE event_bugs (seq_id INTEGER NOT NULL, bug INTEGER NOT NULL);
CREATE INDEX event_bugs_bug ON event_bugs (bug);
CREATE TABLE cursors (name TEXT PRIMARY KEY, seq_id INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE replay_progress (path TEXT PRIMARY KEY, offset INTEGER NOT NULL,
    mails INTEGER NOT NULL);
"""


def test_a_sqlite_journal_of_the_first_schema_is_brought_up_to_date(tmp_path):
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_SQLITE_SCHEMA)
        db.execute(*_first_version_row("?"))
    with SqliteJournal(path, NAMING) as journal:
        for who in ("JDOE", "jane doe", "jdoe@debian.org"):
            assert [e.seq_id for e in journal.find(Criteria(people=(who,)))] == [1]
            assert journal.count(Criteria(people=(who,))) == 1  # totals counted on upgrade
        assert journal.stats(Criteria(), "day") == {"1970-01-01": {"a.b": 1}}
        journal.append([Event("a.b", {"n": 2}, dedup_key="two")], "smtp")
        # the old row's envelope is text, the new one's compressed: both read the same way
        assert [e.msg for e in journal.find(Criteria(), newest_first=False)] == [{}, {"n": 2}]
        assert journal.topic_counts() == {"a.b": 2}


def test_packing_an_older_journals_envelopes_resumes_where_it_stopped():
    import psycopg

    from bridge.journal.copying import pack_envelopes
    from bridge.journal.migrations import MIGRATIONS

    url, drop = postgres_schema()
    try:
        with psycopg.connect(url, autocommit=True) as db:
            for migration in MIGRATIONS[:4]:  # the journal as version 4 left it
                db.execute(migration)
            db.execute("CREATE TABLE bridge_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO bridge_schema VALUES (4)")
            for n in range(1, 6):
                body = {"msg": {"n": n}, "msg_id": f"m-{n}", "seq_id": n, "timestamp": 1}
                envelope = json.dumps({**body, "topic": "a.b"}, separators=(",", ":"))
                db.execute(
                    "INSERT INTO events (seq_id, msg_id, topic, event_topic, timestamp,"
                    " event_time, dedup_key, base_key, source, envelope)"
                    " VALUES (%s, %s, 'org.debian.test.a.b', 'a.b', 1, 1, %s, %s, 'smtp', %s)",
                    (n, f"m-{n}", f"a.b|{n}", f"a.b|{n}", envelope),
                )
        assert migrate(url) == (4, SCHEMA_VERSION)
        with PostgresJournal(url, NAMING) as journal:
            before = journal.find(Criteria(), newest_first=False)
        assert [e.msg for e in before] == [{"n": n} for n in range(1, 6)]

        class Interrupted(Exception):
            pass

        def interrupt(done: int, total: int) -> None:
            raise Interrupted(done)

        with pytest.raises(Interrupted):
            pack_envelopes(url, chunk=2, progress=interrupt)
        kinds = [envelope[:1] for envelope in stored_envelopes(url)]
        assert kinds == [b"\x78", b"\x78", b"{", b"{", b"{"]  # the first chunk committed

        seen: list[tuple[int, int]] = []
        assert pack_envelopes(url, chunk=2, progress=lambda *p: seen.append(p)) == 3
        assert seen == [(4, 5), (5, 5)]
        assert all(envelope[:1] == b"\x78" for envelope in stored_envelopes(url))
        with PostgresJournal(url, NAMING) as journal:
            assert journal.find(Criteria(), newest_first=False) == before
        assert pack_envelopes(url) == 0  # nothing left to do
    finally:
        drop()


def test_a_version_3_sqlite_journal_gets_its_base_keys_and_trust_ranks_once(tmp_path):
    """The one write path: upgrading to schema 4 reads each row's base key from its dedup key
    (a superseding row's carried a suffix) and its rank from its envelope, once; from then on
    a dedup reads those columns, and a copy of the journal decides exactly as the original."""
    import sqlite3

    from bridge.journal.codec import pack
    from bridge.journal.writes import SUPERSEDING

    def body(verdict: str, n: int) -> dict:
        return {"n": n, "origin": {"auth": {"verdict": verdict}}}

    path = tmp_path / "journal.sqlite3"
    with SqliteJournal(path, NAMING) as journal:  # today's schema, to be taken back to 3
        journal.append([Event("a.b", body("none", 1), dedup_key="fact")], "smtp")
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq_id, msg_id, topic, event_topic, timestamp, event_time,"
                          " source, live, envelope FROM events").fetchall()  # fmt: skip
        db.executescript(
            "DROP TABLE events;"
            " CREATE TABLE events (seq_id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE,"
            " topic TEXT NOT NULL, event_topic TEXT NOT NULL, timestamp INTEGER NOT NULL,"
            " event_time INTEGER NOT NULL, dedup_key TEXT NOT NULL UNIQUE, source TEXT NOT NULL,"
            " agent TEXT NOT NULL DEFAULT '', live INTEGER NOT NULL DEFAULT 1,"
            " envelope BLOB NOT NULL); PRAGMA user_version = 3;"
        )
        (row,) = rows
        superseding = Envelope.from_json(_unpacked(row[8]))
        db.execute(
            "INSERT INTO events (seq_id, msg_id, topic, event_topic, timestamp, event_time,"
            " dedup_key, source, live, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row[:6], "a.b|fact", *row[6:]),  # as dedup_key_of keys it: topic|dedup key
        )
        better = {**superseding.msg, "origin": {"auth": {"verdict": "pass"}}}
        db.execute(
            "INSERT INTO events (seq_id, msg_id, topic, event_topic, timestamp, event_time,"
            " dedup_key, source, live, envelope) VALUES (2, 'x-2', ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row[2:6], f"a.b|fact{SUPERSEDING}2", *row[6:8],
             pack(_with_msg(superseding, better))),
        )  # fmt: skip
    with SqliteJournal(path, NAMING) as journal:
        columns = sql(path, "SELECT seq_id, base_key, trust_rank FROM events ORDER BY seq_id")
        assert columns == [(1, "a.b|fact", 1), (2, "a.b|fact", 2)]
        assert "dedup_key" not in {c[1] for c in sql(path, "PRAGMA table_info(events)")}
        # the pass-vouched row stands: the same fact vouched for no better is a duplicate,
        # and one saying otherwise a conflict naming it
        with journal.batch() as batch:
            same = batch.append([Event("a.b", body("pass", 1), dedup_key="fact")], "smtp")
            other = batch.append([Event("a.b", body("pass", 9), dedup_key="fact")], "smtp")
        assert same.duplicates == 1 and same.seq_ids == []
        assert [c.stored_msg_id for c in other.conflicts] == ["x-2"]


def _unpacked(stored: bytes) -> str:
    from bridge.journal.codec import unpack

    return unpack(stored)


def _with_msg(envelope: Envelope, msg: dict) -> str:
    from dataclasses import replace

    return replace(envelope, msg=msg, msg_id="x-2", seq_id=2).to_json()

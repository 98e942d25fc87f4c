"""Every history query the bridge offers is answered from an index or from the daily counts:
SQLite's EXPLAIN QUERY PLAN of each statement the journal runs never reads the events table
(or one of its indexes) from end to end, and PostgreSQL, told to avoid sequential scans,
always finds an index for them."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace

import pytest

from bridge.events import Event, Naming
from bridge.journal import Criteria, ReplaySelection, SqliteJournal, reads

NAMING = Naming("org.debian", "test", "svc")
DAY = 86400
START = 1_700_000_000
FULL_READ = re.compile(r"^SCAN (events|event_packages|event_bugs|event_people)\b")


def facts() -> list[Event]:
    topics = ("debbugs.bug.report", "debbugs.bug.closed", "dak.upload.accepted")
    return [
        Event(
            topics[n % 3],
            {"n": n, "summary": f"fact {n}"},
            dedup_key=f"fact-{n}",
            packages=(f"pkg{n % 7}",),
            bugs=(1000 + n,),
            people=(f"Person {n % 5}", f"p{n % 5}@debian.org"),
            occurred_at=f"2023-11-{1 + n % 28:02d}T10:00:00Z",
        )
        for n in range(200)
    ]


@pytest.fixture
def journal(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.sqlite3", NAMING)
    journal.append(facts(), "mbox:facts", backfill=True)  # dated by occurred_at
    yield journal
    journal.close()


def plans_of(journal: SqliteJournal, call) -> list[tuple[str, list[str]]]:
    """Each statement *call* makes the journal run, with its query plan."""
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    try:
        call()
    finally:
        journal._db.set_trace_callback(None)
    probe = sqlite3.connect(journal.path)
    probe.create_function("unpack", 1, lambda value: value, deterministic=True)
    try:
        return [
            (sql, [row[3] for row in probe.execute(f"EXPLAIN QUERY PLAN {sql}")])
            for sql in statements
            if sql.lstrip().upper().startswith("SELECT")
        ]
    finally:
        probe.close()


SEARCHES = [
    Criteria(),
    Criteria(topics=("debbugs",)),
    Criteria(topics=("org.debian.test.dak.upload.accepted",)),
    Criteria(topics=("debbugs.bug.closed", "dak")),
    Criteria(packages=("pkg3",)),
    Criteria(packages=("pkg3", "pkg4"), topics=("debbugs",)),
    Criteria(bugs=(1042,)),
    Criteria(people=("p2",)),
    Criteria(people=("Person 1",), not_packages=("pkg1",)),
    Criteria(not_topics=("dak",)),
    Criteria(not_packages=("pkg0",), not_people=("p1",)),
    Criteria(contains=("fact 1",), topics=("debbugs",)),
    Criteria(since=START, until=START + 3 * DAY),
    Criteria(topics=("dak",), since=START + 7, until=START + DAY + 9),
    Criteria(packages=("pkg2",), since=START),
    Criteria(after=150),
    Criteria(after=150, packages=("pkg5",)),
    Criteria(topics=("no.such.topic",), packages=("pkg1",)),
]


def searches(journal, criteria: Criteria) -> list:
    """Every read of the history that *criteria* make: pages, a count, statistics."""
    return [
        lambda: journal.find(criteria),
        lambda: journal.find(criteria, newest_first=False, limit=20, offset=40),
        lambda: journal.count(criteria),
        lambda: journal.stats(criteria, "day"),
        lambda: journal.stats(criteria, "month"),
    ]


@pytest.mark.parametrize("criteria", SEARCHES, ids=lambda c: repr(c)[8:70])
def test_searches_counts_and_stats_read_indexes_only(journal, criteria):
    for call in searches(journal, criteria):
        plans = plans_of(journal, call)
        assert plans, "the journal ran its queries where the trace sees them"
        for sql, plan in plans:
            assert not [line for line in plan if FULL_READ.match(line)], (sql, plan)


def test_the_check_sees_a_query_that_reads_every_event(journal):
    """What the tests above would catch: a topic test no index answers."""
    (sql, plan), *_ = plans_of(
        journal, lambda: journal._rows("SELECT COUNT(*) FROM events WHERE instr(topic, 'dak')")
    )
    assert [line for line in plan if FULL_READ.match(line)]


def test_the_answers_are_those_of_a_plain_reading(journal):
    """The planned queries answer what reading every event and testing it answers."""
    everything = journal.find(Criteria(), newest_first=False, limit=1000)
    facts = {e.seq_id: e for e in everything}
    tests = {
        Criteria(packages=("pkg3", "pkg4"), topics=("debbugs",)): lambda e: (
            e.packages[0] in ("pkg3", "pkg4") and ".debbugs." in e.topic
        ),
        Criteria(people=("Person 1",), not_packages=("pkg1",)): lambda e: (
            e.msg["n"] % 5 == 1 and e.packages != ["pkg1"]
        ),
        Criteria(not_packages=("pkg0",), not_people=("p1",)): lambda e: (
            e.packages != ["pkg0"] and e.msg["n"] % 5 != 1
        ),
        Criteria(after=150, packages=("pkg5",)): lambda e: (
            e.seq_id > 150 and e.packages == ["pkg5"]
        ),
    }
    for criteria, keep in tests.items():
        expected = [s for s in sorted(facts, reverse=True) if keep(facts[s])]
        assert [e.seq_id for e in journal.find(criteria, limit=1000)] == expected
        assert [e.seq_id for e in journal.find(criteria, limit=7, offset=5)] == expected[5:12]
        assert journal.count(criteria) == len(expected)


TEXT_SEARCHES = [
    Criteria(contains=("fact 1",), topics=("debbugs",)),
    Criteria(contains=("fact 19", "fact 3"), packages=("pkg3", "pkg5")),
    Criteria(contains=("fact 7",), since=START + 2 * DAY, until=START + 20 * DAY),
    Criteria(contains=("fact 4",), not_people=("p1",)),
    Criteria(contains=("fact 1",), people=("p1", "Person 1")),  # two streams, the same events
    Criteria(contains=("no such fact",), topics=("dak",)),
]


@pytest.mark.parametrize("chunk", [7, 500])
@pytest.mark.parametrize("criteria", TEXT_SEARCHES, ids=lambda c: repr(c)[8:70])
def test_text_searches_answer_what_reading_every_envelope_answers(
    journal, monkeypatch, chunk, criteria
):
    """Envelopes are searched a chunk of candidates at a time (stored compressed, no SQL
    engine can): with chunks smaller than the answer, the walks must resume where they
    stopped, merge several streams and keep their order."""
    from collections import Counter

    monkeypatch.setattr(reads, "CHUNK", chunk)
    every = journal.find(Criteria(), newest_first=False, limit=1000)
    others = journal.find(replace(criteria, contains=()), newest_first=False, limit=1000)
    wanted = {e.seq_id for e in others}
    expected = [
        e
        for e in every
        if e.seq_id in wanted and any(text in e.msg["summary"] for text in criteria.contains)
    ]
    ids = [e.seq_id for e in expected]
    assert [e.seq_id for e in journal.find(criteria, newest_first=False, limit=1000)] == ids
    assert [e.seq_id for e in journal.find(criteria, limit=1000)] == ids[::-1]
    assert [e.seq_id for e in journal.find(criteria, limit=9, offset=4)] == ids[::-1][4:13]
    assert journal.count(criteria) == len(ids)
    # each fact happened on the day of November its number gives (see the fixture)
    days = Counter(
        (f"2023-11-{1 + e.msg['n'] % 28:02d}", NAMING.event_topic(e.topic)) for e in expected
    )
    table = journal.stats(criteria, "day")
    assert {(when, t): n for when, row in table.items() for t, n in row.items()} == days


def test_replay_topic_counts_and_single_events_read_indexes_only(journal):
    msg_id = journal.find(Criteria(), limit=1)[0].msg_id
    now = journal.find(Criteria(), limit=1)[0].timestamp
    calls = [
        lambda: journal.replay(ReplaySelection(seq_ids=(3, 70)), 100),
        lambda: journal.replay(ReplaySelection(seq_id_ranges=((10, 60),)), 100),
        lambda: journal.replay(ReplaySelection(msg_ids=(msg_id,)), 100),
        lambda: journal.replay(ReplaySelection(times=((now - 60, now + 60),)), 100),
        lambda: journal.replay(ReplaySelection(seq_id_after=120), 100),
        lambda: journal.replay(ReplaySelection(after_time=now - 60), 100),
        lambda: journal.replay_count(ReplaySelection(seq_id_ranges=((10, 60),)), at_most=1000),
        lambda: journal.rows_after(100, 50, live_only=True),
        lambda: journal.by_msg_id(msg_id),
        lambda: journal.topic_counts(),
        lambda: journal.stats(Criteria(since=START, until=START + DAY), "hour"),
    ]
    for call in calls:
        plans = plans_of(journal, call)
        assert plans
        for sql, plan in plans:
            assert not [line for line in plan if FULL_READ.match(line)], (sql, plan)


def postgres_plans(journal, url: str, call) -> list[tuple[str, list[str]]]:
    """Each read *call* makes the PostgreSQL *journal* run, with the scans of its plan when
    whole-table strategies are priced out (sequential scans, hash and merge joins): on a
    table this small the planner would rightly prefer them, so what is checked is that an
    index-bounded plan exists (the bench times the planner's choices at ten million)."""
    import psycopg

    statements: list[tuple[str, tuple]] = []
    run = journal._rows

    def traced(sql, params=()):
        statements.append((sql, tuple(params)))
        return run(sql, params)

    journal._rows = traced
    try:
        call()
    finally:
        journal._rows = run
    found = []
    with psycopg.connect(url, autocommit=True) as db:
        for strategy in ("seqscan", "hashjoin", "mergejoin"):
            db.execute(f"SET enable_{strategy} = off")
        with psycopg.ClientCursor(db) as cursor:
            for sql, params in statements:
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                found.append((sql, list(scans(cursor.fetchone()[0][0]["Plan"]))))
    return found


def scans(plan: dict):
    """Each node of *plan* that reads a table or an index: its type, what it reads, and
    whether an index condition bounds it."""
    read = plan.get("Relation Name") or plan.get("Index Name")
    if read:
        yield f"{plan['Node Type']} {read}{' bounded' if 'Index Cond' in plan else ''}"
    for child in plan.get("Plans", []):
        yield from scans(child)


# A whole table or index read: a sequential scan, or an index scan that no condition
# bounds (PostgreSQL's way round a priced-out sequential scan).
WHOLE = re.compile(r"^(Seq Scan|Index Scan|Index Only Scan|Bitmap Index Scan) (events|event_)\w*$")


@pytest.fixture(scope="module")
def postgres():
    from bridge.journal.postgres import PostgresJournal
    from tests.helpers import postgres_schema

    url, drop = postgres_schema()
    journal = PostgresJournal(url, NAMING)
    journal.append(facts(), "mbox:facts", backfill=True)  # dated by occurred_at
    yield journal, url
    journal.close()
    drop()


@pytest.mark.parametrize("criteria", SEARCHES, ids=lambda c: repr(c)[8:70])
def test_postgresql_finds_an_index_for_every_search(postgres, criteria):
    journal, url = postgres
    for call in searches(journal, criteria):
        plans = postgres_plans(journal, url, call)
        assert plans, "the journal ran its queries where the trace sees them"
        for sql, found in plans:
            assert not [scan for scan in found if WHOLE.match(scan)], (sql, found)


def test_postgresql_finds_an_index_for_replays_single_events_and_the_dedup_probe(postgres):
    from bridge.journal.postgres import STRONGEST_OF_KEYS

    journal, url = postgres
    newest = journal.find(Criteria(), limit=1)[0]
    calls = [
        lambda: journal.replay(ReplaySelection(seq_ids=(3, 70)), 100),
        lambda: journal.replay(ReplaySelection(seq_id_ranges=((10, 60),)), 100),
        lambda: journal.replay(ReplaySelection(msg_ids=(newest.msg_id,)), 100),
        lambda: journal.replay(ReplaySelection(times=((newest.timestamp - 60, 2**40),)), 100),
        lambda: journal.replay(ReplaySelection(after_time=newest.timestamp - 60), 100),
        lambda: journal.rows_after(100, 50, live_only=True),
        lambda: journal.by_msg_id(newest.msg_id),
        lambda: journal.topic_counts(),
        # the probe a batch makes for the facts it brings (PostgresBatch.append)
        lambda: journal._rows(
            STRONGEST_OF_KEYS, (["debbugs.bug.report|fact-3", "dak.upload.accepted|fact-5"],)
        ),
    ]
    for call in calls:
        plans = postgres_plans(journal, url, call)
        assert plans
        for sql, found in plans:
            assert not [scan for scan in found if WHOLE.match(scan)], (sql, found)


def test_the_postgresql_check_sees_a_query_no_index_answers(postgres):
    journal, url = postgres
    call = lambda: journal._rows("SELECT COUNT(*) FROM events WHERE strpos(topic, 'dak') > 0")  # noqa: E731
    (sql, found), *_ = postgres_plans(journal, url, call)
    assert [scan for scan in found if WHOLE.match(scan)], found


def test_sqlites_dedup_probe_reads_the_base_key_index_and_no_envelope_is_unpacked(journal):
    """The one write path: a batch finds the stored facts of its keys by the base key's
    index, and their ranks in a column; EXPLAIN QUERY PLAN of the probe names the index."""
    again = facts()[:3]
    with journal.batch() as batch:
        plans = plans_of(
            journal, lambda: batch._strongest([f"{e.topic}|{e.dedup_key}" for e in again])
        )
    (probe,) = [(sql, found) for sql, found in plans if "base_key IN" in sql]
    assert any("USING INDEX events_base_key" in step for step in probe[1]), probe
    assert not [step for step in probe[1] if FULL_READ.match(step)], probe
    with journal.batch() as batch:
        assert batch.append(again, "smtp").duplicates == 3

from __future__ import annotations

import multiprocessing

from bridge.events import Event, Naming
from tests.helpers import open_journal_at

PER_WRITER = 5000


def insert_many(path: str, writer: int, count: int) -> None:
    journal = open_journal_at(path)
    batch = []
    for n in range(count):
        batch.append(Event("test.thing", {"writer": writer, "n": n}, dedup_key=f"{writer}-{n}"))
        if len(batch) == 50:
            journal.append(batch, source=f"writer{writer}")
            batch = []
    if batch:
        journal.append(batch, source=f"writer{writer}")
    journal.close()


def test_two_processes_writing_at_once_give_gap_free_seq_ids(journal_location: str):
    path = journal_location
    open_journal_at(path).close()
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=insert_many, args=(path, w, PER_WRITER)) for w in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    journal = open_journal_at(path)
    rows = journal.rows_after(0, limit=3 * PER_WRITER)
    assert [r.seq_id for r in rows] == list(range(1, 2 * PER_WRITER + 1))
    msg_ids = {e.msg_id for e in journal.envelopes(rows[:100])}
    assert len(msg_ids) == 100

    insert_many(path, 1, PER_WRITER)
    insert_many(path, 2, PER_WRITER)
    assert journal.last_seq_id() == 2 * PER_WRITER


def test_a_duplicate_is_reported_and_keeps_its_first_msg_id(journal_location: str):
    journal = open_journal_at(journal_location, Naming("org.debian", "test", "svc"))
    first = journal.append([Event("a.b", {"x": 1}, dedup_key="k")], source="smtp")
    again = journal.append(
        [Event("a.b", {"x": 1}, dedup_key="k"), Event("a.b", {"x": 3}, dedup_key="other")],
        source="mbox:f",
    )
    assert first.seq_ids == [1] and first.duplicates == 0
    assert again.seq_ids == [2] and again.duplicates == 1
    # the same key saying otherwise is no duplicate: a conflict, not stored (design §10)
    other = journal.append([Event("a.b", {"x": 2}, dedup_key="k")], source="mbox:f")
    assert other.seq_ids == [] and other.duplicates == 0
    assert [c.fields for c in other.conflicts] == [("x",)]
    envelope = next(journal.envelopes(journal.rows_after(0)))
    assert envelope.topic == "org.debian.test.a.b"
    assert envelope.msg == {"x": 1}
    assert envelope.username == "svc" and envelope.seq_id == 1


def test_cursor_survives_reopening(journal_location: str):
    path = journal_location
    with open_journal_at(path) as journal:
        journal.set_cursor("publisher", 17)
    with open_journal_at(path) as journal:
        assert journal.cursor("publisher") == 17
        assert journal.cursor("other") == 0


def _open_and_append(path: str, number: int, start) -> str:
    from bridge.events import Event
    from bridge.journal import SqliteJournal

    start.wait(30)
    try:
        with SqliteJournal(path) as journal:
            journal.append([Event("a.b", {"n": number}, dedup_key=str(number))], "test")
    except Exception as e:  # the parent reports it
        return f"{type(e).__name__}: {e}"
    return ""


def test_processes_opening_a_new_journal_at_once_all_get_the_schema(tmp_path):
    """serve and a CLI command started together both create the journal: one does, the
    other finds it done."""
    import multiprocessing

    from bridge.journal import SqliteJournal

    path = str(tmp_path / "journal.sqlite3")
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Barrier(6)
    with context.Pool(6) as pool:
        errors = pool.starmap(_open_and_append, [(path, n, start) for n in range(6)])
    assert errors == [""] * 6
    with SqliteJournal(path) as journal:
        assert journal.count() == 6


def test_every_dictionary_is_the_one_its_id_names():
    """A stored envelope names its dictionary by the Adler-32 of its bytes: a dictionary
    edited in place would leave every envelope packed with it unreadable."""
    import zlib

    from bridge.journal.dictionary import CURRENT, DICTIONARIES

    assert CURRENT in DICTIONARIES
    for named, dictionary in DICTIONARIES.items():
        assert zlib.adler32(dictionary) == named
        dictionary.decode("ascii")  # envelopes are ASCII JSON: so is what they match


def test_envelopes_of_every_stored_form_read_back_the_same():
    """Packed with the dictionary (now), zlib alone (SQLite before the dictionary), the JSON
    as text (before compression) or as bytes (PostgreSQL's text column turned bytea)."""
    import json
    import zlib

    from bridge.journal.codec import pack, unpack

    text = json.dumps(
        {"msg": {"body": "We believe that the bug you reported is fixed\n" * 3}, "seq_id": 7}
    )
    packed = pack(text)
    assert packed[1] & 0x20, "the zlib header names a preset dictionary"
    assert len(packed) < len(zlib.compress(text.encode(), 6)), "the dictionary pays"
    for stored in (
        packed,
        zlib.compress(text.encode(), 6),
        text,
        text.encode(),
        memoryview(packed),
    ):
        assert unpack(stored) == text


def test_a_damaged_or_foreign_envelope_is_an_error_not_a_wrong_answer():
    import struct
    import zlib

    import pytest

    from bridge.errors import JournalError
    from bridge.journal.codec import pack, unpack

    packed = pack('{"msg": {"summary": "a fact"}}')
    with pytest.raises(JournalError, match="damaged: its compressed stream is cut short"):
        unpack(packed[:-6])
    with pytest.raises(JournalError, match="damaged: .*incorrect data check"):
        unpack(packed[:-1] + bytes([packed[-1] ^ 1]))  # its checksum no longer matches
    with pytest.raises(JournalError, match="damaged: its compressed stream is cut short"):
        unpack(zlib.compress(b'{"seq_id": 1}')[:-3])  # written before the dictionary
    foreign = packed[:2] + struct.pack(">I", 0x12345678) + packed[6:]
    with pytest.raises(JournalError, match="unknown dictionary 0x12345678"):
        unpack(foreign)


def test_a_second_connection_in_a_process_leaves_the_first_ones_lock_in_place(tmp_path):
    """Opening a connection must not drop the locks the process's other connections hold
    (POSIX locks go with any descriptor of the file that is closed): another process
    closing its last connection would take itself for the last one of all and delete the
    write-ahead log under them, and they would read a journal that looks damaged."""
    import os

    from bridge.journal import SqliteJournal

    path = tmp_path / "journal.sqlite3"
    insert_many(str(path), 0, 1)
    first = SqliteJournal(path)
    assert first.last_seq_id() == 1  # reading: it holds the journal open in WAL mode
    second = SqliteJournal(path)
    wal = path.with_name(path.name + "-wal")
    context = multiprocessing.get_context("spawn")
    for writer in (1, 2):  # another process opens, appends and closes, twice
        process = context.Process(target=insert_many, args=(str(path), writer, 10))
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert os.path.exists(wal), "the other process deleted the log this one reads"
    assert first.last_seq_id() == second.last_seq_id() == 21
    assert len(first.rows_after(0, limit=100)) == 21
    first.close()
    second.close()


def test_an_older_journal_dates_arrived_rows_by_journal_time_once_upgraded(tmp_path):
    """Schema 5: an event that arrived (not from a backfill, not from another bus) is
    filtered by when it was journaled, as its timestamp says; the daily counts follow."""
    from bridge.events import Event, Naming
    from bridge.journal import Criteria
    from bridge.journal.sqlite import SqliteJournal
    from tests.helpers import sql

    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path, Naming())
    old = "2008-04-20T19:27:29Z"
    journal.append([Event("a.b", {"summary": "arrived"}, dedup_key="1", occurred_at=old)], "smtp")
    journal.append([Event("a.b", {"summary": "archived"}, dedup_key="2", occurred_at=old)],
                   "mbox:x", backfill=True)  # fmt: skip
    journal.close()
    # as a bridge before schema 5 wrote the arrived row: dated by its mail
    sql(path, "UPDATE events SET event_time = 1208719649")
    sql(path, "DELETE FROM topic_days")
    sql(path, "INSERT INTO topic_days VALUES ('org.debian.dev.a.b', 13980, 2)")
    sql(path, "PRAGMA user_version = 4")
    journal = SqliteJournal(path, Naming())
    try:
        (arrived_at,) = sql(path, "SELECT timestamp FROM events WHERE seq_id = 1")[0]
        assert sql(path, "SELECT seq_id, event_time FROM events ORDER BY seq_id") == [
            (1, arrived_at),
            (2, 1208719649),
        ]
        assert sql(path, "PRAGMA user_version") == [(5,)]
        today = journal.count(Criteria(since=arrived_at - 60))
        in_2008 = journal.count(Criteria(since=1208719000, until=1208720000))
        assert (today, in_2008) == (1, 1)
        days = dict(sql(path, "SELECT day, events FROM topic_days"))
        assert days == {1208719649 // 86400: 1, arrived_at // 86400: 1}
    finally:
        journal.close()

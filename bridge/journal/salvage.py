"""Checking a SQLite journal file and salvaging what is readable of a damaged one.

Salvage copies every readable row into a new file (its index rows with it), keeps the
damaged file beside it, and says which ``seq_id``s could not be read.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.journal.codec import unpack
from bridge.journal.migrations import events_in_shape, people_from_agents
from bridge.journal.planning import LOOKUP_TOTALS_FROM_LOOKUPS, LOOKUPS, SQL_DAY
from bridge.journal.sqlite import INSERT_EVENT, SqliteJournal, journal_files, sqlite_check

CHUNK = 1000
_TABLES = ("cursors", "counters", "replay_progress")


@dataclass
class FileCheck:
    """What checking one journal file found."""

    damage: list[str] = field(default_factory=list)
    missing: int = 0  # seq_ids below the last one that hold no row
    last: int = 0


def check_file(path: Path) -> FileCheck:
    """SQLite's integrity check, then the bridge's promise that ``seq_id`` has no gap."""
    found = FileCheck()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found.damage = sqlite_check(db, thorough=True)
            if not found.damage:
                sql = "SELECT COUNT(*), COALESCE(MAX(seq_id), 0) FROM events"
                count, found.last = db.execute(sql).fetchone()
                found.missing = found.last - count
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        found.damage = [str(e)]
    return found


@dataclass
class Salvage:
    """What a salvage did."""

    copied: int = 0
    lost: list[int] = field(default_factory=list)
    unreadable_tables: list[str] = field(default_factory=list)
    kept_as: str = ""


def salvage(path: Path) -> Salvage:
    """Replace the journal at *path* by a copy of every row that can still be read."""
    done = Salvage()
    salvaged = path.with_name(path.name + ".salvaged")
    for leftover in journal_files(salvaged):
        leftover.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = SqliteJournal(salvaged)
    try:
        copied = _copy_events(source, target._db, done)
        _copy_index(source, target._db, copied)
        for table in _TABLES:
            _copy_table(source, target._db, table, done)
    finally:
        source.close()
        target.close()
    kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for old in journal_files(path):
        os.replace(old, kept.with_name(kept.name + old.name[len(path.name) :]))
    os.replace(salvaged, path)
    done.kept_as = kept.name
    return done


def _copy_events(source: sqlite3.Connection, target: sqlite3.Connection, done: Salvage) -> set[int]:
    """Copy the readable events; their seq_ids."""
    copied: set[int] = set()
    columns = events_in_shape(source)
    try:
        (last,) = source.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
    except sqlite3.DatabaseError:
        last = 0
    for low in range(1, last + 1, CHUNK):
        rows = list(_readable(source, columns, low, min(low + CHUNK - 1, last)))
        done.lost += [seq_id for seq_id, row in rows if row is None]
        found = [row for _, row in rows if row is not None]
        target.execute("BEGIN IMMEDIATE")
        target.executemany(INSERT_EVENT, found)
        target.execute("COMMIT")
        done.copied += len(found)
        copied.update(int(row[0]) for row in found)  # type: ignore[call-overload]
    return copied


def _readable(
    db: sqlite3.Connection, columns: str, low: int, high: int
) -> Iterator[tuple[int, tuple[object, ...] | None]]:
    """Each seq_id in [low, high] with its row, or None where it cannot be read (bisecting)."""
    try:
        rows = db.execute(
            f"SELECT {columns} FROM events WHERE seq_id BETWEEN ? AND ? ORDER BY seq_id",
            (low, high),
        ).fetchall()
    except sqlite3.DatabaseError:
        if low == high:
            yield low, None
            return
        middle = (low + high) // 2
        yield from _readable(db, columns, low, middle)
        yield from _readable(db, columns, middle + 1, high)
        return
    found = {row[0]: row for row in rows}
    for seq_id in range(low, high + 1):
        yield seq_id, found.get(seq_id)


def _copy_index(source: sqlite3.Connection, target: sqlite3.Connection, copied: set[int]) -> None:
    """The lookups of the copied events, read back (packages and bugs rebuilt from the
    envelopes when their table is damaged; people, which envelopes do not carry, from the
    agent column journals before the people lookup kept), their totals and the daily counts."""
    for lookup, (table, column) in LOOKUPS.items():
        try:
            rows = [
                (seq_id, value)
                for seq_id, value in source.execute(f"SELECT seq_id, {column} FROM {table}")
                if seq_id in copied
            ]
        except sqlite3.DatabaseError:  # the index itself is damaged
            rows = _rebuilt(source, target, lookup)
        target.execute("BEGIN IMMEDIATE")
        target.executemany(f"INSERT OR IGNORE INTO {table} (seq_id, {column}) VALUES (?, ?)", rows)
        target.execute("COMMIT")
    target.execute("BEGIN IMMEDIATE")
    target.execute(
        f"INSERT INTO topic_days (topic, day, events) SELECT topic, {SQL_DAY}, COUNT(*)"
        " FROM events GROUP BY 1, 2"
    )
    for statement in LOOKUP_TOTALS_FROM_LOOKUPS:
        target.execute(statement)
    target.execute("COMMIT")


def _rebuilt(
    source: sqlite3.Connection, target: sqlite3.Connection, lookup: str
) -> list[tuple[int, object]]:
    if lookup == "people":  # only journals before schema 4 have the agent column
        try:
            return list(people_from_agents(source))
        except sqlite3.DatabaseError:
            return []
    envelopes = target.execute("SELECT seq_id, envelope FROM events")
    return [
        (seq_id, value)
        for seq_id, envelope in envelopes
        for value in (json.loads(unpack(envelope)).get("index") or {}).get(lookup, [])
    ]


def _copy_table(
    source: sqlite3.Connection, target: sqlite3.Connection, table: str, done: Salvage
) -> None:
    try:
        rows = source.execute(f"SELECT * FROM {table}").fetchall()
    except sqlite3.DatabaseError:
        done.unreadable_tables.append(table)
        return
    if rows:
        marks = ",".join("?" * len(rows[0]))
        target.execute("BEGIN IMMEDIATE")
        target.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
        target.execute("COMMIT")

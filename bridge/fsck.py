"""``bridge fsck``: check the spool and the journal, and salvage a damaged journal.

The spool check walks every segment the way the worker reads it and lists torn tails
(never acknowledged; cut at the next start) and damaged spans (kept aside in ``damaged/``
when the worker reaches them). The journal check is SQLite's integrity check plus the
bridge's own promise that ``seq_id`` has no gap. Repair copies every readable row of a
damaged journal into a new file, keeps the damaged one beside it, and says which
``seq_id``s could not be read.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.events import bugs_of
from bridge.journal import Journal, package_names, sqlite_check
from bridge.segment import records, valid_length
from bridge.spool import Spool

CHUNK = 1000


@dataclass
class Report:
    """What a check found: one line per problem, and what a repair did."""

    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    journal_damaged: bool = False

    @property
    def clean(self) -> bool:
        return not self.problems


def check_spool(spool: Spool, report: Report) -> None:
    numbers = spool.segment_numbers()
    for number in numbers:
        path = spool.segment_path(number)
        newest = number == numbers[-1]
        for record in records(path, number, 0, newest=newest):
            if record.damage:
                report.problems.append(f"spool {path.name}: {record.damage}")
        tail = path.stat().st_size - valid_length(path, newest=newest)
        if newest and tail > 0:
            report.problems.append(
                f"spool {path.name}: a torn tail of {tail} bytes (a crash mid-write, never"
                " acknowledged; cut at the next start)"
            )


def check_journal(path: Path, report: Report) -> None:
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = sqlite_check(db, thorough=True)
            if found:
                report.problems += [f"journal: {line}" for line in found]
                report.journal_damaged = True
                return
            count, last = db.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq_id), 0) FROM events"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        report.problems.append(f"journal: {e}")
        report.journal_damaged = True
        return
    if count != last:
        report.problems.append(
            f"journal: {last - count} seq_id(s) missing below {last} (lost to damage"
            " earlier; replay answers 'no message' for them)"
        )


def salvage_journal(path: Path, report: Report) -> None:
    """Copy every readable row into a new journal; keep the damaged file beside it."""
    salvaged = path.with_name(path.name + ".salvaged")
    for leftover in _family(salvaged):
        leftover.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = Journal(salvaged)
    try:
        copied, lost = _copy_events(source, target)
        for table in ("cursors", "counters", "replay_progress"):
            _copy_table(source, target, table, report)
    finally:
        source.close()
        target.close()
    kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for old in _family(path):
        os.replace(old, kept.with_name(kept.name + old.name[len(path.name) :]))
    os.replace(salvaged, path)
    report.repaired.append(f"journal: {copied} event(s) salvaged into a new {path.name}")
    if lost:
        report.repaired.append(f"journal: LOST seq_id(s) {_ranges(lost)}")
    report.repaired.append(f"journal: the damaged file is kept as {kept.name}")


def _family(path: Path) -> list[Path]:
    candidates = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return [p for p in candidates if p.exists()]


def _copy_events(source: sqlite3.Connection, target: Journal) -> tuple[int, list[int]]:
    copied = 0
    lost: list[int] = []
    try:
        (last,) = source.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
    except sqlite3.DatabaseError:
        last = 0
    for low in range(1, last + 1, CHUNK):
        for seq_id, row in _readable(source, low, min(low + CHUNK - 1, last)):
            if row is None:
                lost.append(seq_id)
            else:
                _insert_row(target, row)
                copied += 1
    return copied, lost


COLUMNS = (
    "seq_id, msg_id, topic, event_topic, timestamp, event_time, dedup_key, source, agent,"
    " live, envelope"
)


def _readable(
    db: sqlite3.Connection, low: int, high: int
) -> Iterator[tuple[int, tuple[object, ...] | None]]:
    """Each seq_id in [low, high] with its row, or None where it cannot be read (bisecting)."""
    try:
        rows = db.execute(
            f"SELECT {COLUMNS} FROM events WHERE seq_id BETWEEN ? AND ? ORDER BY seq_id",
            (low, high),
        ).fetchall()
    except sqlite3.DatabaseError:
        if low == high:
            yield low, None
            return
        middle = (low + high) // 2
        yield from _readable(db, low, middle)
        yield from _readable(db, middle + 1, high)
        return
    found = {row[0]: row for row in rows}
    for seq_id in range(low, high + 1):
        yield seq_id, found.get(seq_id)


def _insert_row(target: Journal, row: tuple[object, ...]) -> None:
    seq_id, envelope = row[0], str(row[-1])
    body = json.loads(envelope).get("msg", {})
    with target.transaction() as db:
        db.execute(f"INSERT INTO events ({COLUMNS}) VALUES ({','.join('?' * 11)})", row)
        db.executemany(
            "INSERT INTO event_packages (seq_id, package) VALUES (?, ?)",
            [(seq_id, p) for p in package_names(body)],
        )
        db.executemany(
            "INSERT INTO event_bugs (seq_id, bug) VALUES (?, ?)",
            [(seq_id, b) for b in bugs_of(body)],
        )


def _copy_table(source: sqlite3.Connection, target: Journal, table: str, report: Report) -> None:
    try:
        rows = source.execute(f"SELECT * FROM {table}").fetchall()
    except sqlite3.DatabaseError as e:
        report.repaired.append(f"journal: table {table} could not be read ({e}); started empty")
        return
    if rows:
        marks = ",".join("?" * len(rows[0]))
        with target.transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)


def _ranges(numbers: list[int]) -> str:
    spans: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)

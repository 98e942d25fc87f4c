"""``bridge fsck``: check the spool and the journal, and salvage a damaged journal.

The spool check walks every segment the way the worker reads it and lists torn tails
(never acknowledged; cut at the next start) and damaged spans (kept aside in ``damaged/``
when the worker reaches them). The journal check is SQLite's integrity check plus the
bridge's own promise that ``seq_id`` has no gap; a PostgreSQL journal (``[journal] url``) is
checked for that promise and for rows without envelopes. Repair copies every readable row of a
damaged journal into a new file, keeps the damaged one beside it, and says which
``seq_id``s could not be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.intake.segment import records
from bridge.intake.spool import Spool
from bridge.journal.salvage import check_file, salvage


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
        end = 0  # where the last record, whole or damaged, ends
        for record in records(path, number, 0, newest=newest):
            end = record.end
            if record.damage:
                report.problems.append(f"spool {path.name}: {record.damage}")
        tail = path.stat().st_size - end
        if newest and tail > 0:
            report.problems.append(
                f"spool {path.name}: a torn tail of {tail} bytes (a crash mid-write, never"
                " acknowledged; cut at the next start)"
            )


def check_journal(path: Path, report: Report) -> None:
    if not path.exists():
        return
    found = check_file(path)
    if found.damage:
        report.problems += [f"journal: {line}" for line in found.damage]
        report.journal_damaged = True
    elif found.missing:
        report.problems.append(
            f"journal: {found.missing} seq_id(s) missing below {found.last} (lost to damage"
            " earlier; replay answers 'no message' for them)"
        )


def check_shared_journal(url: str, report: Report) -> None:
    """The PostgreSQL journal at *url*: reached, of this bridge's schema, every ``seq_id``
    once and every row with its envelope; one that cannot be reached is a problem (fsck
    never calls sound what it did not check)."""
    from bridge.errors import JournalError
    from bridge.journal.postgres import PostgresJournal, redacted

    try:
        journal = PostgresJournal(url, auto_migrate=False)
    except JournalError as e:
        report.problems.append(f"journal {redacted(url)}: not checked: {e}")
        return
    try:
        report.problems += [
            f"journal {redacted(url)}: {line}" for line in journal.check(thorough=True)
        ]
    except JournalError as e:
        report.problems.append(f"journal {redacted(url)}: check interrupted: {e}")
    finally:
        journal.close()


def salvage_journal(path: Path, report: Report) -> None:
    """Copy every readable row into a new journal; keep the damaged file beside it."""
    done = salvage(path)
    report.repaired.append(f"journal: {done.copied} event(s) salvaged into a new {path.name}")
    if done.lost:
        report.repaired.append(f"journal: LOST seq_id(s) {_ranges(done.lost)}")
    for table in done.unreadable_tables:
        report.repaired.append(f"journal: table {table} could not be read; started empty")
    report.repaired.append(f"journal: the damaged file is kept as {done.kept_as}")


def _ranges(numbers: list[int]) -> str:
    spans: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)

"""The journal: the durable, ordered record of every event (an outbox between parsers and
the buses), behind one typed interface, :class:`Journal`.

SQLite in the state directory is the embedded engine; :func:`open_journal` is the one way
the bridge opens the journal its configuration names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.journal.model import (
    PERIODS,
    AppendResult,
    Batch,
    Conflict,
    Criteria,
    Journal,
    ReplaySelection,
    Row,
)

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.journal.sqlite import JOURNAL_FILE, SqliteJournal, classify

# The embedded engine's names, loaded on first use: importing the journal's model (its
# types, its periods) costs no database library.
_ENGINE = ("APPEND_CACHE_KIB", "CACHE_KIB", "JOURNAL_FILE", "SqliteJournal", "classify")


def __getattr__(name: str) -> object:
    if name in _ENGINE:
        from bridge.journal import sqlite

        return getattr(sqlite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "JOURNAL_FILE",
    "PERIODS",
    "AppendResult",
    "Conflict",
    "Batch",
    "Criteria",
    "Journal",
    "ReplaySelection",
    "Row",
    "SqliteJournal",
    "classify",
    "open_journal",
]


def open_journal(config: Config, *, durable: bool = True, appending: bool = False) -> Journal:
    """The journal *config* names: ``[journal] url`` (``postgresql://…``), else the embedded
    SQLite file in the state directory.

    *durable* False lets a SQLite connection that only moves cursors (the publisher) skip the
    sync of its own commits: a lost cursor means re-sending, which at-least-once allows.
    *appending* gives a SQLite connection that mostly appends (replay-mbox) a smaller cache.
    """
    if config.journal.url:
        from bridge.journal.postgres import PostgresJournal

        return PostgresJournal(config.journal.url, config.naming)
    from bridge.journal.sqlite import APPEND_CACHE_KIB, CACHE_KIB, JOURNAL_FILE, SqliteJournal

    cache = APPEND_CACHE_KIB if appending else CACHE_KIB
    return SqliteJournal(
        config.state_path / JOURNAL_FILE, config.naming, durable=durable, cache_kib=cache
    )

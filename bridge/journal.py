"""The journal: SQLite (WAL) record of every event, in gap-free ``seq_id`` order.

It is the outbox between the parsers and the bus. Several processes may append at once
(``bridge serve`` and ``bridge replay-mbox``): each append takes SQLite's write lock with
``BEGIN IMMEDIATE`` and numbers its rows from the current maximum, so ``seq_id`` never has
a gap. A UNIQUE dedup key makes a second append of the same fact a counted no-op.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import JournalDamaged, JournalError, JournalUnavailable
from bridge.events import Envelope, Event, Naming, bugs_of, new_msg_id
from bridge.spool import private_dir

JOURNAL_FILE = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq_id      INTEGER PRIMARY KEY,
    msg_id      TEXT NOT NULL UNIQUE,
    topic       TEXT NOT NULL,
    event_topic TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    event_time  INTEGER NOT NULL,
    dedup_key   TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    agent       TEXT NOT NULL DEFAULT '',
    live        INTEGER NOT NULL DEFAULT 1,
    envelope    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_timestamp ON events (timestamp);
CREATE INDEX IF NOT EXISTS events_event_time ON events (event_time);
CREATE INDEX IF NOT EXISTS events_topic ON events (topic);
CREATE TABLE IF NOT EXISTS event_packages (
    seq_id  INTEGER NOT NULL REFERENCES events (seq_id),
    package TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_packages_package ON event_packages (package);
CREATE TABLE IF NOT EXISTS event_bugs (
    seq_id INTEGER NOT NULL REFERENCES events (seq_id),
    bug    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS event_bugs_bug ON event_bugs (bug);
CREATE TABLE IF NOT EXISTS cursors (
    name   TEXT PRIMARY KEY,
    seq_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_progress (
    path   TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    mails  INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Row:
    """One journal row as the publisher and the replay endpoint need it."""

    seq_id: int
    topic: str
    envelope: str


@dataclass
class AppendResult:
    """What one append did: the new rows' ``seq_id``s and how many events were duplicates."""

    seq_ids: list[int] = field(default_factory=list)
    duplicates: int = 0


class Journal:
    """A connection to the journal in *path* (a file, created on first use)."""

    def __init__(
        self,
        path: str | Path,
        naming: Naming | None = None,
        *,
        timeout: float = 60.0,
        durable: bool = True,
    ):
        self.path = Path(path)
        self.naming = naming or Naming()
        self._counter = itertools.count(1)
        try:
            private_dir(self.path.parent)
            # SQLite gives its -wal and -shm files the database file's mode: create it private.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # A connection that only moves a cursor (the publisher) may lose its last commit
            # on power failure: that means re-sending, which at-least-once allows.
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise classify(e, f"cannot open journal {self.path}") from e
        except OSError as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from e

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, naming: Naming | None = None) -> Journal:
        return cls(Path(state_dir) / JOURNAL_FILE, naming)

    def close(self) -> None:
        self._db.close()

    def check(self, *, thorough: bool = False) -> list[str]:
        """SQLite's own check of the file: ``[]`` when sound, else what it found.

        The quick check reads every page (seconds on millions of events); the thorough one
        also checks that every index matches its table.
        """
        return sqlite_check(self._db, thorough=thorough)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------

    def append(self, events: Sequence[Event], source: str) -> AppendResult:
        """Store *events* in one transaction; events whose key is known count as duplicates.

        Every event must carry a dedup key (the pipeline supplies one when a parser did not).
        """
        if not events:
            return AppendResult()
        with self.transaction() as db:
            return self.append_in(db, events, source)

    def append_in(
        self, db: sqlite3.Connection, events: Sequence[Event], source: str, *, live: bool = True
    ) -> AppendResult:
        """Like :meth:`append`, inside a transaction the caller holds (see :meth:`transaction`).

        Rows appended with ``live=False`` are history: journaled and queryable, never published.
        """
        result = AppendResult()
        if not events:
            return result
        (last,) = db.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
        for event in events:
            key = dedup_key_of(event)
            if db.execute("SELECT 1 FROM events WHERE dedup_key = ?", (key,)).fetchone():
                result.duplicates += 1
                continue
            last += 1
            self._insert(db, last, event, key, source, live)
            result.seq_ids.append(last)
        return result

    def _insert(
        self, db: sqlite3.Connection, seq_id: int, event: Event, key: str, source: str, live: bool
    ) -> None:
        now = datetime.now(UTC)
        envelope = Envelope(
            topic=self.naming.topic(event.topic),
            msg=event.body,
            timestamp=int(now.timestamp()),
            msg_id=new_msg_id(now),
            i=next(self._counter),
            username=self.naming.username,
            seq_id=seq_id,
        )
        db.execute(
            "INSERT INTO events (seq_id, msg_id, topic, event_topic, timestamp, event_time,"
            " dedup_key, source, agent, live, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq_id,
                envelope.msg_id,
                envelope.topic,
                event.topic,
                envelope.timestamp,
                _event_time(event.body, envelope.timestamp),
                key,
                source,
                _agent_text(event.body),
                int(live),
                envelope.to_json(),
            ),
        )
        db.executemany(
            "INSERT INTO event_packages (seq_id, package) VALUES (?, ?)",
            [(seq_id, p) for p in package_names(event.body)],
        )
        db.executemany(
            "INSERT INTO event_bugs (seq_id, bug) VALUES (?, ?)",
            [(seq_id, b) for b in bugs_of(event.body)],
        )

    def transaction(self) -> _Transaction:
        """``with journal.transaction() as db:`` — one write transaction (BEGIN IMMEDIATE)."""
        return _Transaction(self._db)

    # -- reading -----------------------------------------------------------------------

    def last_seq_id(self) -> int:
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
        return int(last)

    def rows_after(self, seq_id: int, limit: int = 500, *, live_only: bool = False) -> list[Row]:
        live = " AND live = 1" if live_only else ""
        cur = self._db.execute(
            f"SELECT seq_id, topic, envelope FROM events WHERE seq_id > ?{live}"
            " ORDER BY seq_id LIMIT ?",
            (seq_id, limit),
        )
        return [Row(*r) for r in cur]

    def select(
        self,
        where: str,
        params: Iterable[Any],
        *,
        order: str = "ASC",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Row]:
        """Rows matching an SQL *where* clause over ``events`` (used by queries and replay)."""
        sql = f"SELECT seq_id, topic, envelope FROM events WHERE {where} ORDER BY seq_id {order}"
        args = list(params)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return [Row(*r) for r in self._db.execute(sql, args)]

    def count(self, where: str = "1", params: Iterable[Any] = ()) -> int:
        (n,) = self._db.execute(
            f"SELECT COUNT(*) FROM events WHERE {where}", list(params)
        ).fetchone()
        return int(n)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, list(params))

    # -- cursors and counters ------------------------------------------------------------

    def cursor(self, name: str) -> int:
        row = self._db.execute("SELECT seq_id FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, seq_id: int, db: sqlite3.Connection | None = None) -> None:
        """Record a position (a publisher's seq_id, the worker's spool position)."""
        sql = (
            "INSERT INTO cursors (name, seq_id) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET seq_id = excluded.seq_id"
        )
        if db is not None:
            db.execute(sql, (name, seq_id))
            return
        with self.transaction() as tx:
            tx.execute(sql, (name, seq_id))

    def add_counters(self, deltas: dict[str, int], db: sqlite3.Connection | None = None) -> None:
        """Add to named counters (``bridge status``), inside *db*'s transaction if given."""
        items = [(k, v) for k, v in deltas.items() if v]
        if not items:
            return
        sql = (
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
        )
        if db is not None:
            db.executemany(sql, items)
            return
        with self.transaction() as tx:
            tx.executemany(sql, items)

    def counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, value FROM counters ORDER BY name"))

    def iter_envelopes(self, rows: Iterable[Row]) -> Iterator[Envelope]:
        for row in rows:
            yield Envelope.from_json(row.envelope)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        started = time.monotonic()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            waited = time.monotonic() - started
            raise classify(e, f"journal is not writable (waited {waited:.1f}s)") from e
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise classify(e, "journal commit failed") from e
        else:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise classify(exc, "journal write failed") from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def sqlite_check(db: sqlite3.Connection, *, thorough: bool = False) -> list[str]:
    """What SQLite's quick (or integrity) check finds wrong with *db*, one line each."""
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        rows = [r[0] for r in db.execute(f"PRAGMA {pragma}(100)")]
    except sqlite3.DatabaseError as e:
        return [str(e)]
    if rows == ["ok"]:
        return []
    lines = [line for row in rows for line in str(row).splitlines()]
    return [line for line in lines if not line.startswith("***")]


def classify(error: sqlite3.Error, what: str) -> JournalError:
    """A SQLite error as the bridge's: retry later, damaged file, or this write's own fault."""
    text = str(error)
    if isinstance(error, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text
    ):
        return JournalDamaged(f"{what}: the journal is damaged ({text}); run 'bridge fsck'")
    if isinstance(error, sqlite3.OperationalError):
        return JournalUnavailable(f"{what}: {text}")
    return JournalError(f"{what}: {text}")


def dedup_key_of(event: Event) -> str:
    if not event.dedup_key:
        raise JournalError(f"event {event.topic} has no dedup key")
    return f"{event.topic}|{event.dedup_key}"


def package_names(body: Any) -> list[str]:
    """The source packages an event body names (the journal's package index)."""
    return _strings(body.get("packages")) if isinstance(body, dict) else []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return sorted({v for v in value if isinstance(v, str) and v})
    return []


def _agent_text(body: Any) -> str:
    people = [body.get("agent"), body.get("changed_by"), body.get("maintainer")]
    parts = []
    for person in people:
        if isinstance(person, dict):
            parts += [str(person.get("name") or ""), str(person.get("email") or "")]
    return "\n".join(p.lower() for p in parts if p)


def _event_time(body: Any, journaled: int) -> int:
    """When the fact happened: the mail's date when known (history replays), else now."""
    origin = body.get("origin") if isinstance(body, dict) else None
    date = origin.get("date") if isinstance(origin, dict) else None
    if isinstance(date, str):
        try:
            return int(
                datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            )
        except ValueError:
            pass
    return journaled

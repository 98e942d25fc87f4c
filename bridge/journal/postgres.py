"""The shared journal: PostgreSQL, for bridges on several hosts writing one history.

Same contract as the SQLite journal. Every write transaction first takes a transaction-level
advisory lock, then numbers its rows from the current maximum: writers on different hosts
commit one after another, so ``seq_id`` has no gap and commits in order, and a dedup key
seen by two hosts makes one event. Each commit NOTIFYs ``bridge_journal``, which wakes the
publishers (no polling). A sink (the ZeroMQ publisher, the AMQP sink) is run by the one
instance holding its session-level advisory lock; when that instance dies, PostgreSQL
releases the lock and another takes over.

The schema is versioned (``bridge_schema``); :func:`migrate` applies what is missing, and
every connection checks the version first.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bridge.errors import JournalError, JournalUnavailable
from bridge.events import Naming
from bridge.journal.migrations import MIGRATIONS, schema_version
from bridge.journal.migrations import POSTGRES_SCHEMA_VERSION as SCHEMA_VERSION
from bridge.journal.planning import POSTGRES
from bridge.journal.reads import SqlJournal
from bridge.journal.writes import (
    EVENT_COLUMNS,
    SqlBatch,
    Stored,
)

log = logging.getLogger(__name__)

CHANNEL = "bridge_journal"
WRITE_LOCK = "bridge:journal-write"
# The best-vouched stored event (trust rank, msg_id, envelope) of each base key in an array.
STRONGEST_OF_KEYS = (
    "SELECT k.base_key, s.trust_rank, s.msg_id, s.envelope FROM unnest(%s::text[]) AS k(base_key)"
    " CROSS JOIN LATERAL (SELECT trust_rank, msg_id, envelope FROM events"
    " WHERE events.base_key = k.base_key"
    " ORDER BY trust_rank DESC, seq_id DESC LIMIT 1) AS s"
)
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})"

_PERIODS = {
    "hour": "to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')",
    "day": "to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    # SQLite's %W: the week of the year, weeks starting on Monday, the days before the
    # year's first Monday in week 00
    "week": (
        "to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY') || '-W' || lpad(("
        "(extract(doy FROM to_timestamp({seconds}) AT TIME ZONE 'UTC')::int - 1 + 7"
        " - (extract(isodow FROM to_timestamp({seconds}) AT TIME ZONE 'UTC')::int - 1)) / 7"
        ")::text, 2, '0')"
    ),
    "month": "to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM')",
}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:  # an optional dependency: say how to get it
        raise JournalError(
            "a postgresql:// journal needs psycopg: pip install 'debian-bus-bridge[postgresql]'"
        ) from e
    return psycopg


# A server that stops answering must cost a bounded wait, never a hang: no statement runs
# longer than this (migrations excepted), and TCP keepalives and an unacknowledged-data
# timeout find a peer that vanished.
STATEMENT_TIMEOUT_MS = 30_000
TCP_USER_TIMEOUT_MS = 20_000
# A server that is stopped (SIGSTOP, a hung host whose kernel still answers TCP) enforces
# no statement timeout: past this many seconds without an answer the bridge cuts the
# connection itself.
CLIENT_TIMEOUT = 40.0


def connect(
    url: str, *, autocommit: bool = True, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> Any:
    """A connection named after this host and process (``bridge status`` shows who leads)."""
    psycopg = _psycopg()
    try:
        db = psycopg.connect(
            url,
            autocommit=autocommit,
            application_name=f"debian-bus-bridge@{socket.gethostname()}:{os.getpid()}",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        )
    except psycopg.OperationalError as e:
        raise JournalUnavailable(f"cannot connect to the journal at {redacted(url)}: {e}") from e
    # The journal's queries are short index walks: compiling one with JIT (which PostgreSQL
    # does once a plan's estimated cost is high, as it is on a table without statistics
    # yet) costs more than running it.
    db.execute("SET jit = off")
    db.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
    if not autocommit:
        db.commit()
    return db


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def redacted(url: str) -> str:
    """*url* without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def migrate(url: str) -> tuple[int, int]:
    """Apply the migrations the journal at *url* lacks; (version before, version after)."""
    # a migration rewrites whole tables: it may take longer than any query
    with connect(url, autocommit=True, statement_timeout_ms=0) as db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(hashtext('bridge:migrate'))")
        before = schema_version(db)
        for version in range(before, SCHEMA_VERSION):
            db.execute(MIGRATIONS[version])
            db.execute("INSERT INTO bridge_schema (version) VALUES (%s)", (version + 1,))
            log.info("journal schema migrated to version %d", version + 1)
    return before, max(before, SCHEMA_VERSION)


class PostgresJournal(SqlJournal):
    """A connection to the shared journal at *url*."""

    dialect = POSTGRES

    def __init__(self, url: str, naming: Naming | None = None, *, auto_migrate: bool = True):
        self.url = url
        self.naming = naming or Naming()
        self._counter = itertools.count(1)
        self._not_before = 0  # the newest row's timestamp, while a batch appends
        self._lock = threading.RLock()  # one connection, used from one thread at a time
        if auto_migrate:
            migrate(url)
        self._db = connect(url)
        version = schema_version(self._db)
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"the journal at {redacted(url)} has schema version {version}, this bridge"
                f" needs {SCHEMA_VERSION}: run 'bridge migrate'"
            )
        self._leading: set[str] = set()
        self._watchers: list[threading.Thread] = []
        self._closed = threading.Event()
        self._waiting_since: float | None = None  # when the call now waiting on the server began
        threading.Thread(target=self._cut_when_hung, name="journal-deadline", daemon=True).start()

    @property
    def location(self) -> str:
        return redacted(self.url)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()

    # -- writing -----------------------------------------------------------------------

    def _connected(self) -> None:
        """Reconnect after the database went away (a restart, a dropped session); the
        sinks' session locks went with the old session."""
        if not (self._db.closed or self._db.broken):
            return
        if self._leading:
            log.warning("journal connection lost: this instance no longer runs %s", self._leading)
        self._leading.clear()
        self._db = connect(self.url)

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Mark a call to the server (the outermost, under the lock), for
        :meth:`_cut_when_hung`."""
        outermost = self._waiting_since is None
        if outermost:
            self._waiting_since = time.monotonic()
        try:
            yield
        finally:
            if outermost:
                self._waiting_since = None

    def _cut_when_hung(self) -> None:
        """Shut down the connection's socket under a call that waits longer than
        :data:`CLIENT_TIMEOUT`: libpq then fails the call, and the next one reconnects."""
        while not self._closed.wait(1.0):
            since = self._waiting_since
            if since is None or time.monotonic() - since < CLIENT_TIMEOUT:
                continue
            log.warning(
                "journal: PostgreSQL at %s gave no answer in %.0f s; cutting the connection",
                redacted(self.url),
                CLIENT_TIMEOUT,
            )
            self._waiting_since = None
            with contextlib.suppress(OSError, ValueError):
                cut = socket.socket(fileno=os.dup(self._db.fileno()))
                cut.shutdown(socket.SHUT_RDWR)
                cut.close()

    @contextmanager
    def batch(self) -> Iterator[PostgresBatch]:
        psycopg = _psycopg()
        with self._lock, self._answering():
            self._connected()
            try:
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (WRITE_LOCK,))
                    batch = PostgresBatch(self)
                    yield batch
                    if batch.appended:
                        self._db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(batch.last)))
            except psycopg.OperationalError as e:
                log.warning("journal write failed: %s", _one_line(e))
                raise JournalUnavailable(f"journal write failed: {e}") from e
            except psycopg.Error as e:
                raise JournalError(f"journal write failed: {e}") from e

    def set_cursor(self, name: str, position: int) -> None:
        # A reader's position needs no write lock: it numbers no rows.
        self._rows(
            "INSERT INTO cursors (name, seq_id) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET seq_id = excluded.seq_id RETURNING seq_id",
            (name, position),
        )

    def forget_resume_point(self, archive: str) -> None:
        with self.batch():
            self._db.execute("DELETE FROM replay_progress WHERE path = %s", (archive,))

    # -- reading -----------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        psycopg = _psycopg()
        with self._lock, self._answering():
            self._connected()
            try:
                # results in binary: envelopes arrive as their bytes, not twice as many hex
                # digits to decode
                return self._db.execute(sql, params, binary=True).fetchall()
            except psycopg.OperationalError as e:
                log.warning("journal read failed: %s", _one_line(e))
                raise JournalUnavailable(f"journal read failed: {e}") from e

    def _period(self, period: str, seconds: str = "event_time") -> tuple[str, list[Any]]:
        return _PERIODS[period].format(seconds=seconds), []

    def check(self, *, thorough: bool = False) -> list[str]:
        """What is wrong with the shared journal: a gap or a repeat in ``seq_id``, a row
        without its envelope."""
        problems = []
        (count, first, last) = self._rows(
            "SELECT COUNT(*), COALESCE(MIN(seq_id), 1), COALESCE(MAX(seq_id), 0) FROM events"
        )[0]
        if count and (first != 1 or last != count):
            problems.append(f"seq_id runs {first}..{last} over {count} rows: a gap")
        if thorough:
            (empty,) = self._rows("SELECT COUNT(*) FROM events WHERE octet_length(envelope) = 0")[0]
            if empty:
                problems.append(f"{empty} rows without an envelope")
        return problems

    def storage_bytes(self) -> int | None:
        rows = self._rows(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        return int(rows[0][0])

    # -- several instances ---------------------------------------------------------------

    def lead(self, sink: str) -> bool:
        """Whether this instance runs *sink*: it holds (or now takes) the sink's lock."""
        if sink in self._leading:
            return True
        rows = self._rows(
            "SELECT pg_try_advisory_lock(hashtext(current_schema() || ':' || %s))", (sink,)
        )
        if rows[0][0]:
            self._leading.add(sink)
            log.info("this instance now runs the %s sink", sink)
            return True
        return False

    def leaders(self, sinks: Sequence[str]) -> dict[str, str]:
        """Which connection (host and process) holds the lock of each of *sinks*."""
        found = {}
        for sink in sinks:
            rows = self._rows(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.objsubid = 1"
                " AND l.objid::bigint = (hashtext(current_schema() || ':' || %s)::bigint"
                " & 4294967295)",
                (sink,),
            )
            if rows:
                found[sink] = rows[0][0]
        return found

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call *callback* whenever another connection commits rows (LISTEN/NOTIFY)."""
        thread = threading.Thread(
            target=self._listen, args=(callback,), name="journal-listen", daemon=True
        )
        thread.start()
        self._watchers.append(thread)
        return True

    def _listen(self, callback: Callable[[], None]) -> None:
        pause = 1.0
        while not self._closed.is_set():
            try:
                with connect(self.url) as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    callback()  # catch up on what was committed while not listening
                    pause = 1.0
                    while not self._closed.is_set():
                        for _ in db.notifies(timeout=1.0):
                            callback()
            except Exception as e:  # the database went away: listen again when it is back
                log.warning("journal notifications lost (%s); listening again in %.0fs", e, pause)
                self._closed.wait(pause)
                pause = min(pause * 2, 30.0)


class PostgresBatch(SqlBatch):
    """The writes of one transaction, under the journal's write lock."""

    def __init__(self, journal: PostgresJournal):
        super().__init__(journal, journal.dialect)
        self._db = journal._db
        self.appended = False
        self.last = 0

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._db.cursor() as cur:
            cur.executemany(sql, rows)

    def _read(self, sql: str) -> tuple | None:
        return self._db.execute(sql).fetchone()

    def _strongest(self, keys: Sequence[str]) -> dict[str, Stored]:
        # one query for the whole batch, a probe of the index per key: however stale the
        # table's statistics, no plan can make this a scan of the whole table
        return {
            key: (rank, msg_id, stored)
            for key, rank, msg_id, stored in self._db.execute(STRONGEST_OF_KEYS, (list(keys),))
        }

    def _appended(self, last: int) -> None:
        self.appended, self.last = True, last

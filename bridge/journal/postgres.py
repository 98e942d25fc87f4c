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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bridge.errors import JournalError, JournalUnavailable
from bridge.events import Naming
from bridge.journal.codec import pack, stored_as_json, unpack
from bridge.journal.planning import DAY, LOOKUP_TOTALS_FROM_LOOKUPS, LOOKUPS, POSTGRES, SQL_DAY
from bridge.journal.reads import SqlJournal
from bridge.journal.writes import (
    EVENT_COLUMNS,
    SqlBatch,
    Stored,
    write_index,
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

# Each migration brings the schema from its index to the next version.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        seq_id      BIGINT PRIMARY KEY,
        msg_id      TEXT NOT NULL UNIQUE,
        topic       TEXT NOT NULL,
        event_topic TEXT NOT NULL,
        timestamp   BIGINT NOT NULL,
        event_time  BIGINT NOT NULL,
        dedup_key   TEXT NOT NULL UNIQUE,
        base_key    TEXT NOT NULL,  -- the dedup key without a superseding row's suffix
        source      TEXT NOT NULL,
        agent       TEXT NOT NULL DEFAULT '',
        live        BOOLEAN NOT NULL DEFAULT TRUE,
        trust_rank  SMALLINT NOT NULL DEFAULT 1,
        envelope    TEXT NOT NULL
    );
    CREATE INDEX events_timestamp ON events (timestamp);
    CREATE INDEX events_event_time ON events (event_time);
    CREATE INDEX events_topic ON events (topic text_pattern_ops);
    CREATE INDEX events_base_key ON events (base_key);
    CREATE TABLE event_packages (
        seq_id  BIGINT NOT NULL REFERENCES events (seq_id),
        package TEXT NOT NULL
    );
    CREATE INDEX event_packages_package ON event_packages (package);
    CREATE TABLE event_bugs (
        seq_id BIGINT NOT NULL REFERENCES events (seq_id),
        bug    BIGINT NOT NULL
    );
    CREATE INDEX event_bugs_bug ON event_bugs (bug);
    CREATE TABLE cursors (name TEXT PRIMARY KEY, seq_id BIGINT NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE replay_progress (
        path     TEXT PRIMARY KEY,
        "offset" BIGINT NOT NULL,
        mails    BIGINT NOT NULL
    );
    """,
    # 2: people get a lookup like packages and bugs; each lookup is ordered by seq_id, so a
    # page of one package's events is read from the index in order
    """
    CREATE TABLE event_people (
        seq_id BIGINT NOT NULL REFERENCES events (seq_id),
        person TEXT NOT NULL
    );
    INSERT INTO event_people (seq_id, person)
        SELECT DISTINCT seq_id, person FROM (
            SELECT seq_id, p AS person
                FROM events, regexp_split_to_table(agent, E'\\n') AS p WHERE p != ''
            UNION ALL
            SELECT seq_id, split_part(p, '@', 1)
                FROM events, regexp_split_to_table(agent, E'\\n') AS p
                WHERE p LIKE '%@debian.org'
        ) AS found;
    CREATE INDEX event_people_lookup ON event_people (person, seq_id);
    DROP INDEX event_packages_package;
    CREATE INDEX event_packages_lookup ON event_packages (package, seq_id);
    DROP INDEX event_bugs_bug;
    CREATE INDEX event_bugs_lookup ON event_bugs (bug, seq_id);
    """,
    # 3: the daily counts per topic that statistics read
    f"""
    CREATE TABLE topic_days (
        topic  TEXT NOT NULL,
        day    BIGINT NOT NULL,
        events BIGINT NOT NULL,
        PRIMARY KEY (topic, day)
    );
    INSERT INTO topic_days (topic, day, events)
        SELECT topic, {SQL_DAY}, COUNT(*) FROM events GROUP BY 1, 2;
    CREATE INDEX events_topic_seq ON events (topic, seq_id);
    """,
    # 4: how many events hold each package, bug and person (the totals /raw shows)
    """
    CREATE TABLE lookup_totals (
        lookup TEXT NOT NULL,
        value  TEXT NOT NULL,
        events BIGINT NOT NULL,
        PRIMARY KEY (lookup, value)
    );
    """
    + ";\n".join(LOOKUP_TOTALS_FROM_LOOKUPS),
    # 5: less to store per event. Envelopes are kept compressed, as bytes (see pack): TOAST's
    # own compression keeps three quarters of this JSON, zlib with its dictionary under a
    # third; the rows already there keep their JSON, as bytes, which unpack reads as it is,
    # until pack_envelopes compresses them.
    # The keys only ever probed for equality, a fact's base key and a msg_id, get hash
    # indexes: a third of a B-tree of these random strings. The dedup key's unique index
    # goes with its column (the batch's probe reads the base key, under the write lock
    # that already makes one writer at a time), so does the agent column (people have had
    # their lookup since 2) and the topic's pattern index (pages are walked by
    # events_topic_seq; a topic prefix is only ever tested on rows already found).
    # envelopes_to_pack marks the rows pack_envelopes has still to compress.
    """
    CREATE TABLE envelopes_to_pack (from_seq_id BIGINT NOT NULL, to_seq_id BIGINT NOT NULL);
    INSERT INTO envelopes_to_pack (from_seq_id, to_seq_id)
        SELECT 1, max(seq_id) FROM events HAVING max(seq_id) IS NOT NULL;
    ALTER TABLE events DROP COLUMN agent;
    ALTER TABLE events DROP COLUMN dedup_key;
    ALTER TABLE events DROP CONSTRAINT events_msg_id_key;
    DROP INDEX events_base_key;
    DROP INDEX events_topic;
    ALTER TABLE events ALTER COLUMN envelope TYPE BYTEA USING convert_to(envelope, 'UTF8');
    CREATE INDEX events_base_key ON events USING hash (base_key);
    CREATE INDEX events_msg_id ON events USING hash (msg_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
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


def schema_version(db: Any) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS bridge_schema (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM bridge_schema").fetchone()
    return int(row[0] or 0)


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


def pack_envelopes(
    url: str, *, chunk: int = 1000, progress: Callable[[int, int], None] | None = None
) -> int:
    """Compress the envelopes a journal older than schema version 5 stored as JSON, a chunk
    of rows per transaction; return how many were packed.

    Resumable (the rows left are kept in ``envelopes_to_pack``) and safe beside running
    bridges: it numbers no rows, and a row reads the same before and after."""
    with connect(url) as db:
        left = db.execute("SELECT from_seq_id, to_seq_id FROM envelopes_to_pack").fetchone()
        if left is None:
            return 0
        start, end = left
        packed = 0
        while start <= end:
            with db.transaction():
                rows = db.execute(
                    "SELECT seq_id, envelope FROM events WHERE seq_id BETWEEN %s AND %s"
                    " ORDER BY seq_id LIMIT %s",
                    (start, end, chunk),
                ).fetchall()
                plain = [
                    (seq_id, pack(unpack(stored)))
                    for seq_id, stored in rows
                    if stored_as_json(stored)
                ]
                if plain:
                    db.execute(
                        "UPDATE events SET envelope = packed.envelope"
                        " FROM unnest(%s::bigint[], %s::bytea[]) AS packed(seq_id, envelope)"
                        " WHERE events.seq_id = packed.seq_id",
                        ([seq_id for seq_id, _ in plain], [envelope for _, envelope in plain]),
                    )
                start = rows[-1][0] + 1 if rows else end + 1
                db.execute("UPDATE envelopes_to_pack SET from_seq_id = %s", (start,))
            packed += len(plain)
            if progress:
                progress(min(start - 1, end), end)
        db.execute("DELETE FROM envelopes_to_pack")
        return packed


def copy_from_sqlite(
    sqlite_path: str | os.PathLike[str],
    url: str,
    *,
    spool_cursor: str,
    chunk: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy a SQLite journal into the PostgreSQL one at *url*, keeping every ``seq_id`` and
    ``msg_id``; return how many rows were copied.

    Resumable: it continues after the highest ``seq_id`` the target holds, once it has
    checked that the rows they share are the same (same ``msg_id``). The source's spool
    cursor becomes *spool_cursor* (spool positions are per instance on a shared journal).
    """
    import sqlite3

    from bridge.journal.sqlite import events_in_shape

    migrate(url)
    source = sqlite3.connect(f"file:{os.fspath(sqlite_path)}?mode=ro", uri=True)
    target = connect(url)
    try:
        (total,) = source.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
        (done,) = target.execute("SELECT COALESCE(MAX(seq_id), 0) FROM events").fetchone()
        if done:
            mine = source.execute("SELECT msg_id FROM events WHERE seq_id = ?", (done,)).fetchone()
            (theirs,) = target.execute(
                "SELECT msg_id FROM events WHERE seq_id = %s", (done,)
            ).fetchone()
            if mine is None or mine[0] != theirs:
                raise JournalError(
                    f"the target journal already holds other events (seq_id {done} differs):"
                    " copy into an empty one"
                )
        copied = 0
        columns = events_in_shape(source)
        while done < total:
            rows = source.execute(
                f"SELECT {columns} FROM events WHERE seq_id > ? ORDER BY seq_id LIMIT ?",
                (done, chunk),
            ).fetchall()
            if not rows:
                break
            first, last = rows[0][0], rows[-1][0]
            lookups = {
                name: source.execute(
                    f"SELECT seq_id, {column} FROM {table} WHERE seq_id BETWEEN ? AND ?",
                    (first, last),
                ).fetchall()
                for name, (table, column) in LOOKUPS.items()
            }
            with target.transaction(), target.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (WRITE_LOCK,))
                cur.executemany(
                    INSERT_EVENT,
                    # the same columns; each envelope compressed as today's bridge does
                    [(*row[:8], bool(row[8]), row[9], pack(unpack(row[10]))) for row in rows],
                )
                days = Counter((row[2], row[5] // DAY) for row in rows)  # topic, event_time
                write_index(cur.executemany, "%s", lookups, days)
            done, copied = last, copied + len(rows)
            if progress:
                progress(done, total)
        with target.transaction():
            for name, seq_id in source.execute("SELECT name, seq_id FROM cursors"):
                target.execute(
                    "INSERT INTO cursors (name, seq_id) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET seq_id = excluded.seq_id",
                    (spool_cursor if name == "spool" else name, seq_id),
                )
            for name, value in source.execute("SELECT name, value FROM counters"):
                target.execute(
                    "INSERT INTO counters (name, value) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )
            target.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(done)))
        return copied
    finally:
        source.close()
        target.close()

"""The journal's schemas, and what brings a journal an older bridge wrote up to them: the
embedded engine's (SQLite, its version in ``PRAGMA user_version``) and the shared one's
(PostgreSQL, its version in ``bridge_schema``). Both engines keep one shape of events row
(:data:`bridge.journal.writes.EVENT_COLUMNS`)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bridge.errors import JournalError
from bridge.events import Envelope
from bridge.journal.codec import unpack
from bridge.journal.planning import LOOKUP_TOTALS_FROM_LOOKUPS, SQL_DAY, person_keys
from bridge.journal.writes import EVENT_COLUMNS, SUPERSEDING, trust_rank

log = logging.getLogger("bridge.journal.sqlite")

# -- SQLite ------------------------------------------------------------------------------

# The events table as every engine has it (bridge.journal.writes.EVENT_COLUMNS): the base
# key and trust rank in columns of their own, so deciding a duplicate reads no envelope.
EVENTS_TABLE = """
CREATE TABLE {name} (
    seq_id      INTEGER PRIMARY KEY,
    msg_id      TEXT NOT NULL UNIQUE,
    topic       TEXT NOT NULL,
    event_topic TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    event_time  INTEGER NOT NULL,
    base_key    TEXT NOT NULL,  -- the fact's dedup key (a superseding row shares it)
    source      TEXT NOT NULL,
    live        INTEGER NOT NULL DEFAULT 1,
    trust_rank  INTEGER NOT NULL DEFAULT 1,
    envelope    BLOB NOT NULL  -- the published JSON, zlib-compressed (see pack)
)"""
EVENTS_INDEXES = [
    "CREATE INDEX events_timestamp ON events (timestamp)",
    "CREATE INDEX events_event_time ON events (event_time)",
    "CREATE INDEX events_topic ON events (topic)",
    "CREATE INDEX events_base_key ON events (base_key)",
]

SCHEMA = (
    EVENTS_TABLE.format(name="events")
    + ";\n"
    + ";\n".join(EVENTS_INDEXES)
    + """;
CREATE TABLE event_packages (
    package TEXT NOT NULL,
    seq_id  INTEGER NOT NULL,
    PRIMARY KEY (package, seq_id)
) WITHOUT ROWID;
CREATE TABLE event_bugs (
    bug    INTEGER NOT NULL,
    seq_id INTEGER NOT NULL,
    PRIMARY KEY (bug, seq_id)
) WITHOUT ROWID;
CREATE TABLE event_people (
    person TEXT NOT NULL,
    seq_id INTEGER NOT NULL,
    PRIMARY KEY (person, seq_id)
) WITHOUT ROWID;
CREATE TABLE topic_days (
    topic  TEXT NOT NULL,
    day    INTEGER NOT NULL,  -- event_time // 86400
    events INTEGER NOT NULL,
    PRIMARY KEY (topic, day)
) WITHOUT ROWID;
CREATE TABLE lookup_totals (
    lookup TEXT NOT NULL,  -- packages, bugs, people
    value  TEXT NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (lookup, value)
) WITHOUT ROWID;
CREATE TABLE cursors (
    name   TEXT PRIMARY KEY,
    seq_id INTEGER NOT NULL
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE replay_progress (
    path   TEXT PRIMARY KEY,
    offset INTEGER NOT NULL,
    mails  INTEGER NOT NULL
);
"""
)
SCHEMA_VERSION = 5  # PRAGMA user_version
# 4 -> 5 on both engines: a row of the bridge's own that arrived (not from an mbox
# backfill) is dated by when it was journaled, as its envelope's timestamp says (it was the
# mail's Date: a filter and the timestamp it filters disagreed); the daily counts follow.
# Rows of other buses keep their own time. (A backfill's rows keep the mail's date, but
# those an older bridge wrote say when they were journaled in their envelope's timestamp.)
LIVE_ROWS_BY_JOURNAL_TIME = [
    "UPDATE events SET event_time = timestamp WHERE source NOT LIKE 'mbox:%'"
    " AND source <> 'relay' AND source NOT LIKE 'upstream:%' AND event_time <> timestamp",
    "DELETE FROM topic_days",
    f"INSERT INTO topic_days (topic, day, events) SELECT topic, {SQL_DAY}, COUNT(*)"
    " FROM events GROUP BY 1, 2",
]

# The columns of today's shape (EVENT_COLUMNS) as a journal before schema 4 holds them: the
# base key and trust rank read from the dedup key and the envelope (see with_readers).
COLUMNS_BEFORE_4 = (
    "seq_id, msg_id, topic, event_topic, timestamp, event_time, base_key_of(dedup_key),"
    " source, live, rank_of(envelope), envelope"
)

# What brings a journal an older bridge wrote from each version to the next.
UPGRADES: dict[int, list[str]] = {
    # 0 -> 1: people get a lookup (filled from the agent column, below); lookups by seq_id
    0: [
        "DROP INDEX IF EXISTS event_packages_package",
        "DROP INDEX IF EXISTS event_bugs_bug",
        "CREATE INDEX IF NOT EXISTS event_packages_lookup ON event_packages (package, seq_id)",
        "CREATE INDEX IF NOT EXISTS event_bugs_lookup ON event_bugs (bug, seq_id)",
        "CREATE TABLE event_people (seq_id INTEGER NOT NULL, person TEXT NOT NULL)",
        "CREATE INDEX event_people_lookup ON event_people (person, seq_id)",
    ],
    # 1 -> 2: the daily counts per topic that statistics read
    1: [
        "CREATE TABLE topic_days (topic TEXT NOT NULL, day INTEGER NOT NULL,"
        " events INTEGER NOT NULL, PRIMARY KEY (topic, day)) WITHOUT ROWID",
        "INSERT INTO topic_days (topic, day, events)"
        f" SELECT topic, {SQL_DAY}, COUNT(*) FROM events GROUP BY 1, 2",
    ],
    # 2 -> 3: how many events hold each package, bug and person (the totals /raw shows)
    2: [
        "CREATE TABLE lookup_totals (lookup TEXT NOT NULL, value TEXT NOT NULL,"
        " events INTEGER NOT NULL, PRIMARY KEY (lookup, value)) WITHOUT ROWID",
        *LOOKUP_TOTALS_FROM_LOOKUPS,
    ],
    # 3 -> 4: the events table as every engine has it: the base key and trust rank in
    # columns (read once from each row's dedup key and envelope), no agent column
    3: [
        EVENTS_TABLE.format(name="events_4"),
        f"INSERT INTO events_4 ({EVENT_COLUMNS})"
        f" SELECT {COLUMNS_BEFORE_4} FROM events ORDER BY seq_id",
        "DROP TABLE events",
        "ALTER TABLE events_4 RENAME TO events",
        *EVENTS_INDEXES,
    ],
    4: LIVE_ROWS_BY_JOURNAL_TIME,
}


def base_key_of(dedup_key: str) -> str:
    """The base key of a row's dedup key as journals before schema 4 kept it (a
    superseding row's key had a suffix)."""
    return dedup_key.split(SUPERSEDING, 1)[0]


def rank_of(envelope: bytes | str) -> int:
    """The trust rank of a stored envelope's event (``none``'s when it cannot be read)."""
    try:
        return trust_rank(Envelope.from_json(unpack(envelope)).msg)
    except (JournalError, ValueError, KeyError, TypeError):
        return trust_rank(None)


def events_in_shape(db: sqlite3.Connection) -> str:
    """What to select from *db*'s events table for rows in today's shape
    (:data:`EVENT_COLUMNS`), whichever schema version wrote it (before 4, the base key and
    trust rank are read from the dedup key and the envelope)."""
    names = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if "base_key" in names:
        return EVENT_COLUMNS
    with_readers(db)
    return COLUMNS_BEFORE_4


def with_readers(db: sqlite3.Connection) -> None:
    """Teach *db* the SQL functions :data:`COLUMNS_BEFORE_4` calls."""
    db.create_function("base_key_of", 1, base_key_of, deterministic=True)
    db.create_function("rank_of", 1, rank_of, deterministic=True)


def people_from_agents(db: sqlite3.Connection) -> Iterator[tuple[int, str]]:
    """The people lookup's rows, from the agent column where journals before that lookup
    kept each event's people."""
    rows = db.cursor().execute("SELECT seq_id, agent FROM events WHERE agent != ''")
    return ((seq_id, p) for seq_id, agent in rows for p in person_keys(agent.split("\n")))


def _people_from_agents(db: sqlite3.Connection) -> None:
    db.executemany(  # a generator: memory stays flat however long the journal
        "INSERT INTO event_people (seq_id, person) VALUES (?, ?)", people_from_agents(db)
    )


def upgrade(db: sqlite3.Connection, path: Path | str = "") -> None:
    """Create the schema in a new journal, or bring one an older bridge wrote up to it."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # another process may have created or upgraded it while this one waited for the lock
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version >= SCHEMA_VERSION:
            db.execute("COMMIT")
            return
        # one statement at a time: executescript would commit this transaction first
        new = not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
        if new:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        else:
            log.warning("journal %s: upgrading its schema from version %d", path, version)
            with_readers(db)
            for step in range(version, SCHEMA_VERSION):
                for statement in UPGRADES[step]:
                    db.execute(statement)
                if step == 0:  # people were in the agent column
                    _people_from_agents(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# -- PostgreSQL --------------------------------------------------------------------------

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
    # 6: live rows dated by journal time (see LIVE_ROWS_BY_JOURNAL_TIME)
    ";\n".join(LIVE_ROWS_BY_JOURNAL_TIME),
]
POSTGRES_SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Any) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS bridge_schema (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM bridge_schema").fetchone()
    return int(row[0] or 0)

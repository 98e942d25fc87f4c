"""Moving history: the envelopes an older PostgreSQL journal stored as JSON compressed in
place (``bridge migrate``), and a SQLite journal copied into a PostgreSQL one
(``bridge migrate --from``), each resumable, a chunk of rows per transaction."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

from bridge.errors import JournalError
from bridge.journal.codec import pack, stored_as_json, unpack
from bridge.journal.planning import DAY, LOOKUPS
from bridge.journal.postgres import CHANNEL, INSERT_EVENT, WRITE_LOCK, connect, migrate
from bridge.journal.writes import write_index


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

    from bridge.journal.migrations import events_in_shape

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

"""The embedded journal: SQLite in WAL mode, in the state directory.

Several processes may append at once (``bridge serve`` and ``bridge replay-mbox``): each
batch takes SQLite's write lock with ``BEGIN IMMEDIATE`` and numbers its rows from the
current maximum, so ``seq_id`` never has a gap. A UNIQUE dedup key makes a second append
of the same fact a counted no-op.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import JournalDamaged, JournalError, JournalUnavailable
from bridge.events import Naming
from bridge.files import private_dir
from bridge.journal.codec import unpack
from bridge.journal.migrations import upgrade
from bridge.journal.planning import SQLITE
from bridge.journal.reads import SqlJournal
from bridge.journal.writes import EVENT_COLUMNS, SqlBatch, Stored

log = logging.getLogger(__name__)
JOURNAL_FILE = "journal.sqlite3"
CACHE_KIB = 64 * 1024
# An appending writer (replay-mbox) touches the upper levels of the indexes and their right
# edges; a cache it fills early keeps its memory the same whatever the archive's size.
APPEND_CACHE_KIB = 16 * 1024
_PERIOD_FORMATS = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "week": "%Y-W%W", "month": "%Y-%m"}
PROBE_KEYS = 500  # base keys a batch looks up in one query (SQLite's parameters are capped)
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join(['?'] * 11)})"


def wal_mode(db: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode. Switching needs the file to itself and SQLite does not
    wait for that (the busy timeout does not apply): when processes open a new journal at
    once, the others retry until the first has switched it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteJournal(SqlJournal):
    """A connection to the journal in *path* (a file, created on first use)."""

    dialect = SQLITE

    def __init__(
        self,
        path: str | Path,
        naming: Naming | None = None,
        *,
        timeout: float = 60.0,
        durable: bool = True,
        cache_kib: int = CACHE_KIB,
    ):
        self.path = Path(path)
        self._shm = self.path.with_name(self.path.name + "-shm")
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._closed = False
        self.naming = naming or Naming()
        self._counter = itertools.count(1)
        self._not_before = 0  # the newest row's timestamp, while a batch appends
        try:
            private_dir(self.path.parent)
            create_private(self.path)
            self._db = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            wal_mode(self._db, timeout)
            # A connection that only moves a cursor (the publisher) may lose its last commit
            # on power failure: that means re-sending, which at-least-once allows.
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            # the upper levels of the indexes stay in memory: inserts at random places in
            # them (dedup keys, packages, people) need no read from disk
            self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            self._db.create_function("unpack", 1, unpack, deterministic=True)
            upgrade(self._db, self.path)
            _SHARED.opened(self.path.resolve(), self._files_now)
        except sqlite3.Error as e:
            raise classify(e, f"cannot open journal {self.path}") from e
        except OSError as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from e

    @property
    def location(self) -> str:
        return str(self.path)

    def storage_bytes(self) -> int | None:
        return sum(p.stat().st_size for p in journal_files(self.path))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
            _SHARED.closed(self.path.resolve())

    # -- writing -----------------------------------------------------------------------

    def _files_now(self) -> Files:
        """(device, inode) of the database file, its write-ahead log and its index now."""
        return Files(_identity(self.path), _identity(self._wal), _identity(self._shm))

    def replaced(self) -> str | None:
        """The connections of one process share one view of the log and its index (SQLite
        keeps one per file): when another process took itself for the last connection and
        deleted both, and a writer then made new ones, this process still reads the old
        ones, and sees no new event. Only closing every connection of the process helps."""
        shared = _SHARED.files(self.path.resolve())
        now = self._files_now()
        if shared is None:
            return None
        if now.database != shared.database:
            return f"{self.path} was replaced since this process opened it"
        for name, held, current in (
            (self._wal.name, shared.wal, now.wal),
            (self._shm.name, shared.shm, now.shm),
        ):
            if held is not None and current is not None and held != current:
                return f"{name} was made anew since this process opened it"
        return None

    def _shm_writable(self) -> None:
        """Refuse to touch the journal while its ``-shm`` file cannot be written.

        SQLite reaches the shared-memory index of a WAL database through a writable
        mapping of the ``-shm`` file, on reads as on writes. When the file becomes
        unwritable under it (``chattr +i``, as an operator freezes the state directory),
        the kernel answers the next store into that mapping with SIGBUS: the whole
        process dies. Asking first (one access(2)) makes it an error this call reports.
        """
        if not os.access(self._shm, os.W_OK) and os.path.exists(self._shm):
            raise JournalUnavailable(
                f"journal {self.path} is not writable now ({self._shm.name} is read-only or"
                " immutable): waiting for it"
            )

    @contextmanager
    def batch(self) -> Iterator[SqliteBatch]:
        started = time.monotonic()
        self._shm_writable()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            waited = time.monotonic() - started
            raise classify(e, f"journal is not writable (waited {waited:.1f}s)") from e
        try:
            yield SqliteBatch(self)
        except BaseException as e:
            self._rollback()
            if isinstance(e, sqlite3.Error):
                raise classify(e, "journal write failed") from e
            raise
        try:
            self._shm_writable()
            self._db.execute("COMMIT")
        except JournalUnavailable:
            self._rollback()
            raise
        except sqlite3.Error as e:
            self._rollback()
            raise classify(e, "journal commit failed") from e

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def forget_resume_point(self, archive: str) -> None:
        with self.batch():
            self._db.execute("DELETE FROM replay_progress WHERE path = ?", (archive,))

    # -- reading -----------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._shm_writable()
        return self._db.execute(sql, params).fetchall()

    def _period(self, period: str, seconds: str = "event_time") -> tuple[str, list[Any]]:
        return f"strftime(?, {seconds}, 'unixepoch')", [_PERIOD_FORMATS[period]]

    def check(self, *, thorough: bool = False) -> list[str]:
        return sqlite_check(self._db, thorough=thorough)


class SqliteBatch(SqlBatch):
    """The writes of one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, journal: SqliteJournal):
        super().__init__(journal, journal.dialect)
        self._db = journal._db

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def _read(self, sql: str) -> tuple | None:
        return self._db.execute(sql).fetchone()

    def _strongest(self, keys: Sequence[str]) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        for start in range(0, len(keys), PROBE_KEYS):
            chunk = keys[start : start + PROBE_KEYS]
            # oldest first: the last of the highest rank wins, as on PostgreSQL
            for key, rank, msg_id, stored in self._db.execute(
                "SELECT base_key, trust_rank, msg_id, envelope FROM events"
                f" WHERE base_key IN ({', '.join(['?'] * len(chunk))}) ORDER BY seq_id",
                chunk,
            ):
                if key not in found or rank >= found[key][0]:
                    found[key] = (rank, msg_id, stored)
        return found


@dataclass(frozen=True)
class Files:
    """Which files a journal is, by (device, inode); None where one does not exist."""

    database: tuple[int, int] | None
    wal: tuple[int, int] | None
    shm: tuple[int, int] | None


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only, if it does not exist: SQLite
    gives its -wal and -shm files the database file's mode.

    Never open and close a file SQLite may already have open in this process: closing any
    descriptor of a file drops every POSIX lock the process holds on it, the SHARED lock
    of this process's other connections included (SQLite counts that lock once a process).
    Another process closing its last connection would then take itself for the last one
    and delete the write-ahead log under this process's readers."""
    if path.exists():
        return
    with contextlib.suppress(FileExistsError):  # another process made it just now
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class _SharedFiles:
    """The files this process's open connections to each journal share, as they were when
    the first of them opened it (SQLite keeps one view of the log and its index a file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[int, Files]] = {}

    def opened(self, path: Path, files_now: Callable[[], Files]) -> None:
        with self._lock:
            count, files = self._open.get(path, (0, None))
            self._open[path] = (count + 1, files if files is not None else files_now())

    def closed(self, path: Path) -> None:
        with self._lock:
            count, files = self._open.get(path, (1, None))
            if count <= 1:
                self._open.pop(path, None)
            else:
                self._open[path] = (count - 1, files)

    def files(self, path: Path) -> Files | None:
        with self._lock:
            found = self._open.get(path)
            return found[1] if found else None


_SHARED = _SharedFiles()


def journal_files(path: Path) -> list[Path]:
    """The files that make up the journal at *path*: the database, its WAL and shared memory,
    those that exist."""
    candidates = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))]
    return [p for p in candidates if p.exists()]


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

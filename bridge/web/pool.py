"""The web's journal connections: one per thread of the pool, all opened anew at once when
the journal on disk is no longer the one they read."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from bridge.config import Config
from bridge.journal import Journal, open_journal

log = logging.getLogger("bridge.web.app")  # the name operators' log filters know
FRESHNESS_CHECK = 0.5  # seconds between two looks at whether a thread's journal was replaced
T = TypeVar("T")


class Journals:
    """One journal connection per thread of the pool, all closed with the application.

    Every :data:`FRESHNESS_CHECK` seconds a read first asks whether the journal it reads is
    still the one on disk (:meth:`Journal.replaced`). When it is not, every connection is
    closed at once, after the reads under way, and each thread opens the journal again: a
    SQLite file's connections in one process share their view of its log, so closing only
    some of them would leave the new ones as blind as the old.
    """

    def __init__(self, config: Config):
        self._config = config
        self._local = threading.local()
        self._opened: list[Journal] = []
        self._changed = threading.Condition()
        self._busy = 0  # reads under way
        self._reopening = False
        self._generation = 0  # bumped when every connection was closed to be opened again
        self._checked = 0.0
        self.stale: str | None = None  # why the last check found the journal replaced

    def _enter(self) -> Journal:
        with self._changed:
            self._changed.wait_for(lambda: not self._reopening)
            now = time.monotonic()
            if self._opened and now - self._checked >= FRESHNESS_CHECK:
                self._checked = now
                self.stale = self._opened[0].replaced()
                if self.stale:
                    log.info("web: %s; opening the journal again", self.stale)
                    self._reopening = True  # new reads wait; those under way finish
                    self._changed.wait_for(lambda: self._busy == 0)
                    self._close_all()
                    self._reopening = False
                    self._changed.notify_all()
            self._busy += 1
            journal = getattr(self._local, "journal", None)
            if journal is not None and self._local.generation == self._generation:
                return journal
        try:
            journal = open_journal(self._config)
        except BaseException:
            self._exit()
            raise
        with self._changed:
            self._local.journal, self._local.generation = journal, self._generation
            self._opened.append(journal)
        return journal

    def _exit(self) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def _close_all(self) -> None:
        for journal in self._opened:
            journal.close()
        self._opened.clear()
        self._generation += 1

    def checked_age(self) -> float:
        """Seconds since a read last checked that the journal is the one on disk (0 before
        any read: nothing is open yet)."""
        return time.monotonic() - self._checked if self._checked else 0.0

    async def run(self, read: Callable[[Journal], T]) -> T:
        def guarded() -> T:
            journal = self._enter()
            try:
                return read(journal)
            finally:
                self._exit()

        return await run_in_threadpool(guarded)

    def close(self) -> None:
        with self._changed:
            self._close_all()

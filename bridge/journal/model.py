"""The journal's interface: what every engine (SQLite now, PostgreSQL next) offers.

The rest of the bridge speaks to the journal only through these typed methods; no SQL
lives outside the engine modules of this package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from bridge.events import Envelope, Event, Naming

PERIODS = ("hour", "day", "week", "month")


@dataclass(frozen=True)
class Row:
    """One journal row as the sinks and the replay endpoint need it: its full topic, its
    event topic as the journal stored it, and the envelope's JSON."""

    seq_id: int
    topic: str
    envelope: str
    event_topic: str = ""


@dataclass(frozen=True)
class Conflict:
    """An event not stored because one with its topic, dedup key and trust rank is, and
    says otherwise about the fact: neither may silently win (design §10)."""

    topic: str
    dedup_key: str
    stored_msg_id: str
    fields: tuple[str, ...]  # where the two disagree

    def describe(self) -> str:
        return (
            f"{self.topic} {self.dedup_key}: conflicts with stored event {self.stored_msg_id},"
            f" vouched for as well, in {', '.join(self.fields)}"
        )


@dataclass
class AppendResult:
    """What one append did: the new rows' ``seq_id``s, how many events were duplicates, and
    the events not stored because they conflict with a stored one."""

    seq_ids: list[int] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)  # the event topic of each new row


@dataclass(frozen=True)
class Criteria:
    """A history search. Each tuple given narrows it to events matching any of its values;
    each ``not_`` tuple leaves out events matching any of its values.

    *topics* are topic prefixes, full or event-relative (``debbugs`` is every bug-tracker
    event); *people* match a name, an e-mail address or a Debian login exactly, in any case;
    *contains* is text anywhere in the envelope. Times are epoch seconds of when the events
    happened, *since* included, *until* not.
    """

    topics: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    bugs: tuple[int, ...] = ()
    people: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    not_topics: tuple[str, ...] = ()
    not_packages: tuple[str, ...] = ()
    not_people: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    after: int | None = None  # only events journaled after this seq_id (a live stream's)
    upto: int | None = None  # and up to this one (what a stream has looked at so far)


@dataclass(frozen=True)
class ReplaySelection:
    """Which published envelopes a replay request asks for (any of them matches).

    *seq_id_after* or *after_time* instead page through everything after a point.
    """

    seq_ids: tuple[int, ...] = ()
    seq_id_ranges: tuple[tuple[int, int], ...] = ()
    msg_ids: tuple[str, ...] = ()
    times: tuple[tuple[float, float], ...] = ()
    seq_id_after: int | None = None
    after_time: float | None = None

    @property
    def paging(self) -> bool:
        return self.seq_id_after is not None or self.after_time is not None


class Batch(ABC):
    """Writes that commit together, or not at all (``with journal.batch() as batch:``)."""

    @abstractmethod
    def append(
        self,
        events: Sequence[Event],
        source: str,
        *,
        live: bool = True,
        overrule: bool = False,
        backfill: bool = False,
    ) -> AppendResult:
        """Store *events*; one whose topic and dedup key are known is counted as a duplicate,
        or, when it is vouched for no better than the stored one and says otherwise about
        the fact, is a conflict: not stored, listed in the result. With *overrule* (an
        operator released it) a conflicting event is stored and supersedes the other.

        Rows appended with ``live=False`` are history: journaled and queryable, never published.
        Events of a *backfill* (read from an archive) are dated by when they happened (their
        ``occurred_at``, the mail's date); others by when they were journaled.
        """

    def append_groups(
        self,
        groups: Sequence[Sequence[Event]],
        source: str,
        *,
        live: bool = True,
        overrule: bool = False,
        backfill: bool = False,
    ) -> list[AppendResult]:
        """:meth:`append` of each group of events in turn, a result each (an engine may do
        them at once)."""
        return [
            self.append(group, source, live=live, overrule=overrule, backfill=backfill)
            for group in groups
        ]

    @abstractmethod
    def set_cursor(self, name: str, position: int) -> None:
        """Record a reader's position (a publisher's seq_id, the worker's spool position)."""

    @abstractmethod
    def add_counters(self, deltas: dict[str, int]) -> None:
        """Add to named counters (``bridge status``)."""

    @abstractmethod
    def set_resume_point(self, archive: str, offset: int, mails: int) -> None:
        """Where a replayed archive continues; *mails* more of it are done."""


class Journal(ABC):
    """The durable, ordered record of every event, in gap-free ``seq_id`` order."""

    naming: Naming

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the journal lives, for messages (a file, a database URL without password)."""

    # -- writing -------------------------------------------------------------------------

    @abstractmethod
    def batch(self) -> AbstractContextManager[Batch]:
        """One write transaction."""

    def append(
        self,
        events: Sequence[Event],
        source: str,
        *,
        live: bool = True,
        overrule: bool = False,
        backfill: bool = False,
    ) -> AppendResult:
        """Store *events* in a transaction of their own (see :meth:`Batch.append`)."""
        if not events:
            return AppendResult()
        with self.batch() as batch:
            return batch.append(events, source, live=live, overrule=overrule, backfill=backfill)

    def set_cursor(self, name: str, position: int) -> None:
        with self.batch() as batch:
            batch.set_cursor(name, position)

    def add_counters(self, deltas: dict[str, int]) -> None:
        with self.batch() as batch:
            batch.add_counters(deltas)

    @abstractmethod
    def forget_resume_point(self, archive: str) -> None:
        """An archive was replayed to its end: a later replay of it starts over."""

    # -- reading -------------------------------------------------------------------------

    @abstractmethod
    def last_seq_id(self) -> int: ...

    @abstractmethod
    def count(self, criteria: Criteria | None = None) -> int:
        """How many events the journal holds (that match *criteria*)."""

    @abstractmethod
    def rows_after(self, seq_id: int, limit: int = 500, *, live_only: bool = False) -> list[Row]:
        """Rows after *seq_id*, in order (the publisher's read)."""

    @abstractmethod
    def find_rows(
        self, criteria: Criteria, *, newest_first: bool = True, limit: int = 50, offset: int = 0
    ) -> list[Row]:
        """One page of the events matching *criteria*, history rows included, in ``seq_id``
        order (newest first unless told)."""

    def find(
        self, criteria: Criteria, *, newest_first: bool = True, limit: int = 50, offset: int = 0
    ) -> list[Envelope]:
        """:meth:`find_rows`, each as an :class:`Envelope`."""
        rows = self.find_rows(criteria, newest_first=newest_first, limit=limit, offset=offset)
        return list(self.envelopes(rows))

    @abstractmethod
    def unsent(self, cursor: str, at_most: int = 1_000_000) -> int:
        """How many published rows lie after reader *cursor*'s position (counted up to
        *at_most*): a sink's lag. History rows are never published and do not count."""

    @abstractmethod
    def topic_counts(self) -> dict[str, int]:
        """How many events each event topic has, over all time."""

    @abstractmethod
    def by_msg_id(self, msg_id: str) -> Envelope | None:
        """The event with this ``msg_id``, history rows included."""

    @abstractmethod
    def stats(self, criteria: Criteria, period: str) -> dict[str, dict[str, int]]:
        """``{period: {event topic: count}}`` in order, by when the events happened."""

    @abstractmethod
    def replay(self, selection: ReplaySelection, limit: int) -> list[Row]:
        """Up to *limit* published rows the selection names, in ``seq_id`` order."""

    @abstractmethod
    def replay_count(self, selection: ReplaySelection) -> int:
        """How many published rows the selection names."""

    @abstractmethod
    def cursor(self, name: str) -> int:
        """A reader's recorded position, 0 when it has none."""

    @abstractmethod
    def cursors(self, prefix: str) -> dict[str, int]:
        """Every recorded position whose name starts with *prefix*, by name."""

    @abstractmethod
    def counters(self) -> dict[str, int]: ...

    @abstractmethod
    def resume_point(self, archive: str) -> int:
        """Where a replay of *archive* continues (0: from the start)."""

    def replaced(self) -> str | None:
        """Why the journal this connection reads is no longer the journal at its location
        (a file replaced, a write-ahead log made anew), or None while it is: a long-lived
        reader then opens it again."""
        return None

    @abstractmethod
    def resume_points(self, prefix: str) -> list[str]:
        """The archives with a resume point whose names start with *prefix*."""

    @abstractmethod
    def check(self, *, thorough: bool = False) -> list[str]:
        """The engine's own check of its storage: ``[]`` when sound, else what it found."""

    # -- several instances (engines shared between hosts override these) -----------------

    def lead(self, sink: str) -> bool:
        """Whether this instance should run *sink* (a publisher). A journal only one
        instance uses always says yes."""
        return True

    def leaders(self, sinks: Sequence[str]) -> dict[str, str]:
        """Which instance runs each of *sinks*, where the engine can tell."""
        return {}

    def watch(self, callback: Callable[[], None]) -> bool:
        """Call *callback* when rows are committed, if the engine can tell; False when the
        caller must poll instead."""
        return False

    def storage_bytes(self) -> int | None:
        """How much storage the journal takes, where the engine can tell (``bridge status``)."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def envelopes(self, rows: Iterable[Row]) -> Iterator[Envelope]:
        for row in rows:
            yield Envelope.from_json(row.envelope)

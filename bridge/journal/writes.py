"""What every engine writes the same way, with one algorithm and one row shape: which stored
event a new one is the same fact as (its base key) and whether it is better vouched for
(its trust rank, a column of its own: no stored envelope is read to decide a duplicate),
the events rows, and the index rows a batch adds beside them.

An engine says how a statement runs (:meth:`SqlBatch._write`, :meth:`SqlBatch._read`) and
how it finds the best-vouched stored event of many keys at once
(:meth:`SqlBatch._strongest`)."""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import JournalError
from bridge.events import Envelope, Event, ForeignEvent
from bridge.journal.codec import new_envelope, pack, unpack
from bridge.journal.model import AppendResult, Batch, Conflict
from bridge.journal.planning import DAY, LOOKUPS, Dialect, person_keys

if TYPE_CHECKING:
    from bridge.journal.reads import SqlJournal

# The events table's columns, in the order a row is written, the same on every engine.
EVENT_COLUMNS = (
    "seq_id, msg_id, topic, event_topic, timestamp, event_time, base_key, source, live,"
    " trust_rank, envelope"
)
# What the best-vouched stored event of a key says: its rank, msg_id and stored envelope
# (or, for one this batch wrote, its body).
Stored = tuple[int, str, Any]

# dedup_key + SUPERSEDING + seq_id keys a row that supersedes an earlier one (a control
# character: no dedup key a parser makes from a mail contains one).
SUPERSEDING = "\x1e"
_RANKS = {"pass": 2, "none": 1, "fail": 0}


def trust_rank(body: Any) -> int:
    """How well an event is vouched for: pass above none above fail (a failed check is
    evidence against the mail, no signature is merely none)."""
    origin = body.get("origin") if isinstance(body, dict) else None
    verdict = (origin.get("auth") or {}).get("verdict") if isinstance(origin, dict) else None
    return _RANKS.get(verdict or "none", 1)


# Fields of a body that say how a fact reached the bridge and who vouched for it, not what
# the fact is: two deliveries of one fact may differ in these and still be one event.
NOT_FACTS = ("origin", "signed_by", "signer", "schema_version", "truncated", "summary")


def differing_facts(body: Any, stored: Any) -> list[str]:
    """The top-level fields in which *body* and the *stored* body of an event with the same
    dedup key and trust rank disagree about the fact (empty: the same fact, a duplicate)."""
    if not isinstance(body, dict) or not isinstance(stored, dict):
        return [] if body == stored else ["body"]
    if body.get("schema_version") != stored.get("schema_version"):
        # one mail read under two versions of the contract (a replay after an upgrade):
        # the bodies differ by design, and the stored reading stays
        return []
    names = (set(body) | set(stored)) - set(NOT_FACTS)
    return sorted(name for name in names if body.get(name) != stored.get(name))


def body_of(stored: Any) -> Any:
    """The body of a stored envelope (or the body itself, for one this batch wrote)."""
    if isinstance(stored, dict):
        return stored
    return Envelope.from_json(unpack(stored)).msg


def dedup_key_of(event: Event) -> str:
    if not event.dedup_key:
        raise JournalError(f"event {event.topic} has no dedup key")
    return f"{event.topic}|{event.dedup_key}"


def write_index(
    write: Callable[[str, Sequence[Sequence[Any]]], None],
    mark: str,
    lookups: dict[str, list[tuple[int, Any]]],
    days: Counter[tuple[str, int]],
) -> None:
    """Add ``{lookup: [(seq_id, value), …]}`` to the lookup tables and their totals, and
    ``{(topic, day): events}`` to the daily counts, through *write* (a statement, its rows of
    parameters)."""
    for name, pairs in lookups.items():
        table, column = LOOKUPS[name]
        if pairs:
            write(f"INSERT INTO {table} (seq_id, {column}) VALUES ({mark}, {mark})", pairs)
    totals = Counter((name, str(value)) for name, pairs in lookups.items() for _, value in pairs)
    if totals:
        write(
            f"INSERT INTO lookup_totals (lookup, value, events) VALUES ({mark}, {mark}, {mark})"
            " ON CONFLICT (lookup, value)"
            " DO UPDATE SET events = lookup_totals.events + excluded.events",
            [(name, value, count) for (name, value), count in totals.items()],
        )
    if days:
        write(
            f"INSERT INTO topic_days (topic, day, events) VALUES ({mark}, {mark}, {mark})"
            " ON CONFLICT (topic, day) DO UPDATE SET events = topic_days.events + excluded.events",
            [(topic, day, count) for (topic, day), count in days.items()],
        )


class SqlBatch(Batch):
    """What both engines' batches write with the same SQL: the lookups and daily counts of
    the rows they append, cursors, counters and resume points. An engine says how a
    statement runs."""

    def __init__(self, journal: SqlJournal, dialect: Dialect):
        self._journal = journal
        self._mark = dialect.mark
        self._lookups: dict[str, list[tuple[int, Any]]] = {name: [] for name in LOOKUPS}
        self._days: Counter[tuple[str, int]] = Counter()
        marks = ", ".join([dialect.mark] * len(EVENT_COLUMNS.split(",")))
        self._insert = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({marks})"

    def append(
        self,
        events: Sequence[Event],
        source: str,
        *,
        live: bool = True,
        overrule: bool = False,
        backfill: bool = False,
    ) -> AppendResult:
        """Journal *events*: a fact already stored and vouched for no better is a duplicate
        (or, saying otherwise, a conflict: not stored); one better vouched for (or an
        operator's choice, *overrule*) gets a row of its own naming the one it supersedes."""
        (result,) = self.append_groups(
            [events], source, live=live, overrule=overrule, backfill=backfill
        )
        return result

    def append_groups(
        self,
        groups: Sequence[Sequence[Event]],
        source: str,
        *,
        live: bool = True,
        overrule: bool = False,
        backfill: bool = False,
    ) -> list[AppendResult]:
        """:meth:`append` of each group (a mail's events), in order, as if one after the
        other, with one look-up of what the journal holds and one write for them all: a
        backfill journals hundreds of mails a batch."""
        results = [AppendResult() for _ in groups]
        events = [event for group in groups for event in group]
        if not events:
            return results
        last, self._journal._not_before = self._latest()
        known = self._known_msg_ids([e.msg_id for e in events if isinstance(e, ForeignEvent)])
        keys = {
            id(event): dedup_key_of(event)
            for event in events
            if not (isinstance(event, ForeignEvent) and event.msg_id in known)
        }
        strongest = self._strongest(sorted(set(keys.values())))
        rows: list[tuple] = []
        for group, result in zip(groups, results, strict=True):
            for event in group:
                key = keys.get(id(event))
                if key is None:  # a message of another bus this journal holds already
                    result.duplicates += 1
                    continue
                rank = trust_rank(event.body)
                stored = strongest.get(key)
                if stored is not None and rank <= stored[0] and not overrule:
                    differing = differing_facts(event.body, body_of(stored[2]))
                    if differing:
                        result.conflicts.append(
                            Conflict(
                                event.topic, event.dedup_key or "", stored[1], tuple(differing)
                            )
                        )
                    else:
                        result.duplicates += 1
                    continue
                last += 1
                supersedes = stored[1] if stored else None
                row = self._row(last, event, key, source, live, supersedes, backfill)
                rows.append(row)
                self._index(last, event, row[2], row[5])  # its topic and event_time
                strongest[key] = (rank, row[1], event.body)
                result.seq_ids.append(last)
                result.topics.append(event.topic)
        if rows:
            self._write(self._insert, rows)
            self._write_index()
            if not backfill:  # an archive's mail says nothing of the subscription today
                self._note_last_heard(events, self._journal._not_before)
            self._appended(last)
        return results

    def _note_last_heard(self, events: Sequence[Event], when: int) -> None:
        """When each mailing list and each topic family last brought an event (``last.list.*``
        and ``last.family.*`` positions, in epoch seconds): a list that goes quiet is how an
        operator learns a subscription lapsed (``/metrics``)."""
        heard: set[str] = set()
        for event in events:
            family = self._journal.naming.event_topic(event.topic).split(".", 1)[0]
            heard.add(f"last.family.{family}")
            origin = event.body.get("origin") if isinstance(event.body, dict) else None
            listed = origin.get("list") if isinstance(origin, dict) else None
            if isinstance(listed, str) and listed:
                heard.add(f"last.list.{listed.strip('<>')[:200]}")
        for name in sorted(heard):
            self.set_cursor(name, when)

    def _known_msg_ids(self, msg_ids: Sequence[str]) -> set[str]:
        """Those of *msg_ids* the journal holds (one message of another bus may come by
        several ways: a relay, two upstreams, a bridge subscribed to this one)."""
        if not msg_ids:
            return set()
        among, params = self._journal.dialect.one_of("msg_id", sorted(set(msg_ids)))
        rows = self._journal._rows(f"SELECT msg_id FROM events WHERE {among}", params)
        return {r[0] for r in rows}

    @abstractmethod
    def _strongest(self, keys: Sequence[str]) -> dict[str, Stored]:
        """The best-vouched stored event of each of *keys* that has one (the highest trust
        rank, the newest of those): its rank, msg_id and stored envelope."""

    def _appended(self, last: int) -> None:
        """Rows up to *last* were written in this batch (an engine that notifies hooks here)."""

    def _row(
        self,
        seq_id: int,
        event: Event,
        base_key: str,
        source: str,
        live: bool,
        supersedes: str | None,
        backfill: bool = False,
    ) -> tuple:
        """The events row for *event* (:data:`EVENT_COLUMNS`), its envelope made here."""
        journal = self._journal
        envelope, journaled, event_time = new_envelope(
            journal.naming,
            next(journal._counter),
            seq_id,
            event,
            supersedes,
            journal._not_before,
            backfill=backfill,
        )
        journal._not_before = journaled
        return (
            seq_id,
            envelope.msg_id,
            envelope.topic,
            journal.naming.event_topic(event.topic)
            if isinstance(event, ForeignEvent)
            else event.topic,
            journaled,
            event_time,
            base_key,
            source,
            live,
            trust_rank(event.body),
            pack(envelope.to_json()),
        )

    @abstractmethod
    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run *sql* once for each row of parameters."""

    @abstractmethod
    def _read(self, sql: str) -> tuple | None:
        """The first row of a query without parameters."""

    def _latest(self) -> tuple[int, int]:
        """The newest row's seq_id and timestamp, (0, 0) in an empty journal."""
        found = self._read("SELECT seq_id, timestamp FROM events ORDER BY seq_id DESC LIMIT 1")
        return (int(found[0]), int(found[1])) if found else (0, 0)

    def _index(self, seq_id: int, event: Event, topic: str, event_time: int) -> None:
        """Note what an appended row is about, for :meth:`_write_index`."""
        self._lookups["packages"] += [(seq_id, p) for p in sorted(set(event.packages))]
        self._lookups["bugs"] += [(seq_id, b) for b in sorted(set(event.bugs))]
        self._lookups["people"] += [(seq_id, p) for p in person_keys(event.people)]
        self._days[topic, event_time // DAY] += 1

    def _write_index(self) -> None:
        """Add the noted rows to the lookup tables and the daily counts per topic."""
        write_index(self._write, self._mark, self._lookups, self._days)
        for pairs in self._lookups.values():
            pairs.clear()
        self._days.clear()

    def set_cursor(self, name: str, position: int) -> None:
        m = self._mark
        self._write(
            f"INSERT INTO cursors (name, seq_id) VALUES ({m}, {m})"
            " ON CONFLICT (name) DO UPDATE SET seq_id = excluded.seq_id",
            [(name, position)],
        )

    def add_counters(self, deltas: dict[str, int]) -> None:
        m = self._mark
        changed = [(k, v) for k, v in deltas.items() if v]
        if changed:
            self._write(
                f"INSERT INTO counters (name, value) VALUES ({m}, {m})"
                " ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                changed,
            )

    def set_resume_point(self, archive: str, offset: int, mails: int) -> None:
        m = self._mark
        self._write(
            f'INSERT INTO replay_progress (path, "offset", mails) VALUES ({m}, {m}, {m})'
            ' ON CONFLICT (path) DO UPDATE SET "offset" = excluded."offset",'
            " mails = replay_progress.mails + excluded.mails",
            [(archive, offset, mails)],
        )

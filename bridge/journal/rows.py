"""What every journal engine does the same way: envelopes, dedup keys, trust ranks and
the replay query's shape."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.errors import JournalError
from bridge.events import Envelope, Event, Naming, new_msg_id
from bridge.journal.model import Criteria, Journal, ReplaySelection, Row


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL in the queries they share."""

    mark: str  # the parameter placeholder
    topic_range: str  # lower <= topic < upper, compared byte by byte (uses the topic index)
    envelope_contains: str  # the stored envelope contains a string
    true: str


SQLITE = Dialect("?", "topic >= ? AND topic < ?", "instr(envelope, ?) > 0", "1")
POSTGRES = Dialect("%s", "topic ~>=~ %s AND topic ~<~ %s", "strpos(envelope, %s) > 0", "TRUE")

# The lookup tables that index events by what they are about: (table, column).
LOOKUPS = {
    "packages": ("event_packages", "package"),
    "bugs": ("event_bugs", "bug"),
    "people": ("event_people", "person"),
}


def criteria_where(criteria: Criteria, naming: Naming, dialect: Dialect) -> tuple[str, list[Any]]:
    """A history search (``find``, ``stats``) as an SQL condition and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, values: list[Any], negated: bool = False) -> None:
        clauses.append(f"NOT ({sql})" if negated else sql)
        params.extend(values)

    for topics, negated in ((criteria.topics, False), (criteria.not_topics, True)):
        if topics:
            ranges = [topic_range(naming.bus_prefix(t)) for t in topics]
            sql = " OR ".join(f"({dialect.topic_range})" for _ in ranges)
            add(sql, [bound for pair in ranges for bound in pair], negated)
    lookups = (
        ("packages", criteria.packages, False),
        ("bugs", criteria.bugs, False),
        ("people", tuple(p.lower() for p in criteria.people), False),
        ("packages", criteria.not_packages, True),
        ("people", tuple(p.lower() for p in criteria.not_people), True),
    )
    for lookup, values, negated in lookups:
        if values:
            table, column = LOOKUPS[lookup]
            marks = ", ".join(dialect.mark for _ in values)
            sql = f"seq_id IN (SELECT seq_id FROM {table} WHERE {column} IN ({marks}))"
            add(sql, list(values), negated)
    if criteria.contains:
        # the envelope is stored as ASCII JSON: look for the text as JSON writes it
        needles = [json.dumps(text)[1:-1] for text in criteria.contains]
        add(" OR ".join(f"({dialect.envelope_contains})" for _ in needles), needles)
    if criteria.after is not None:
        add(f"seq_id > {dialect.mark}", [criteria.after])
    if criteria.since is not None:
        add(f"event_time >= {dialect.mark}", [int(criteria.since)])
    if criteria.until is not None:
        add(f"event_time < {dialect.mark}", [int(criteria.until)])
    return " AND ".join(f"({c})" for c in clauses) or dialect.true, params


def topic_range(prefix: str) -> tuple[str, str]:
    """The topics starting with *prefix* are those in [lower, upper): a range an index
    answers, where a ``substr`` or ``LIKE`` test would read every row."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def person_keys(people: Sequence[str]) -> list[str]:
    """What a person search matches for an event's *people*: each name and address in lower
    case, and the Debian login of each ``@debian.org`` address."""
    keys = {p.strip().lower() for p in people if p.strip()}
    keys |= {k.split("@", 1)[0] for k in keys if k.endswith("@debian.org")}
    return sorted(keys)


def new_envelope(
    naming: Naming, i: int, seq_id: int, event: Event, supersedes: str | None
) -> tuple[Envelope, int]:
    """The envelope an event is journaled in (its ``msg_id`` assigned here, once), and the
    epoch second the fact happened."""
    now = datetime.now(UTC)
    envelope = Envelope(
        topic=naming.topic(event.topic),
        msg=event.body,
        timestamp=int(now.timestamp()),
        msg_id=new_msg_id(now),
        i=i,
        username=naming.username,
        seq_id=seq_id,
        index=event.index,
        supersedes=supersedes,
    )
    return envelope, event_epoch(event.occurred_at, envelope.timestamp)


def replay_where(selection: ReplaySelection, mark: str) -> tuple[str, list[Any]]:
    """Published rows matching any part of the selection, as SQL and its parameters
    (*mark*: the engine's parameter placeholder)."""
    parts: list[tuple[str, list[Any]]] = []
    for column, values in (("seq_id", selection.seq_ids), ("msg_id", selection.msg_ids)):
        if values:
            marks = ",".join(mark for _ in values)
            parts.append((f"{column} IN ({marks})", list(values)))
    for column, ranges in (("seq_id", selection.seq_id_ranges), ("timestamp", selection.times)):
        parts += [(f"{column} BETWEEN {mark} AND {mark}", [low, high]) for low, high in ranges]
    if selection.seq_id_after is not None:
        parts.append((f"seq_id > {mark}", [selection.seq_id_after]))
    if selection.after_time is not None:
        parts.append((f"timestamp >= {mark}", [selection.after_time]))
    where = " OR ".join(clause for clause, _ in parts) or "1 = 0"
    return f"live AND ({where})", [p for _, params in parts for p in params]


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


def dedup_key_of(event: Event) -> str:
    if not event.dedup_key:
        raise JournalError(f"event {event.topic} has no dedup key")
    return f"{event.topic}|{event.dedup_key}"


def event_epoch(occurred_at: str | None, journaled: int) -> int:
    """When the fact happened: the event's own time when known (history replays), else now."""
    if occurred_at:
        try:
            moment = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
        except ValueError:
            return journaled
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    return journaled


class SqlJournal(Journal):
    """The reads every SQL engine answers with the same queries; an engine gives its
    dialect, how it runs a query, and how it names a period of time."""

    dialect: Dialect

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read query; every row."""

    @abstractmethod
    def _period(self, period: str) -> tuple[str, list[Any]]:
        """An SQL expression naming an event's day, week or month, and its parameters."""

    def last_seq_id(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(seq_id), 0) FROM events")[0][0])

    def count(self, criteria: Criteria | None = None) -> int:
        if criteria is None or criteria == Criteria():
            return self.last_seq_id()  # seq_id has no gap
        where, params = criteria_where(criteria, self.naming, self.dialect)
        return int(self._rows(f"SELECT COUNT(*) FROM events WHERE {where}", params)[0][0])

    def rows_after(self, seq_id: int, limit: int = 500, *, live_only: bool = False) -> list[Row]:
        m = self.dialect.mark
        live = " AND live" if live_only else ""
        rows = self._rows(
            f"SELECT seq_id, topic, envelope FROM events WHERE seq_id > {m}{live}"
            f" ORDER BY seq_id LIMIT {m}",
            (seq_id, limit),
        )
        return [Row(*r) for r in rows]

    def find_rows(
        self, criteria: Criteria, *, newest_first: bool = True, limit: int = 50, offset: int = 0
    ) -> list[Row]:
        m = self.dialect.mark
        where, params = criteria_where(criteria, self.naming, self.dialect)
        order = "DESC" if newest_first else "ASC"
        rows = self._rows(
            f"SELECT seq_id, topic, envelope FROM events WHERE {where}"
            f" ORDER BY seq_id {order} LIMIT {m} OFFSET {m}",
            [*params, limit, offset],
        )
        return [Row(*r) for r in rows]

    def topic_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT event_topic, COUNT(*) FROM events GROUP BY event_topic")
        return {topic: int(count) for topic, count in rows}

    def by_msg_id(self, msg_id: str) -> Envelope | None:
        rows = self._rows(
            f"SELECT seq_id, topic, envelope FROM events WHERE msg_id = {self.dialect.mark}",
            (msg_id,),
        )
        return next(self.envelopes(Row(*r) for r in rows), None)

    def stats(self, criteria: Criteria, period: str) -> dict[str, dict[str, int]]:
        where, params = criteria_where(criteria, self.naming, self.dialect)
        when_sql, when_params = self._period(period)
        sql = (
            f"SELECT {when_sql} AS period, event_topic, COUNT(*) FROM events"
            f" WHERE {where} GROUP BY period, event_topic ORDER BY period, event_topic"
        )
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for when, topic, count in self._rows(sql, [*when_params, *params]):
            table[when][topic] = int(count)
        return dict(table)

    def replay(self, selection: ReplaySelection, limit: int) -> list[Row]:
        where, params = replay_where(selection, self.dialect.mark)
        rows = self._rows(
            "SELECT seq_id, topic, envelope FROM events"
            f" WHERE {where} ORDER BY seq_id LIMIT {self.dialect.mark}",
            [*params, limit],
        )
        return [Row(*r) for r in rows]

    def replay_count(self, selection: ReplaySelection) -> int:
        where, params = replay_where(selection, self.dialect.mark)
        return int(self._rows(f"SELECT COUNT(*) FROM events WHERE {where}", params)[0][0])

    def cursor(self, name: str) -> int:
        m = self.dialect.mark
        rows = self._rows(f"SELECT seq_id FROM cursors WHERE name = {m}", (name,))
        return int(rows[0][0]) if rows else 0

    def counters(self) -> dict[str, int]:
        return {n: int(v) for n, v in self._rows("SELECT name, value FROM counters ORDER BY name")}

    def resume_point(self, archive: str) -> int:
        m = self.dialect.mark
        rows = self._rows(f'SELECT "offset" FROM replay_progress WHERE path = {m}', (archive,))
        return int(rows[0][0]) if rows else 0

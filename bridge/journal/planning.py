"""How the engines' SQL finds events: the dialects, the lookups that index events by what
they are about, and the conditions a search's criteria become. The queries themselves are
:mod:`bridge.journal.reads`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bridge.events import Naming, debian_login
from bridge.journal.model import Criteria


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL in the queries they share."""

    mark: str  # the parameter placeholder
    topic_range: str  # lower <= {topic column} < upper, byte by byte (uses the topic index)
    true: str
    by_topic: str  # the events table, read through its topic index
    by_event_time: str  # the events table, read through its event_time index
    join: str  # a join whose left table is walked first (SQLite keeps CROSS JOIN's order)
    arrays: bool  # takes a list as one parameter

    def one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """*column* is one of *values*, as SQL and its parameters. An array is one parameter
        whatever the count, so the query text stays the same (PostgreSQL reuses its prepared
        plan, and the driver has no placeholders to find in a long text)."""
        if self.arrays:
            return f"{column} = ANY({self.mark})", [list(values)]
        return f"{column} IN ({', '.join(self.mark for _ in values)})", list(values)


SQLITE = Dialect(
    mark="?",
    topic_range="{0} >= ? AND {0} < ?",
    true="1",
    by_topic="events INDEXED BY events_topic",
    by_event_time="events INDEXED BY events_event_time",
    join="CROSS JOIN",
    arrays=False,
)
POSTGRES = Dialect(
    mark="%s",
    topic_range="{0} ~>=~ %s AND {0} ~<~ %s",
    true="TRUE",
    by_topic="events",
    by_event_time="events",
    join="JOIN",
    arrays=True,
)

# The lookup tables that index events by what they are about: (table, column).
LOOKUPS = {
    "packages": ("event_packages", "package"),
    "bugs": ("event_bugs", "bug"),
    "people": ("event_people", "person"),
}


def criteria_where(
    criteria: Criteria, naming: Naming, dialect: Dialect, table: str = "events"
) -> tuple[str, list[Any]]:
    """A history search (``find``, ``stats``) as an SQL condition on the events *table*
    (its name or alias; ``""`` for the daily counts, which have only topics) and its
    parameters. Each lookup is a probe of its index for this row, never a list of every
    row the lookup matches. *criteria* must not ask for text (``contains``)."""
    col = f"{table}." if table else ""
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, values: list[Any], negated: bool = False) -> None:
        clauses.append(f"NOT ({sql})" if negated else sql)
        params.extend(values)

    for topics, negated in ((criteria.topics, False), (criteria.not_topics, True)):
        if topics:
            ranges = [topic_range(prefix) for prefix in topic_prefixes(topics, naming)]
            test = dialect.topic_range.format(f"{col}topic")
            add(" OR ".join(f"({test})" for _ in ranges), [b for r in ranges for b in r], negated)
    for lookup, values, negated in lookups_of(criteria):
        lookup_table, column = LOOKUPS[lookup]
        among, any_of = dialect.one_of(f"x.{column}", values)
        sql = f"EXISTS (SELECT 1 FROM {lookup_table} AS x WHERE {among} AND x.seq_id = {col}seq_id)"
        add(sql, any_of, negated)
    if criteria.contains:
        # envelopes are stored compressed, which no SQL engine reads: SqlJournal tests
        # them itself (see SqlJournal._containing)
        raise ValueError("criteria_where cannot test contains")
    if criteria.after is not None:
        add(f"{col}seq_id > {dialect.mark}", [criteria.after])
    if criteria.upto is not None:
        add(f"{col}seq_id <= {dialect.mark}", [criteria.upto])
    if criteria.since is not None:
        add(f"{col}event_time >= {dialect.mark}", [math.ceil(criteria.since)])
    if criteria.until is not None:
        add(f"{col}event_time < {dialect.mark}", [math.ceil(criteria.until)])
    return " AND ".join(f"({c})" for c in clauses) or dialect.true, params


def lookups_of(criteria: Criteria) -> list[tuple[str, tuple[Any, ...], bool]]:
    """The lookups a search uses: (lookup, values, negated), those with values."""
    found = (
        ("packages", criteria.packages, False),
        ("bugs", criteria.bugs, False),
        ("people", tuple(p.lower() for p in criteria.people), False),
        ("packages", criteria.not_packages, True),
        ("people", tuple(p.lower() for p in criteria.not_people), True),
    )
    return [(lookup, values, negated) for lookup, values, negated in found if values]


# The number of events holding each lookup value, from the lookups themselves: for journals
# written before the totals were kept, and for a salvaged one.
LOOKUP_TOTALS_FROM_LOOKUPS = [
    "INSERT INTO lookup_totals (lookup, value, events)"
    " SELECT 'packages', package, COUNT(*) FROM event_packages GROUP BY package",
    "INSERT INTO lookup_totals (lookup, value, events)"
    " SELECT 'bugs', CAST(bug AS TEXT), COUNT(*) FROM event_bugs GROUP BY bug",
    "INSERT INTO lookup_totals (lookup, value, events)"
    " SELECT 'people', person, COUNT(*) FROM event_people GROUP BY person",
]


def single_lookup(criteria: Criteria) -> tuple[str, str] | None:
    """(lookup, value) when *criteria* asks for the events of one package, bug or person and
    nothing else: the kept totals answer how many there are."""
    found = lookups_of(criteria)
    if len(found) != 1 or found[0][2] or len(found[0][1]) != 1:
        return None
    lookup, (value,), _ = found[0]
    if criteria != replace(Criteria(), **{lookup: getattr(criteria, lookup)}):
        return None
    return lookup, str(value)


def topic_prefixes(topics: Sequence[str], naming: Naming) -> list[str]:
    """The full topic prefixes a search for *topics* covers: each on this bridge's bus
    (full or event-relative), and each as it is written, for the messages of other buses
    journaled under their own topics (``org.fedoraproject.prod.buildsys``)."""
    found = {naming.bus_prefix(t) for t in topics} | set(topics)
    return sorted(found)


def topic_range(prefix: str) -> tuple[str, str]:
    """The topics starting with *prefix* are those in [lower, upper): a range an index
    answers, where a ``substr`` or ``LIKE`` test would read every row."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def person_keys(people: Sequence[str]) -> list[str]:
    """What a person search matches for an event's *people*: each name and address in lower
    case, and the Debian login of each ``@debian.org`` address."""
    keys = {p.strip().lower() for p in people if p.strip()}
    keys |= {login for k in keys if (login := debian_login(k))}
    return sorted(keys)


DAY = 86400
# A time window matching more events than this is walked along the primary key instead.
CAP = 20_000
# How many seq_ids a walk reads at a time, and how many envelopes a text search reads.
CHUNK = 500


def rolled_up(criteria: Criteria) -> bool:
    """Whether the daily counts per topic answer *criteria* (only topics and times)."""
    return criteria == Criteria(
        topics=criteria.topics,
        not_topics=criteria.not_topics,
        since=criteria.since,
        until=criteria.until,
    )


def _whole_days(criteria: Criteria) -> tuple[int | None, int | None]:
    """The whole days inside the time window: [first, last) as day numbers (None: open)."""
    first = None if criteria.since is None else -(-math.ceil(criteria.since) // DAY)
    last = None if criteria.until is None else math.ceil(criteria.until) // DAY
    if first is not None and last is not None and last < first:
        last = first  # a window within one day: no whole day, the edges count it all
    return first, last


# The day number of an epoch second in SQL, rounded down as Python's // does (the engines'
# integer division rounds towards zero, which differs before 1970).
SQL_DAY = "((event_time - (((event_time % 86400) + 86400) % 86400)) / 86400)"

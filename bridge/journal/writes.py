"""What every engine writes the same way: which stored event a new one is the same fact
as (its dedup key and trust rank), and the index rows a batch adds beside the events."""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import JournalError
from bridge.events import Event
from bridge.journal.model import Batch
from bridge.journal.planning import DAY, LOOKUPS, Dialect, person_keys

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

    def __init__(self, dialect: Dialect):
        self._mark = dialect.mark
        self._lookups: dict[str, list[tuple[int, Any]]] = {name: [] for name in LOOKUPS}
        self._days: Counter[tuple[str, int]] = Counter()

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

"""What every SQL engine reads the same way: pages of events, counts, statistics and
replay selections, planned so that no user-facing query scans the events table."""

from __future__ import annotations

import heapq
import itertools
import json
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from bridge.events import Envelope
from bridge.journal.codec import unpack, unpack_bytes
from bridge.journal.model import Criteria, Journal, ReplaySelection, Row
from bridge.journal.planning import (
    CAP,
    CHUNK,
    DAY,
    LOOKUPS,
    Dialect,
    _whole_days,
    criteria_where,
    lookups_of,
    rolled_up,
    single_lookup,
    topic_range,
)


class SqlJournal(Journal):
    """The reads every SQL engine answers with the same queries; an engine gives its
    dialect, how it runs a query, and how it names a period of time.

    Every read is served by an index or by the daily counts per topic (``topic_days``,
    kept at each append): pages of events are walked in ``seq_id`` order from the primary
    key or a lookup and stop at the page; statistics and totals by topic and time add up
    days, reading events only for the partial days at the edges of a time window.
    """

    dialect: Dialect

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read query; every row."""

    @abstractmethod
    def _period(self, period: str, seconds: str = "event_time") -> tuple[str, list[Any]]:
        """An SQL expression naming the day, week or month of the epoch second *seconds*
        (an SQL expression), and its parameters."""

    _select = "SELECT seq_id, topic, envelope, event_topic FROM events"

    @staticmethod
    def _read_row(selected: Sequence[Any]) -> Row:
        """A Row of what :attr:`_select` read."""
        seq_id, topic, stored, event_topic = selected
        return Row(int(seq_id), topic, unpack(stored), event_topic)

    def find_rows(
        self, criteria: Criteria, *, newest_first: bool = True, limit: int = 50, offset: int = 0
    ) -> list[Row]:
        """The page's seq_ids first, from the cheapest ordered streams of candidates (see
        :meth:`_streams`), each stopping once it has a page; then only those rows."""
        if criteria.contains:
            found = self._containing(criteria, newest_first=newest_first)
            return list(itertools.islice(found, offset, offset + limit))
        m = self.dialect.mark
        order = "DESC" if newest_first else "ASC"
        streams = self._streams(criteria)
        if len(streams) == 1:
            source, params, key = streams[0]
            ids = self._rows(
                f"SELECT {key} {source} ORDER BY {key} {order} LIMIT {m} OFFSET {m}",
                [*params, limit, offset],
            )
            page = [int(r[0]) for r in ids]
        else:
            found: set[int] = set()
            for source, params, key in streams:
                ids = self._rows(
                    f"SELECT {key} {source} ORDER BY {key} {order} LIMIT {m}",
                    [*params, offset + limit],
                )
                found.update(int(r[0]) for r in ids)
            page = sorted(found, reverse=newest_first)[offset : offset + limit]
        return self._fetch(page)

    def _fetch(self, seq_ids: list[int]) -> list[Row]:
        """The rows of *seq_ids*, in that order."""
        return [self._read_row(selected) for selected in self._select_ids(seq_ids)]

    def _select_ids(self, seq_ids: list[int]) -> list[tuple]:
        """What :attr:`_select` reads of *seq_ids*, in that order."""
        if not seq_ids:
            return []
        among, params = self.dialect.one_of("seq_id", seq_ids)
        rows = {int(r[0]): r for r in self._rows(f"{self._select} WHERE {among}", params)}
        return [rows[seq_id] for seq_id in seq_ids]

    def _containing(self, criteria: Criteria, *, newest_first: bool = True) -> Iterator[Row]:
        """The rows matching *criteria* whose envelope holds one of its texts, in seq_id
        order. Envelopes are stored compressed, which no SQL engine can search: the other
        fields' candidates are walked from their indexes a chunk at a time, and each
        envelope is read and tested here."""
        # envelopes are ASCII JSON: look for each text as JSON writes it
        needles = [json.dumps(text)[1:-1].encode("ascii") for text in criteria.contains]
        candidates = self._ordered_ids(replace(criteria, contains=()), newest_first)
        while chunk := list(itertools.islice(candidates, CHUNK)):
            for seq_id, topic, stored, event_topic in self._select_ids(chunk):
                envelope = unpack_bytes(stored)
                if any(needle in envelope for needle in needles):
                    yield Row(int(seq_id), topic, envelope.decode("utf-8"), event_topic)

    def _ordered_ids(self, criteria: Criteria, newest_first: bool) -> Iterator[int]:
        """Every seq_id matching *criteria*, once each, in order: its streams (see
        :meth:`_streams`) walked side by side."""
        walks = [self._walk(*stream, newest_first) for stream in self._streams(criteria)]
        previous = None
        for seq_id in heapq.merge(*walks, reverse=newest_first):
            if seq_id != previous:
                yield seq_id
            previous = seq_id

    def _walk(self, source: str, params: list[Any], key: str, newest_first: bool) -> Iterator[int]:
        """The seq_ids of one stream in order, read CHUNK at a time, each chunk starting
        past the last one (an index range, however far the walk goes)."""
        m = self.dialect.mark
        order, past = ("DESC", "<") if newest_first else ("ASC", ">")
        bound: list[int] = []
        while True:
            start = f" AND {key} {past} {m}" if bound else ""
            rows = self._rows(
                f"SELECT {key} {source}{start} ORDER BY {key} {order} LIMIT {m}",
                [*params, *bound, CHUNK],
            )
            yield from (int(r[0]) for r in rows)
            if len(rows) < CHUNK:
                return
            bound = [int(rows[-1][0])]

    def _streams(self, criteria: Criteria) -> list[tuple[str, list[Any], str]]:
        """``FROM … WHERE …`` clauses, their parameters and the seq_id column each walks in
        order: together, the events matching *criteria*. One per value of the most selective
        field (a lookup value, a topic), else the time window's index, else the primary
        key; every other condition is checked on each row as it is walked."""
        m = self.dialect.mark
        driver = self._driver(criteria)
        if driver is None:  # the primary key, walked from one end
            where, params = criteria_where(criteria, self.naming, self.dialect)
            return [(f"FROM events WHERE events.seq_id >= 1 AND {where}", params, "events.seq_id")]
        kind, values = driver
        if kind == "window":
            where, params = criteria_where(criteria, self.naming, self.dialect)
            return [(f"FROM {self.dialect.by_event_time} WHERE {where}", params, "events.seq_id")]
        if kind == "topics":
            rest = replace(criteria, topics=())
            where, params = criteria_where(rest, self.naming, self.dialect)
            source = f"FROM {self.dialect.by_topic} WHERE events.topic = {m} AND {where}"
            return [(source, [topic, *params], "events.seq_id") for topic in values]
        rest = replace(criteria, **{kind: ()})
        where, params = criteria_where(rest, self.naming, self.dialect)
        table, column = LOOKUPS[kind]
        if rest == Criteria():  # the lookup alone answers: its index, not the events
            return [(f"FROM {table} AS d WHERE d.{column} = {m}", [v], "d.seq_id") for v in values]
        source = (
            f"FROM {table} AS d {self.dialect.join} events ON events.seq_id = d.seq_id"
            f" WHERE d.{column} = {m} AND {where}"
        )
        return [(source, [value, *params], "d.seq_id") for value in values]

    def _driver(self, criteria: Criteria) -> tuple[str, tuple[Any, ...]] | None:
        """The field whose matches are fewest, counted from the kept totals and daily counts:
        a lookup with its values, ``topics`` with the journal's topics under the prefixes,
        the time ``window``; None when nothing narrows the search below CAP."""
        estimates: list[tuple[int, str, tuple[Any, ...]]] = []
        for lookup, values, negated in lookups_of(criteria):
            if negated:
                continue
            matches = sum(self._lookup_matches(lookup, value) for value in values)
            estimates.append((matches, lookup, values))
        if criteria.topics:
            window = replace(Criteria(), topics=criteria.topics)
            where, params = criteria_where(window, self.naming, self.dialect, table="")
            rows = self._rows(
                f"SELECT topic, SUM(events) FROM topic_days WHERE {where} GROUP BY topic", params
            )
            topics = tuple(topic for topic, _ in rows)
            estimates.append((sum(int(n) for _, n in rows), "topics", topics))
        if criteria.since is not None or criteria.until is not None:
            estimates.append((self._days_total(criteria.since, criteria.until), "window", ()))
        if not estimates:
            return None
        matches, kind, values = min(estimates, key=lambda e: e[0])
        if kind == "window" and matches >= CAP:
            return None  # a wide window: walking the primary key meets its rows soon enough
        return kind, values

    def _lookup_matches(self, lookup: str, value: Any) -> int:
        """How many events hold *value* in *lookup*: its kept total."""
        m = self.dialect.mark
        sql = f"SELECT events FROM lookup_totals WHERE lookup = {m} AND value = {m}"
        rows = self._rows(sql, (lookup, str(value)))
        return int(rows[0][0]) if rows else 0

    def _days_total(self, since: float | None, until: float | None) -> int:
        """About how many events happened in the window: those of every day it touches."""
        m = self.dialect.mark
        bounds = [("day >= " + m, None if since is None else int(since) // DAY)]
        bounds.append(("day <= " + m, None if until is None else int(until) // DAY))
        where = " AND ".join(sql for sql, value in bounds if value is not None)
        values = [value for _, value in bounds if value is not None]
        rows = self._rows(f"SELECT COALESCE(SUM(events), 0) FROM topic_days WHERE {where}", values)
        return int(rows[0][0])

    def count(self, criteria: Criteria | None = None) -> int:
        if criteria is None or criteria == Criteria():
            return self.last_seq_id()  # seq_id has no gap
        if criteria.contains:
            return sum(1 for _ in self._containing(criteria))
        if rolled_up(criteria):
            return sum(sum(counts.values()) for counts in self.stats(criteria, "month").values())
        single = single_lookup(criteria)
        if single is not None:
            return self._lookup_matches(*single)
        negated = next(
            (f for f in ("not_topics", "not_packages", "not_people") if getattr(criteria, f)),
            None,
        )
        if negated is not None:
            # what is left out is counted from its own index: all of them, less those
            without = replace(criteria, **{negated: ()})
            left_out = replace(without, **{negated[4:]: getattr(criteria, negated)})
            if not getattr(without, negated[4:]):
                return self.count(without) - self.count(left_out)
        sql, params = self._matching(criteria)
        return int(self._rows(f"SELECT COUNT(*) FROM ({sql}) AS matched", params)[0][0])

    def _matching(self, criteria: Criteria) -> tuple[str, list[Any]]:
        """A query of the seq_ids matching *criteria*, each once."""
        streams = self._streams(criteria)
        if not streams:  # topics under which nothing was ever journaled
            return "SELECT CAST(NULL AS BIGINT) AS seq_id WHERE 1 = 0", []
        parts = [f"SELECT {key} AS seq_id {source}" for source, _, key in streams]
        return " UNION ".join(parts), [p for _, params, _ in streams for p in params]

    def last_seq_id(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(seq_id), 0) FROM events")[0][0])

    def rows_after(self, seq_id: int, limit: int = 500, *, live_only: bool = False) -> list[Row]:
        m = self.dialect.mark
        live = " AND live" if live_only else ""
        rows = self._rows(
            f"{self._select} WHERE seq_id > {m}{live} ORDER BY seq_id LIMIT {m}",
            (seq_id, limit),
        )
        return [self._read_row(r) for r in rows]

    def unsent(self, cursor: str, at_most: int = 1_000_000) -> int:
        m = self.dialect.mark
        rows = self._rows(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE seq_id > {m} AND live"
            f" LIMIT {m}) AS unsent",
            [self.cursor(cursor), at_most],
        )
        return int(rows[0][0])

    def topic_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT topic, SUM(events) FROM topic_days GROUP BY topic")
        counts: dict[str, int] = defaultdict(int)
        for topic, count in rows:
            counts[self.naming.event_topic(topic)] += int(count)
        return dict(counts)

    def by_msg_id(self, msg_id: str) -> Envelope | None:
        rows = self._rows(f"{self._select} WHERE msg_id = {self.dialect.mark}", (msg_id,))
        return next(self.envelopes(self._read_row(r) for r in rows), None)

    def stats(self, criteria: Criteria, period: str) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        if period == "hour" or not rolled_up(criteria):
            self._add_counted(table, criteria, period)
        else:
            first, last = _whole_days(criteria)
            self._add_rolled_up(table, criteria, period, first, last)
            # the partial days at the edges of the window, from the events themselves
            if criteria.since is not None and first is not None and criteria.since < first * DAY:
                until = first * DAY if criteria.until is None else min(first * DAY, criteria.until)
                self._add_counted(table, replace(criteria, until=until), period)
            if criteria.until is not None and last is not None and criteria.until > last * DAY:
                since = last * DAY if criteria.since is None else max(last * DAY, criteria.since)
                self._add_counted(table, replace(criteria, since=since), period)
        return {when: dict(sorted(table[when].items())) for when in sorted(table)}

    def _add_counted(self, table: dict, criteria: Criteria, period: str) -> None:
        when_sql, when_params = self._period(period)
        for matching, params in self._matching_parts(criteria):
            sql = (
                f"SELECT {when_sql} AS period, event_topic, COUNT(*) FROM events"
                f" WHERE {matching} GROUP BY period, event_topic"
            )
            for when, topic, count in self._rows(sql, [*when_params, *params]):
                table[when][topic] += int(count)

    def _matching_parts(self, criteria: Criteria) -> Iterator[tuple[str, list[Any]]]:
        """The seq_ids matching *criteria*, each once over all parts, as conditions on
        ``seq_id`` and their parameters: one query, or (text being found here only, see
        :meth:`_containing`) the ids found, a chunk at a time."""
        if not criteria.contains:
            matching, params = self._matching(criteria)
            yield f"seq_id IN ({matching})", params
            return
        found = (row.seq_id for row in self._containing(criteria))
        while chunk := list(itertools.islice(found, CHUNK)):
            yield self.dialect.one_of("seq_id", chunk)

    def _add_rolled_up(
        self, table: dict, criteria: Criteria, period: str, first: int | None, last: int | None
    ) -> None:
        m = self.dialect.mark
        topics = Criteria(topics=criteria.topics, not_topics=criteria.not_topics)
        where, params = criteria_where(topics, self.naming, self.dialect, table="")
        when_sql, when_params = self._period(period, f"day * {DAY}")
        bounds = [(f"day >= {m}", first), (f"day < {m}", last)]
        days = "".join(f" AND {sql}" for sql, value in bounds if value is not None)
        sql = (
            f"SELECT {when_sql} AS period, topic, SUM(events) FROM topic_days"
            f" WHERE {where}{days} GROUP BY period, topic"
        )
        values = [value for _, value in bounds if value is not None]
        for when, topic, count in self._rows(sql, [*when_params, *params, *values]):
            if int(count):
                table[when][self.naming.event_topic(topic)] += int(count)

    def replay(self, selection: ReplaySelection, limit: int) -> list[Row]:
        """Each part of the selection walks the primary key (times become ranges of seq_id
        first), at most *limit* rows each; the first *limit* of all, in order."""
        found: dict[int, Row] = {}
        for where, params in self._replay_parts(selection):
            rows = self._rows(
                f"{self._select} WHERE live AND {where} ORDER BY seq_id LIMIT {self.dialect.mark}",
                [*params, limit],
            )
            found.update((int(r[0]), self._read_row(r)) for r in rows)
        return [found[seq_id] for seq_id in sorted(found)[:limit]]

    def replay_count(self, selection: ReplaySelection, at_most: int | None = None) -> int:
        parts = self._replay_parts(selection)
        where = " OR ".join(f"({w})" for w, _ in parts) or "1 = 0"
        params = [p for _, part in parts for p in part]
        inner = f"SELECT 1 FROM events WHERE live AND ({where})"
        if at_most is not None:
            inner += f" LIMIT {int(at_most)}"
        return int(self._rows(f"SELECT COUNT(*) FROM ({inner}) AS counted", params)[0][0])

    def _replay_parts(self, selection: ReplaySelection) -> list[tuple[str, list[Any]]]:
        m = self.dialect.mark
        parts: list[tuple[str, list[Any]]] = []
        for column, values in (("seq_id", selection.seq_ids), ("msg_id", selection.msg_ids)):
            if values:
                parts.append(self.dialect.one_of(column, values))
        ranges = list(selection.seq_id_ranges)
        ranges += [self._seq_ids_between(low, high) for low, high in selection.times]
        parts += [(f"seq_id BETWEEN {m} AND {m}", [low, high]) for low, high in ranges]
        if selection.seq_id_after is not None:
            parts.append((f"seq_id > {m}", [selection.seq_id_after]))
        if selection.after_time is not None:
            first, _ = self._seq_ids_between(selection.after_time, None)
            parts.append((f"seq_id >= {m}", [first]))
        return parts

    def _seq_ids_between(self, low: float, high: float | None) -> tuple[int, int]:
        """The seq_ids journaled from *low* to *high* (epoch seconds, inclusive): journal
        time never goes back as seq_id grows, so they are one range, found in the
        timestamp index."""
        m = self.dialect.mark
        first = self._rows(
            f"SELECT seq_id FROM events WHERE timestamp >= {m} ORDER BY timestamp, seq_id LIMIT 1",
            [low],
        )
        if high is None:
            return (int(first[0][0]) if first else self.last_seq_id() + 1), 0
        last = self._rows(
            f"SELECT seq_id FROM events WHERE timestamp <= {m}"
            " ORDER BY timestamp DESC, seq_id DESC LIMIT 1",
            [high],
        )
        if not first or not last:
            return 1, 0  # an empty range
        return int(first[0][0]), int(last[0][0])

    def cursor(self, name: str) -> int:
        m = self.dialect.mark
        rows = self._rows(f"SELECT seq_id FROM cursors WHERE name = {m}", (name,))
        return int(rows[0][0]) if rows else 0

    def cursors(self, prefix: str) -> dict[str, int]:
        low, high = topic_range(prefix)
        m = self.dialect.mark
        sql = f"SELECT name, seq_id FROM cursors WHERE name >= {m} AND name < {m} ORDER BY name"
        return {name: int(value) for name, value in self._rows(sql, (low, high))}

    def counters(self) -> dict[str, int]:
        return {n: int(v) for n, v in self._rows("SELECT name, value FROM counters ORDER BY name")}

    def resume_point(self, archive: str) -> int:
        m = self.dialect.mark
        rows = self._rows(f'SELECT "offset" FROM replay_progress WHERE path = {m}', (archive,))
        return int(rows[0][0]) if rows else 0

    def resume_points(self, prefix: str) -> list[str]:
        low, high = topic_range(prefix)
        m = self.dialect.mark
        sql = f"SELECT path FROM replay_progress WHERE path >= {m} AND path < {m} ORDER BY path"
        return [row[0] for row in self._rows(sql, (low, high))]

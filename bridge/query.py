"""History queries over the journal: ``bridge query`` and ``bridge stats``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bridge.events import Envelope, Naming
from bridge.journal import Journal

PERIODS = {"day": "%Y-%m-%d", "week": "%Y-W%W", "month": "%Y-%m"}


@dataclass(frozen=True)
class Criteria:
    """What to look for; every field narrows the selection."""

    topic: str = ""
    package: str | None = None
    bug: int | None = None
    person: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self, naming: Naming) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        prefix = naming.bus_prefix(self.topic) if self.topic else ""
        if prefix:
            clauses.append("substr(topic, 1, ?) = ?")
            params += [len(prefix), prefix]
        if self.package:
            clauses.append("seq_id IN (SELECT seq_id FROM event_packages WHERE package = ?)")
            params.append(self.package)
        if self.bug is not None:
            clauses.append("seq_id IN (SELECT seq_id FROM event_bugs WHERE bug = ?)")
            params.append(self.bug)
        if self.person:
            clauses.append("instr(agent, ?) > 0")
            params.append(self.person.lower())
        if self.since is not None:
            clauses.append("event_time >= ?")
            params.append(int(self.since))
        if self.until is not None:
            clauses.append("event_time < ?")
            params.append(int(self.until))
        return " AND ".join(clauses) or "1", params


def find(
    journal: Journal,
    criteria: Criteria,
    *,
    newest_first: bool = True,
    limit: int = 50,
    page: int = 1,
) -> list[Envelope]:
    """One page of matching envelopes (history rows included)."""
    where, params = criteria.where(journal.naming)
    rows = journal.select(
        where,
        params,
        order="DESC" if newest_first else "ASC",
        limit=limit,
        offset=(page - 1) * limit,
    )
    return list(journal.iter_envelopes(rows))


def stats(journal: Journal, criteria: Criteria, period: str) -> dict[str, dict[str, int]]:
    """``{period: {event topic: count}}``, periods in order, by when the events happened."""
    where, params = criteria.where(journal.naming)
    sql = (
        f"SELECT strftime(?, event_time, 'unixepoch') AS period, event_topic, COUNT(*)"
        f" FROM events WHERE {where} GROUP BY period, event_topic ORDER BY period, event_topic"
    )
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for when, topic, count in journal.execute(sql, [PERIODS[period], *params]):
        table[when][topic] = count
    return dict(table)


def render_table(table: dict[str, dict[str, int]], period: str) -> list[str]:
    """A plain text table: one row per period, one column per topic, totals last."""
    topics = sorted({t for counts in table.values() for t in counts})
    if not topics:
        return ["no events"]
    widths = [max(len(period), 10)] + [max(len(t), 5) for t in topics] + [5]
    header = [period] + topics + ["total"]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for when, counts in table.items():
        cells = [when] + [str(counts.get(t, 0)) for t in topics] + [str(sum(counts.values()))]
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return lines

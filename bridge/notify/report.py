"""What people ask of the rules: what a rule would have delivered (``preview``), and where
each rule stands (``status``, ``/metrics``, the web page)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bridge.config import Config
from bridge.events import Envelope, iso_epoch
from bridge.journal import Journal
from bridge.notify.render import summary_of
from bridge.notify.rules import SCAN_PAGE, Matcher, Rule, read_rules

COUNTERS = ("delivered", "events", "digests", "held", "failed", "disabled")


@dataclass
class Preview:
    """What a rule would have delivered over a stretch of history."""

    rule: str
    since: float | None
    until: float | None
    per_day: Counter[str] = field(default_factory=Counter)
    first: list[tuple[Envelope, list[str]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_day.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "since": self.since,
            "until": self.until,
            "total": self.total,
            "per_day": dict(sorted(self.per_day.items())),
            "first": [
                {
                    "seq_id": e.seq_id,
                    "topic": e.topic,
                    "msg_id": e.msg_id,
                    "summary": summary_of(e),
                    "why": why,
                }
                for e, why in self.first
            ],
        }


def preview(
    journal: Journal,
    rule: Rule,
    *,
    since: float | None = None,
    until: float | None = None,
    first: int = 10,
) -> Preview:
    """Run *rule* over the journal's history (events that happened in [since, until)),
    oldest first, as the rule would have met them: per UTC day, and the first *first*
    with why each matched."""
    result = Preview(rule.name, since, until)
    matcher = Matcher(rule)
    upto = journal.last_seq_id()
    position = 0
    while position < upto:
        criteria = matcher.criteria(journal, position, upto)
        if criteria is None:
            break
        criteria = replace(criteria, since=since, until=until)
        page = journal.find(criteria, newest_first=False, limit=SCAN_PAGE)
        for envelope in page:
            if not rule.admits(envelope):
                continue
            day = datetime.fromtimestamp(happened_at(envelope), UTC).strftime("%Y-%m-%d")
            result.per_day[day] += 1
            if len(result.first) < first:
                result.first.append((envelope, matcher.why(envelope)))
        if len(page) < SCAN_PAGE:
            break
        position = page[-1].seq_id
    return result


def happened_at(envelope: Envelope) -> float:
    """When the event happened (its mail's date), as the journal's time searches read it;
    when it was journaled for a body that does not say."""
    origin = envelope.msg.get("origin")
    date = origin.get("date") if isinstance(origin, dict) else None
    if isinstance(date, str):
        try:
            return iso_epoch(date)
        except ValueError:
            pass
    return float(envelope.timestamp)


def rule_status(config: Config, journal: Journal) -> list[dict[str, Any]]:
    """Each rule's position and counts: cursor, lag (events journaled after it), what it
    delivered, failed, held, and whether it is disabled."""
    counters = journal.counters()
    last = journal.last_seq_id()
    found = []
    for name, rule in sorted(read_rules(config).items()):
        key = rule.cursor_name
        created = journal.cursor(f"{key}.created")
        cursor = journal.cursor(key)
        entry: dict[str, Any] = {
            "rule": name,
            "deliver": rule.settings.deliver.split("?", 1)[0],
            "started": bool(created),
            "cursor": cursor,
            "lag": max(0, last - cursor) if created else None,
            "digest_due": journal.cursor(f"{key}.due") or None,
            "failing_since": journal.cursor(f"{key}.failing_since") or None,
            "disabled_at": journal.cursor(f"{key}.disabled_at") or None,
        }
        for counter in COUNTERS:
            entry[counter] = counters.get(f"{key}.{counter}", 0)
        found.append(entry)
    return found

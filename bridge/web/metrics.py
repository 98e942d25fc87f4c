"""``/metrics``: the bridge's state in Prometheus' text format, read fresh at each scrape
from the journal (and the spool, on the host that has one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.config import Config
from bridge.journal import Journal
from bridge.ops.status import status_report

# status fields that are a count of kept mail, each one gauge
_GAUGES = {
    "spool_pending": "Mails in the spool the pipeline has not processed yet.",
    "spool_failed": "Mails no parser could turn into events, kept in spool/failed.",
    "spool_ignored": "Mails no parser wanted, kept in spool/ignored.",
    "spool_damaged": "Spool records that could not be read, kept in spool/damaged.",
    "held": "Mails held by the trust policy, waiting for bridge held release.",
    "inbox_waiting": "Mails in the inbox not forwarded yet.",
}


class JournalCollector:
    """One scrape's worth of metrics."""

    def __init__(self, config: Config, journal: Journal):
        self.config = config
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        report = status_report(self.config, self.journal)
        counters = report["counters"]
        accepted = CounterMetricFamily(
            "bridge_mails_accepted", "Mails the SMTP listener accepted into the spool."
        )
        accepted.add_metric([], counters.get("accepted", 0))
        yield accepted
        every = CounterMetricFamily(
            "bridge_counter", "Every counter the bridge keeps (bridge status).", labels=["name"]
        )
        for name, value in sorted(counters.items()):
            every.add_metric([name], value)
        yield every
        events = CounterMetricFamily(
            "bridge_events", "Events journaled, by event topic.", labels=["topic"]
        )
        for topic, count in sorted(self.journal.topic_counts().items()):
            events.add_metric([topic], count)
        yield events
        last = GaugeMetricFamily("bridge_journal_last_seq_id", "The newest event's seq_id.")
        last.add_metric([], report["last_seq_id"])
        yield last
        if report.get("journal_bytes") is not None:
            size = GaugeMetricFamily("bridge_journal_bytes", "Storage the journal takes.")
            size.add_metric([], report["journal_bytes"])
            yield size
        lag = GaugeMetricFamily(
            "bridge_sink_lag", "Events journaled that a sink has not sent yet.", labels=["sink"]
        )
        lag.add_metric(["zeromq"], report["publisher_lag"])
        if "amqp_lag" in report:
            lag.add_metric(["amqp"], report["amqp_lag"])
        yield lag
        yield from notify_metrics(self.config, self.journal)
        yield from last_heard(self.journal)
        for field, help_text in _GAUGES.items():
            if field in report:
                gauge = GaugeMetricFamily(f"bridge_{field}", help_text)
                gauge.add_metric([], report[field])
                yield gauge


# bridge notify's counters per rule (bridge notify status), each one counter family
_NOTIFY_COUNTERS = {
    "delivered": "Notices a rule's destination took (an event, a digest or a held notice).",
    "events": "Events a rule delivered, in notices of their own or in digests.",
    "held": "Events a rule held over its rate limit (sent in one notice or counted).",
    "failed": "Deliveries a rule's destination did not take (each is retried).",
}


def notify_metrics(config: Config, journal: Journal) -> Iterator[Metric]:
    """Each notification rule's counters, its lag and whether it is disabled."""
    from bridge.notify.report import rule_status

    rules = rule_status(config, journal)
    if not rules:
        return
    for name, help_text in _NOTIFY_COUNTERS.items():
        family = CounterMetricFamily(f"bridge_notify_{name}", help_text, labels=["rule"])
        for entry in rules:
            family.add_metric([entry["rule"]], entry[name])
        yield family
    lag = GaugeMetricFamily(
        "bridge_notify_lag", "Events journaled after a rule's cursor.", labels=["rule"]
    )
    disabled = GaugeMetricFamily(
        "bridge_notify_disabled",
        "1 when a rule's destination failed too long and the rule was disabled.",
        labels=["rule"],
    )
    for entry in rules:
        lag.add_metric([entry["rule"]], entry["lag"] or 0)
        disabled.add_metric([entry["rule"]], 1 if entry["disabled_at"] else 0)
    yield lag
    yield disabled


def last_heard(journal: Journal) -> Iterator[Metric]:
    """When each mailing list and each topic family last brought an event: alert on
    ``time() - bridge_list_last_event_timestamp_seconds > 86400`` to learn that a list
    subscription lapsed (the bus just goes quiet)."""
    for kind, label, help_text in (
        ("list", "list", "When the bridge last journaled an event from each mailing list."),
        ("family", "family", "When the bridge last journaled an event of each topic family."),
    ):
        gauge = GaugeMetricFamily(
            f"bridge_{kind}_last_event_timestamp_seconds", help_text, labels=[label]
        )
        prefix = f"last.{kind}."
        for name, when in journal.cursors(prefix).items():
            gauge.add_metric([name[len(prefix) :]], when)
        yield gauge


class WebCollector:
    """The web process itself: its build, and the freshness of its view of the journal."""

    def __init__(self, freshness: Freshness | None):
        self.freshness = freshness

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("bridge_build", "The bridge's version and what it runs on.")
        info.add_metric([], build_info())
        yield info
        if self.freshness is None:
            return
        fresh = GaugeMetricFamily(
            "bridge_web_view_fresh",
            "1 while the web reads the journal on disk, 0 once it found it replaced (it then"
            " reads it anew).",
        )
        fresh.add_metric([], 0 if self.freshness.stale else 1)
        yield fresh
        checked = GaugeMetricFamily(
            "bridge_web_view_checked_age_seconds",
            "Seconds since the web last checked that its view is the journal on disk.",
        )
        checked.add_metric([], self.freshness.checked_age())
        yield checked


class Freshness(Protocol):
    stale: str | None

    def checked_age(self) -> float: ...


def build_info() -> dict[str, str]:
    import platform
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    try:
        bridge_version = version("debian-bus-bridge")
    except PackageNotFoundError:
        bridge_version = "unknown"
    return {
        "version": bridge_version,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def metrics_response(
    config: Config, journal: Journal, freshness: Freshness | None = None
) -> tuple[bytes, str]:
    """The exposition text and its content type: the journal's state, the web process's
    build and freshness, and prometheus-client's process and platform collectors."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(config, journal))  # type: ignore[arg-type]
    registry.register(WebCollector(freshness))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST

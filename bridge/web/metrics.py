"""``/metrics``: the bridge's state in Prometheus' text format, read fresh at each scrape
from the journal (and the spool, on the host that has one)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


def metrics_response(config: Config, journal: Journal) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(config, journal))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST

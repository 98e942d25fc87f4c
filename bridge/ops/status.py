"""What a running bridge reports about itself: ``bridge status`` prints it, ``/metrics``
exposes it to Prometheus."""

from __future__ import annotations

import time
from typing import Any

from bridge.config import Config
from bridge.intake.spool import SPOOL_DIR, spool_id, spool_of, unpack
from bridge.journal import Journal
from bridge.sinks.registry import NAMES, configured


def status_report(config: Config, journal: Journal) -> dict[str, Any]:
    """Counters, spool depths, journal and cursor positions. The spool figures are there
    when this host has a spool (a web front on another host reads only the journal)."""
    from bridge.pipeline.worker import spool_cursor

    report: dict[str, Any] = {
        "state_dir": str(config.state_path),
        "journal": journal.location,
        "journal_bytes": journal.storage_bytes(),
        "last_seq_id": journal.last_seq_id(),
    }
    for name in configured(config):  # publisher_cursor, publisher_lag, amqp_cursor, ...
        report[f"{name}_cursor"] = journal.cursor(name)
        report[f"{name}_lag"] = journal.unsent(name)
    if (config.state_path / SPOOL_DIR).is_dir():
        spool = spool_of(config)
        try:
            position = spool.checked_position(journal.cursor(spool_cursor(config)))
            report |= {
                "spool_position": spool_id(*unpack(position)),
                "spool_pending": spool.depth(position),
                "spool_failed": _count(spool.failed_dir.glob("*.eml")),
                "spool_ignored": _count(spool.ignored_dir.glob("*.eml")),
                "spool_damaged": _count(spool.damaged_dir.glob("*.bin")),
                "inbox_waiting": _count(
                    p
                    for p in spool.inbox_dir.glob("*.eml")
                    if not p.with_suffix(".forwarded").exists()
                ),
                "held": _count(spool.held_dir.glob("*.eml")),
            }
        finally:
            spool.close()
    report["counters"] = journal.counters()
    if config.upstream:
        report["upstreams"] = upstream_status(config, journal, report["counters"])
    leaders = journal.leaders(NAMES)
    if leaders:
        report["sinks"] = leaders
    return report


UPSTREAM_COUNTERS = ("received", "journaled", "duplicates", "recovered", "gaps", "refused")
SILENT_AFTER = 300  # seconds without a message after which an upstream is said to be silent


def upstream_status(config: Config, journal: Journal, counters: dict[str, int]) -> dict:
    """Each upstream: where it is read from, its state, how far behind its last message
    is (seconds), the last seq_id seen from it, and its counts."""
    found = {}
    now = time.time()
    for name, settings in sorted(config.upstream.items()):
        key = f"upstream.{name}"
        at = journal.cursor(f"{key}.at")
        entry: dict[str, Any] = {
            "from": settings.amqp_url.rpartition("@")[2] and f"amqp queue {settings.amqp_queue}"
            if settings.amqp_url
            else (f"srv {settings.srv}" if settings.srv else " ".join(settings.endpoints)),
            "state": "waiting"
            if not at
            else ("silent" if now - at > SILENT_AFTER else "receiving"),
            "last_message_at": at or None,
            "lag_seconds": round(now - at) if at else None,
            "last_seq_id": journal.cursor(key) or None,
        }
        for counter in UPSTREAM_COUNTERS:
            entry[counter] = counters.get(f"{key}.{counter}", 0)
        found[name] = entry
    return found


def _count(paths: Any) -> int:
    return sum(1 for _ in paths)

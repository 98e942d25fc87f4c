"""What a running bridge reports about itself: ``bridge status`` prints it, ``/metrics``
exposes it to Prometheus."""

from __future__ import annotations

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
    leaders = journal.leaders(NAMES)
    if leaders:
        report["sinks"] = leaders
    return report


def _count(paths: Any) -> int:
    return sum(1 for _ in paths)

"""The worker: spooled mail → pipeline → journal, off the SMTP transaction.

It reads committed spool records in arrival order, runs each through the pipeline once, and
writes all their events together with its spool position in one journal transaction, so a
crash at any moment re-processes at most the batch in flight (and the dedup keys make that
harmless). Unusable mail is copied to ``failed/`` or ``ignored/`` with its reason first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import JournalError
from bridge.journal import AppendResult, Journal
from bridge.pipeline import FAILED, IGNORED, Outcome, Pipeline
from bridge.spool import Record, Spool, spool_id, unpack

log = logging.getLogger(__name__)

CURSOR = "spool"


@dataclass
class Processed:
    record: Record
    outcome: Outcome
    result: AppendResult


def log_outcome(where: str, outcome: Outcome, result: AppendResult) -> None:
    """The one INFO line per mail: Message-ID, parsers, topics, outcome."""
    topics = ",".join(sorted({e.topic for e in outcome.events})) or "-"
    log.info(
        "mail %s %s parser=%s topics=%s outcome=%s new=%d duplicates=%d%s",
        outcome.message_id or "<no Message-ID>",
        where,
        ",".join(outcome.parsers) or "-",
        topics,
        outcome.status,
        len(result.seq_ids),
        result.duplicates,
        f" reason={outcome.reason!r}" if outcome.status != "published" else "",
    )


def outcome_counters(items: list[tuple[Outcome, AppendResult]]) -> dict[str, int]:
    counts = {"processed": 0, "events": 0, "duplicates": 0, "ignored": 0, "failed": 0}
    for outcome, result in items:
        counts["processed"] += 1
        counts["events"] += len(result.seq_ids)
        counts["duplicates"] += result.duplicates
        if outcome.status == IGNORED:
            counts["ignored"] += 1
        elif outcome.status == FAILED:
            counts["failed"] += 1
    return counts


class Worker:
    """Drains the spool into the journal. Call :meth:`run` in its own thread."""

    def __init__(
        self,
        spool: Spool,
        journal: Journal,
        pipeline: Pipeline,
        *,
        on_appended: Callable[[], None] | None = None,
        batch_size: int = 64,
    ):
        self.spool = spool
        self.journal = journal
        self.pipeline = pipeline
        self.on_appended = on_appended
        self.batch_size = batch_size
        self.position = journal.cursor(CURSOR) or spool.start_position()
        self._wake = threading.Event()

    def wake(self) -> None:
        """Something new was committed to the spool (called from another thread)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        log.info("worker starting at spool position %s", spool_id(*unpack(self.position)))
        while not stop.is_set():
            try:
                progressed = self.step()
            except Exception:  # a bug must not stop intake's mail from being processed later
                log.exception("worker failed; retrying")
                progressed = False
                stop.wait(1.0)
            if not progressed:
                self._wake.wait(0.2)
                self._wake.clear()
        while self.step():  # drain what was accepted before the stop
            pass

    def step(self) -> bool:
        """Process one batch; False when there was nothing to do (or the journal is busy)."""
        records = self.spool.read_after(self.position, self.batch_size)
        if not records:
            return False
        try:
            self.process(records)
        except (JournalError, OSError) as e:
            log.warning("journal or spool unavailable, will retry %d mail(s): %s", len(records), e)
            return False
        self.position = records[-1].next_position
        if self.on_appended:
            self.on_appended()
        return True

    def process(self, records: list[Record]) -> list[Processed]:
        outcomes = [(record, self.pipeline.process(record.raw)) for record in records]
        for record, outcome in outcomes:
            if outcome.status in (FAILED, IGNORED):
                self.spool.keep(
                    outcome.status, record.spool_id, record.raw, record.meta, outcome.reason
                )
        done: list[Processed] = []
        with self.journal.transaction() as db:
            for record, outcome in outcomes:
                result = self.journal.append_in(db, outcome.events, "smtp")
                done.append(Processed(record, outcome, result))
            self.journal.set_cursor(CURSOR, records[-1].next_position, db)
            self.journal.add_counters(outcome_counters([(p.outcome, p.result) for p in done]), db)
        for item in done:
            log_outcome(f"spool={item.record.spool_id}", item.outcome, item.result)
        return done

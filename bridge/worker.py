"""The worker: spooled mail → pipeline → journal, off the SMTP transaction.

It reads committed spool records in arrival order, runs each through the pipeline once, and
writes all their events together with its spool position in one journal transaction, so a
crash at any moment re-processes at most the batch in flight (and the dedup keys make that
harmless). Unusable mail is copied to ``failed/`` or ``ignored/`` with its reason first.

One mail can never stall the rest: when a batch cannot be journaled for a reason other than
the journal being unavailable, the batch is journaled again mail by mail, and the mail whose
events the journal refuses goes to ``failed/`` with that reason instead. Damaged spool
bytes are kept in ``damaged/`` and the valid mail after them goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import JournalDamaged, JournalUnavailable
from bridge.journal import AppendResult, Journal
from bridge.pipeline import FAILED, IGNORED, Outcome, Pipeline, describe
from bridge.spool import Record, Spool, spool_id, unpack

log = logging.getLogger(__name__)

CURSOR = "spool"
# Worth waiting for: the same write can succeed later. Anything else is this batch's fault.
TRANSIENT = (JournalUnavailable, JournalDamaged, OSError)


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
        self.position = spool.checked_position(journal.cursor(CURSOR))
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
        outcomes = [(record, self._outcome(record)) for record in records]
        try:
            self._journal(outcomes)
        except TRANSIENT as e:
            log.warning("journal or spool unavailable, will retry %d mail(s): %s", len(records), e)
            return False
        except Exception as e:
            log.warning("a batch of %d failed (%s); journaling mail by mail", len(records), e)
            if not self._one_by_one(outcomes):
                return False
        if self.on_appended:
            self.on_appended()
        return True

    def _outcome(self, record: Record) -> Outcome:
        if record.damage is None:
            return self.pipeline.process(record.raw)
        log.error(
            "spool: DAMAGED record in segment %d: %s; kept in %s, processing goes on",
            record.segment,
            record.damage,
            self.spool.damaged_dir,
        )
        return Outcome(None, failures=[f"damaged spool bytes: {record.damage}"])

    def _one_by_one(self, outcomes: list[tuple[Record, Outcome]]) -> bool:
        """Journal each mail alone; a mail the journal refuses goes to ``failed/``."""
        for record, outcome in outcomes:
            try:
                self._journal([(record, outcome)])
            except TRANSIENT as e:
                log.warning("journal or spool unavailable, will retry: %s", e)
                return False
            except Exception as e:
                refused = Outcome(
                    outcome.message_id,
                    parsers=outcome.parsers,
                    failures=[f"the journal refused its events: {describe(e)}"],
                )
                self._journal([(record, refused)])
        return True

    def _journal(self, outcomes: list[tuple[Record, Outcome]]) -> list[Processed]:
        for record, outcome in outcomes:
            if record.damage is not None:
                self.spool.keep("damaged", record.spool_id, record.raw, record.meta, record.damage)
            elif outcome.status in (FAILED, IGNORED):
                self.spool.keep(
                    outcome.status, record.spool_id, record.raw, record.meta, outcome.reason
                )
        done: list[Processed] = []
        with self.journal.transaction() as db:
            for record, outcome in outcomes:
                result = self.journal.append_in(db, outcome.events, "smtp")
                done.append(Processed(record, outcome, result))
            self.journal.set_cursor(CURSOR, outcomes[-1][0].next_position, db)
            counts = outcome_counters([(p.outcome, p.result) for p in done])
            counts["spool_damaged"] = sum(1 for record, _ in outcomes if record.damage)
            self.journal.add_counters(counts, db)
        self.position = outcomes[-1][0].next_position
        for item in done:
            log_outcome(f"spool={item.record.spool_id}", item.outcome, item.result)
        return done

"""The worker: spooled mail → pipeline → journal, off the SMTP transaction.

It reads committed spool records in arrival order, runs each through the pipeline once, and
writes all their events together with its spool position in one journal transaction, so a
crash at any moment re-processes at most the batch in flight (and the dedup keys make that
harmless). Unusable mail is copied to ``failed/`` or ``ignored/`` with its reason first.

Mails go through the pipeline side by side (:data:`PARALLEL_MAILS` at a time), so a mail
whose trust check waits on a slow resolver holds up no other: the mails after it are
journaled without waiting for it (in arrival order among themselves).

One mail can never stall the rest: when a batch cannot be journaled for a reason other than
the journal being unavailable, the batch is journaled again mail by mail, and the mail whose
events the journal refuses goes to ``failed/`` with that reason instead. Damaged spool
bytes are kept in ``damaged/`` and the valid mail after them goes on.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Config
from bridge.errors import JournalDamaged, JournalUnavailable
from bridge.intake import kept
from bridge.intake.spool import Record, Spool, spool_id, unpack
from bridge.journal import AppendResult, Journal
from bridge.pipeline.process import (
    FAILED,
    HELD,
    IGNORED,
    PUBLISHED,
    REJECTED,
    Outcome,
    Pipeline,
    apply_policy,
    describe,
)
from bridge.runner import run_loop

log = logging.getLogger(__name__)

CURSOR = "spool"
# Mails whose pipeline runs at once: most of a mail's time is parsing (one core, the GIL),
# but a trust check waiting on DNS or gpgv leaves the core to the others.
PARALLEL_MAILS = 16
# How long the mails taken in together wait for the slowest of them before the others are
# journaled without it: well above a mail's parse, well below a DNS budget.
SLOW_MAIL = 0.5


def spool_cursor(config: Config) -> str:
    """The journal cursor of this instance's spool. The spool is local to each host, so on
    a journal shared between hosts each instance keeps its own position."""
    if not config.journal.url:
        return CURSOR
    return f"{CURSOR}:{socket.gethostname()}:{config.state_path}"


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
        "mail %s %s parser=%s topics=%s outcome=%s new=%d duplicates=%d%s%s",
        outcome.message_id or "<no Message-ID>",
        where,
        ",".join(outcome.parsers) or "-",
        topics,
        outcome.status,
        len(result.seq_ids),
        result.duplicates,
        f" conflicts={len(result.conflicts)}" if result.conflicts else "",
        f" reason={outcome.reason!r}" if outcome.status != "published" else "",
    )
    if result.conflicts:
        log.warning("mail %s held: %s", outcome.message_id, conflict_reason(result))


def conflict_reason(result: AppendResult) -> str:
    """Why a mail whose events conflict with stored ones is held (design §10)."""
    return (
        "conflict: "
        + "; ".join(c.describe() for c in result.conflicts)
        + ". Neither is taken over the other: 'bridge held release' publishes this one in"
        " place of the stored event"
    )


def refused(outcome: Outcome, error: Exception) -> Outcome:
    """*outcome* turned into a failure: the journal would not store its events."""
    return Outcome(
        outcome.message_id,
        parsers=outcome.parsers,
        failures=[f"the journal refused its events: {describe(error)}"],
    )


def outcome_counters(items: list[tuple[Outcome, AppendResult]]) -> dict[str, int]:
    counts = {
        "processed": 0,
        "events": 0,
        "duplicates": 0,
        "ignored": 0,
        "failed": 0,
        "held": 0,
        "rejected": 0,
        "conflicts": 0,
    }
    for outcome, result in items:
        counts["processed"] += 1
        counts["events"] += len(result.seq_ids)
        counts["duplicates"] += result.duplicates
        counts["conflicts"] += len(result.conflicts)
        if outcome.status != PUBLISHED:
            counts[outcome.status.value] += 1
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
        policy_for: Callable[[str], str] | None = None,
        cursor: str = CURSOR,
        on_inbox: Callable[[Path], None] | None = None,
    ):
        self.spool = spool
        self.journal = journal
        self.pipeline = pipeline
        self.policy_for = policy_for
        self.cursor = cursor
        self.on_inbox = on_inbox
        self.on_appended = on_appended
        self.batch_size = batch_size
        self.position = spool.checked_position(journal.cursor(cursor))
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(PARALLEL_MAILS, thread_name_prefix="pipeline")
        self._in_flight: list[tuple[Record, futures.Future[Outcome]]] = []
        self._read_to = self.position  # the spool position after the last record taken in

    def wake(self) -> None:
        """Something new was committed to the spool (called from another thread)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        log.info("worker starting at spool position %s", spool_id(*unpack(self.position)))
        run_loop("worker", self.step, stop, idle=0.2, wake=self._wake)
        while self.step():  # drain what was accepted before the stop
            pass

    def step(self) -> bool:
        """Take in new records, and journal those whose pipeline is done; False when there
        was nothing to do (or the journal is busy).

        Records go through the pipeline side by side. Mails done within :data:`SLOW_MAIL`
        of each other are journaled together in arrival order; a slower one (a trust check
        waiting on DNS) stays in flight while those after it are journaled, and the spool
        position moves only past records that are all journaled, so a crash re-reads the
        slow one (the dedup keys absorb the rest).
        """
        room = self.batch_size - len(self._in_flight)
        for record in self.spool.read_after(self._read_to, room) if room > 0 else []:
            self._in_flight.append((record, self._pool.submit(self._outcome, record)))
            self._read_to = record.next_position
        if not self._in_flight:
            return False
        futures.wait([f for _, f in self._in_flight], timeout=SLOW_MAIL)
        finished = [future.done() for _, future in self._in_flight]  # one look for all below
        done = [(r, f.result()) for (r, f), ok in zip(self._in_flight, finished, strict=True) if ok]
        if not done:
            return True
        # the spool position after each done record, while all before it are done too
        prefix = list(itertools.takewhile(bool, finished))
        positions = [r.next_position for (r, _), _ in zip(self._in_flight, prefix, strict=False)]
        positions += [None] * (len(done) - len(positions))
        position = positions[len(prefix) - 1] if prefix else None
        try:
            self._journal(done, position=position)
        except TRANSIENT as e:
            log.warning("journal or spool unavailable, will retry %d mail(s): %s", len(done), e)
            self._start_again()
            return False
        except Exception as e:
            log.warning("a batch of %d failed (%s); journaling mail by mail", len(done), e)
            if not self._one_by_one(done, positions):
                self._start_again()
                return False
        self._in_flight = [
            item for item, ok in zip(self._in_flight, finished, strict=True) if not ok
        ]
        if self.on_appended:
            self.on_appended()
        return True

    def _start_again(self) -> None:
        """Forget the records in flight: they are read and processed again from the spool
        position (what the pipeline made of them is pure, and cheap to make again)."""
        self._in_flight = []
        self._read_to = self.position

    def _outcome(self, record: Record) -> Outcome:
        if record.damage is None:
            outcome = self.pipeline.process(record.raw)
            return apply_policy(outcome, self.policy_for) if self.policy_for else outcome
        log.error(
            "spool: DAMAGED record in segment %d: %s; kept in %s, processing goes on",
            record.segment,
            record.damage,
            self.spool.damaged_dir,
        )
        return Outcome(None, failures=[f"damaged spool bytes: {record.damage}"])

    def _one_by_one(
        self, outcomes: list[tuple[Record, Outcome]], positions: list[int | None]
    ) -> bool:
        """Journal each mail alone, with the spool position after it where it has one; False
        when the journal became unavailable meanwhile."""
        for (record, outcome), position in zip(outcomes, positions, strict=True):
            try:
                self._journal_alone(record, outcome, position=position)
            except TRANSIENT as e:
                log.warning("journal or spool unavailable, will retry: %s", e)
                return False
        return True

    def _journal_alone(
        self,
        record: Record,
        outcome: Outcome,
        *,
        source: str = "smtp",
        name: str | None = None,
        overrule: bool = False,
        position: int | None = None,
    ) -> Processed:
        """Journal one mail (and the spool *position*, when given, in the same transaction);
        if the journal refuses its events, the mail goes to ``failed/`` with that reason
        instead (a journal that is unavailable raises, for a retry)."""
        try:
            (processed,) = self._journal(
                [(record, outcome)], source=source, name=name, overrule=overrule, position=position
            )
        except TRANSIENT:
            raise
        except Exception as e:
            (processed,) = self._journal(
                [(record, refused(outcome, e))], source=source, name=name, position=position
            )
        return processed

    def retry(self, paths: Sequence[Path]) -> list[Processed]:
        """Offer mails kept in ``failed/`` again (after a parser fix), one by one.

        What now gives events is journaled and leaves ``failed/``; what is now ignored moves
        to ``ignored/``; what still fails stays, with the new reason. The spool position
        does not move.
        """
        done = []
        for path in paths:
            raw = path.read_bytes()
            item = Record(0, 0, 0, {"retried": str(path)}, raw)
            outcome = self.pipeline.process(raw)
            if self.policy_for:
                outcome = apply_policy(outcome, self.policy_for)
            processed = self._journal_alone(item, outcome, source="retry", name=path.stem)
            if processed.outcome.status != FAILED:
                kept.remove(path)
            done.append(processed)
        return done

    def release(self, path: Path) -> Processed:
        """Publish a mail the trust policy held, through the pipeline as if it had just
        arrived but without the policy (dedup still applies; an event that conflicts with a
        stored one supersedes it: the operator chose); it then leaves ``held/``."""
        raw = path.read_bytes()
        item = Record(0, 0, 0, {"released": str(path)}, raw)
        processed = self._journal_alone(
            item, self.pipeline.process(raw), source="held", name=path.stem, overrule=True
        )
        if processed.outcome.status != FAILED:
            kept.remove(path)
        return processed

    def _journal(
        self,
        outcomes: list[tuple[Record, Outcome]],
        *,
        source: str = "smtp",
        name: str | None = None,
        overrule: bool = False,
        position: int | None = None,
    ) -> list[Processed]:
        """Keep unusable mail aside, then journal the events (and the spool *position*, when
        given) in one transaction. *name* replaces the spool id
        as the kept file's name (a retried mail keeps its own). A mail with an event that
        conflicts with a stored one is kept in ``held/`` too, the rest of its events
        journaled."""
        from_spool = source == "smtp"
        for record, outcome in outcomes:
            kept_as = name or record.spool_id
            if record.damage is not None:
                self.spool.keep("damaged", kept_as, record.raw, record.meta, record.damage)
            elif outcome.status == IGNORED and not outcome.parsers:
                # no parser wanted it: not Debian's news, but maybe the operator's
                path = self.spool.keep("inbox", kept_as, record.raw, record.meta, outcome.reason)
                if self.on_inbox:
                    self.on_inbox(path)
            elif outcome.status in (FAILED, IGNORED, HELD, REJECTED):
                self.spool.keep(outcome.status, kept_as, record.raw, record.meta, outcome.reason)
        done: list[Processed] = []
        with self.journal.batch() as batch:
            for record, outcome in outcomes:
                published = outcome.journaled
                result = batch.append(published, source, overrule=overrule)
                if result.conflicts:
                    reason = conflict_reason(result)
                    self.spool.keep(
                        "held", name or record.spool_id, record.raw, record.meta, reason
                    )
                done.append(Processed(record, outcome, result))
            if position is not None:
                batch.set_cursor(self.cursor, position)
            counts = outcome_counters([(p.outcome, p.result) for p in done])
            counts["spool_damaged"] = sum(1 for record, _ in outcomes if record.damage)
            batch.add_counters(counts if from_spool else {_COUNTER[source]: len(done)})
        if position is not None:
            self.position = position
        for item in done:
            where = f"spool={item.record.spool_id}" if from_spool else f"{source}={name}"
            log_outcome(where, item.outcome, item.result)
        return done


_COUNTER = {"retry": "retried", "held": "released"}

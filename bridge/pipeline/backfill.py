"""``bridge replay-mbox``: archived list mail through the same pipeline as ``serve``.

Mails are read as a stream, parsed (on ``--jobs`` processes when asked), and journaled in
mbox order in batches; each batch commits its events together with the file's resume point,
so an interrupted replay restarted on the same file continues after the last batch it
committed. The journal's dedup keys make a second replay (or mail already seen live) add
nothing.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bridge.config import TrustConfig
from bridge.events import Naming, event_line
from bridge.intake.spool import Spool
from bridge.journal import AppendResult, Journal
from bridge.pipeline.mbox import MboxMessage, MboxReader
from bridge.pipeline.process import (
    FAILED,
    HELD,
    REJECTED,
    Outcome,
    Pipeline,
    Tally,
    apply_policy,
    build_pipeline,
)
from bridge.pipeline.worker import TRANSIENT, conflict_reason, log_outcome, refused

BATCH = 256
# Mails parsed at once in each parsing process: while one waits for gpgv (a process of its
# own, on another core), the other is parsed.
THREADS = 2


@dataclass
class Summary(Tally):
    """What a replay did, over all its files."""

    bytes_read: int = 0
    seconds: float = 0.0
    resumed_from: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "mails": self.mails,
            "events": self.events,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "withheld": self.withheld,
            "ignored": self.ignored,
            "failed": self.failed,
            "by_topic": dict(sorted(self.by_topic.items())),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
        }


@dataclass
class Options:
    dry_run: bool = False
    live: bool = True
    jobs: int = 1
    parser_names: Sequence[str] | None = None
    trust: TrustConfig | None = None
    max_message_size: int | None = None
    naming: Naming = field(default_factory=Naming)


class Backfill:
    """Replays mbox files into *journal* (or, dry, into *emit*)."""

    def __init__(
        self,
        options: Options,
        journal: Journal | None,
        spool: Spool | None,
        emit: Callable[[str], None] = print,
    ):
        self.options = options
        self.journal = journal
        self.spool = spool
        self.emit = emit
        self.summary = Summary()
        self.errors: list[str] = []  # one line per file that could not be read to its end
        self.notes: list[str] = []  # what a user should know of a file (it started over)
        self._pool: Any = None
        self._pipeline: Pipeline | None = None
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> Backfill:
        if self.options.jobs > 1:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(
                self.options.jobs, _init_worker, (self.options.parser_names, self.options.trust)
            )
        else:
            self._pipeline = build_pipeline(self.options.parser_names, self.options.trust)
            self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="replay-parse")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
        if self._threads is not None:
            self._threads.shutdown(cancel_futures=True)

    def replay(self, path: Path, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Replay one file; *on_progress* gets (mails so far, bytes of the file consumed).

        An interrupted replay resumes only the file it started: its resume point is kept
        under the file's path and a digest of its first bytes (which stay as they were while
        an mbox grows). A file replaced since starts over, and says so."""
        # a pipe or a device is read as a stream: it has no first bytes to come back to
        key = self._resume_key(path) if path.is_file() else None
        start = 0 if key is None else self._resume_point(key)
        if start:
            self.summary.resumed_from[str(path)] = start
        started = time.perf_counter()
        mails_before = self.summary.mails
        try:
            with open(path, "rb") as raw:
                reader = MboxReader(_decompressing(path, raw), start, self.options.max_message_size)
                batches = _batches(_skip_done(iter(reader), start))
                for batch, outcomes in self._parsed(batches):
                    self._record(path, key, batch, outcomes)
                    if on_progress:
                        on_progress(self.summary.mails, raw.tell())
        finally:  # an interrupted replay says how long it ran too
            self.summary.seconds += time.perf_counter() - started
        if reader.error is None and self.summary.mails == mails_before and not start:
            self.errors.append(
                f"{path}: holds no mail (an mbox starts each mail with a 'From ' line)"
            )
        elif reader.error is not None:
            self.errors.append(
                f"{path}: unreadable after {reader.failed_at} bytes of mail ({reader.error});"
                " every whole mail before that was replayed"
            )
        elif not self.options.dry_run and self.journal is not None and key is not None:
            self._forget_resume_point(key)

    def _parsed(
        self, batches: Iterator[list[MboxMessage]]
    ) -> Iterator[tuple[list[MboxMessage], list[Outcome]]]:
        if self._pool is None:
            assert self._pipeline is not None and self._threads is not None
            for batch in batches:
                yield batch, _outcomes(self._pipeline, batch, self._threads)
            return
        # A bounded window of batches in flight keeps memory flat however large the file
        # (Pool.imap would read the whole file ahead); answers are taken in order.
        window: deque[tuple[list[MboxMessage], Any]] = deque()
        for batch in batches:
            window.append((batch, self._pool.apply_async(_parse_batch, (batch,))))
            if len(window) >= 2 * self.options.jobs:
                done, answer = window.popleft()
                yield done, answer.get()
        while window:
            done, answer = window.popleft()
            yield done, answer.get()

    def _record(
        self, path: Path, key: str | None, batch: list[MboxMessage], outcomes: list[Outcome]
    ) -> None:
        self.summary.bytes_read += sum(len(m.raw) for m in batch)
        if self.options.dry_run:
            for message, outcome in zip(batch, outcomes, strict=True):
                for event in outcome.events:
                    line = event_line(
                        self.options.naming, event, file=str(path), offset=message.offset
                    )
                    self.emit(line)
                self.summary.add(outcome, len(outcome.events), 0)
            return
        trust = self.options.trust
        if self.options.live and trust is not None and trust.verify:
            # events that go onto the bus pass the same policy as mail over SMTP
            outcomes = [apply_policy(o, trust.policy_for) for o in outcomes]
        try:
            results = self._journal(path, key, batch, outcomes)
        except TRANSIENT:
            raise
        except Exception:  # one mail's events: journal mail by mail, failing only that mail
            outcomes, results = self._one_by_one(path, key, batch, outcomes)
        for message, outcome, result in zip(batch, outcomes, results, strict=True):
            self.summary.add(
                outcome,
                len(result.seq_ids),
                result.duplicates,
                len(result.conflicts),
                result.topics,
            )
            log_outcome(f"mbox={path.name}@{message.offset}", outcome, result)

    def _one_by_one(
        self, path: Path, key: str | None, batch: list[MboxMessage], outcomes: list[Outcome]
    ) -> tuple[list[Outcome], list[AppendResult]]:
        settled: list[Outcome] = []
        results: list[AppendResult] = []
        for message, outcome in zip(batch, outcomes, strict=True):
            try:
                results += self._journal(path, key, [message], [outcome])
            except TRANSIENT:
                raise
            except Exception as e:
                outcome = refused(outcome, e)
                results += self._journal(path, key, [message], [outcome])
            settled.append(outcome)
        return settled, results

    def _journal(
        self, path: Path, key: str | None, batch: list[MboxMessage], outcomes: list[Outcome]
    ) -> list[AppendResult]:
        """Keep failed mail aside (and, for a live replay, mail the trust policy withholds),
        then journal the events with the resume point after them."""
        assert self.journal is not None and self.spool is not None
        for message, outcome in zip(batch, outcomes, strict=True):
            if outcome.status in (FAILED, HELD, REJECTED):
                self.spool.keep(
                    outcome.status.value,
                    f"mbox-{path.name}-{message.offset}",
                    message.raw,
                    {"mbox": str(path), "offset": message.offset},
                    outcome.reason,
                )
        source = f"mbox:{path.name}"
        with self.journal.batch() as journal:
            results = journal.append_groups(
                [[] if o.status in (HELD, REJECTED) else o.events for o in outcomes],
                source,
                live=self.options.live,
                backfill=True,
            )
            for message, result in zip(batch, results, strict=True):
                if result.conflicts:  # kept for the operator, as the worker keeps them
                    self.spool.keep(
                        "held",
                        f"mbox-{path.name}-{message.offset}",
                        message.raw,
                        {"mbox": str(path), "offset": message.offset},
                        conflict_reason(result),
                    )
            if key is not None:
                journal.set_resume_point(key, batch[-1].offset, len(batch))
        return results

    def _resume_point(self, key: str) -> int:
        return 0 if self.journal is None else self.journal.resume_point(key)

    def _resume_key(self, path: Path) -> str:
        """The key of the resume point this replay of *path* continues from, or the key
        to note one under. Resume points of another file once at *path* (replaced since,
        or noted by a bridge that kept no digest) cannot go on in this one: forgotten, and
        said so."""
        if self.options.dry_run or self.journal is None:
            return resume_key(path)
        where = str(path.resolve())
        noted = [where, *self.journal.resume_points(where + "#")]
        ours = next((k for k in noted if k != where and same_file(path, k)), None)
        for other in noted:
            if other != ours and self.journal.resume_point(other):
                self.notes.append(
                    f"{path}: not the file an interrupted replay left off in (its first bytes"
                    " differ, or were not noted); replaying it from the start"
                )
                self.journal.forget_resume_point(other)
        return ours or resume_key(path)

    def _forget_resume_point(self, key: str) -> None:
        assert self.journal is not None
        self.journal.forget_resume_point(key)


IDENTITY_BYTES = 64 * 1024


def resume_key(path: Path) -> str:
    """Where an interrupted replay of *path* is noted: the resolved path, and the length
    and digest of the file's first bytes (a grown mbox keeps them; a replaced one does
    not): ``PATH#LENGTH:SHA256``."""
    with open(path, "rb") as fh:
        head = fh.read(IDENTITY_BYTES)
    return f"{path.resolve()}#{len(head)}:{hashlib.sha256(head).hexdigest()[:32]}"


def same_file(path: Path, key: str) -> bool:
    """Whether *path* begins with the bytes the resume *key* names."""
    length, _, digest = key.rpartition("#")[2].partition(":")
    if not length.isascii() or not length.isdigit():
        return False
    with open(path, "rb") as fh:
        head = fh.read(int(length))
    return len(head) == int(length) and hashlib.sha256(head).hexdigest()[:32] == digest


def _decompressing(path: Path, raw: Any) -> BinaryIO:
    """Wrap the open file by what its first bytes say it is (gzip, xz, bzip2), whatever
    its name; the raw file's position still shows progress."""
    head = raw.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, "rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb")  # type: ignore[return-value]
    return raw


def _skip_done(messages: Iterator[MboxMessage], resume: int) -> Iterator[MboxMessage]:
    """A resume point names the last mail already journaled: start after it."""
    for message in messages:
        if resume and message.offset == resume:
            continue
        yield message


def _batches(messages: Iterator[MboxMessage]) -> Iterator[list[MboxMessage]]:
    batch: list[MboxMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


_worker_pipeline: Pipeline | None = None
_worker_threads: ThreadPoolExecutor | None = None


def _init_worker(parser_names: Sequence[str] | None, trust: TrustConfig | None) -> None:
    global _worker_pipeline, _worker_threads  # one pipeline per pool process, built once
    _worker_pipeline = build_pipeline(parser_names, trust)
    _worker_threads = ThreadPoolExecutor(THREADS, thread_name_prefix="replay-parse")


def _parse_batch(batch: list[MboxMessage]) -> list[Outcome]:
    assert _worker_pipeline is not None and _worker_threads is not None
    return _outcomes(_worker_pipeline, batch, _worker_threads)


def _outcomes(
    pipeline: Pipeline, batch: list[MboxMessage], threads: ThreadPoolExecutor
) -> list[Outcome]:
    """The outcome of each mail of *batch*, in order."""
    return list(threads.map(lambda message: _outcome(pipeline, message), batch))


def _outcome(pipeline: Pipeline, message: MboxMessage) -> Outcome:
    if message.oversized:
        return Outcome(
            None,
            failures=[
                f"the mail at byte {message.offset} of the (decompressed) archive is"
                f" {message.size} bytes, over [mbox] max_message_size; its first"
                f" {len(message.raw)} bytes are kept here, the whole mail stays in the archive"
            ],
        )
    return pipeline.process(message.raw)

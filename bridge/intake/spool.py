"""The spool: accepted mail, durable before the SMTP ``250``.

An append-only log of segment files (``spool/segments/00000001.log``, ...). Each record is a
small header (magic, lengths, CRC-32), the SMTP envelope as JSON and the raw mail bytes.
Concurrent SMTP sessions share one ``fdatasync`` per batch (group commit): on this machine
creating and syncing one file per mail, not the disk, is what limits intake.

A record counts as accepted only once its batch is synced; on start-up a torn record at the
tail (a crash mid-write, before any ``250``) is cut off, while damage inside a segment is
left for the reader, which keeps the damaged bytes aside in ``damaged/`` and salvages every
whole record after them (see :mod:`bridge.intake.segment`). Mails the pipeline cannot use are
copied to ``failed/`` or ``ignored/`` with a ``.reason`` file beside them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import SpoolError
from bridge.files import private_dir, write_all
from bridge.intake import kept
from bridge.intake.segment import Record, encode, pack, records, spool_id, unpack, valid_length

if TYPE_CHECKING:
    from bridge.config import Config

__all__ = ["Record", "Spool", "encode", "pack", "spool_id", "unpack"]

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
SEGMENT_BYTES = 64 * 1024 * 1024


class Spool:
    """The segment log under ``<state>/spool``. One writer thread; any number of readers."""

    def __init__(
        self, root: Path, *, segment_bytes: int = SEGMENT_BYTES, commit_window: float = 0.0
    ):
        self.root = Path(root)
        self.segments_dir = self.root / "segments"
        self.failed_dir = self.root / "failed"
        self.ignored_dir = self.root / "ignored"
        self.damaged_dir = self.root / "damaged"
        # Mail the trust policy withholds: held until an operator decides, or rejected.
        self.held_dir = self.root / "held"
        self.rejected_dir = self.root / "rejected"
        # Mail no parser wanted (list confirmations, welcome and bounce notices): an
        # operator's inbox, kept until someone deals with it.
        self.inbox_dir = self.root / "inbox"
        for folder in (
            self.segments_dir,
            self.failed_dir,
            self.ignored_dir,
            self.damaged_dir,
            self.held_dir,
            self.rejected_dir,
            self.inbox_dir,
        ):
            private_dir(folder)
        self.segment_bytes = segment_bytes
        self.commit_window = commit_window
        self._pending: list[tuple[bytes, Future[str]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.listeners: list[Callable[[], None]] = []
        # Only the writer opens (and may repair) the tail: readers such as `bridge status`
        # must never touch a segment a running server is appending to.
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self.committed_position = 0
        self._thread: threading.Thread | None = None

    # -- writing (the SMTP side) ------------------------------------------------------

    def start(self) -> None:
        """Become the writer: repair the tail, then start the writer thread."""
        self._segment, self._fd, self._size = self._open_tail()
        self.committed_position = pack(self._segment, self._size)
        self._thread = threading.Thread(target=self._writer, name="spool-writer", daemon=True)
        self._thread.start()

    def submit(self, meta: dict[str, Any], raw: bytes) -> Future[str]:
        """Queue a mail; the future resolves to its spool id once it is on disk."""
        future: Future[str] = Future()
        record = encode(meta, raw)
        with self._cond:
            if self._closed:
                future.set_exception(SpoolError("spool is closed"))
                return future
            self._pending.append((record, future))
            self._cond.notify()
        return future

    def write_now(self, meta: dict[str, Any], raw: bytes) -> str:
        """Store one mail synchronously (tests, tools): submit and wait."""
        if self._thread is None:
            self.start()
        return self.submit(meta, raw).result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
            if self.commit_window:
                time.sleep(self.commit_window)  # let concurrent sessions join this batch
            with self._cond:
                batch, self._pending = self._pending, []
            self._commit(batch)

    def _commit(self, batch: list[tuple[bytes, Future[str]]]) -> None:
        start_size = self._size
        ids = []
        try:
            if self._size >= self.segment_bytes:
                self._roll()
                start_size = self._size
            for record, _ in batch:
                ids.append(spool_id(self._segment, self._size))
                write_all(self._fd, record)
                self._size += len(record)
            os.fdatasync(self._fd)
        except OSError as e:
            self._size = start_size
            _truncate_quietly(self._fd, start_size)
            log.error("spool write failed: %s", e)
            for _, future in batch:
                future.set_exception(SpoolError(f"spool write failed: {e.strerror or e}"))
            return
        self.committed_position = pack(self._segment, self._size)
        for (_, future), sid in zip(batch, ids, strict=True):
            future.set_result(sid)
        for listener in self.listeners:
            listener()

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._segment += 1
        self._fd = self._open_segment(self._segment)
        self._size = 0
        _fsync_dir(self.segments_dir)

    def _open_segment(self, number: int) -> int:
        return os.open(self.segment_path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _open_tail(self) -> tuple[int, int, int]:
        """Open the newest segment, cutting off a torn record left by a crash."""
        numbers = self.segment_numbers()
        number = numbers[-1] if numbers else 1
        path = self.segment_path(number)
        valid = valid_length(path) if path.exists() else 0
        fd = self._open_segment(number)
        if path.stat().st_size != valid:
            log.warning("spool: cutting a torn record off %s at byte %d", path.name, valid)
            os.ftruncate(fd, valid)
            os.fsync(fd)
        _fsync_dir(self.segments_dir)
        return number, fd, valid

    # -- reading (the worker side) -----------------------------------------------------

    def segment_path(self, number: int) -> Path:
        return self.segments_dir / f"{number:08d}.log"

    def segment_numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in self.segments_dir.glob("*.log") if p.stem.isdigit())

    def read_after(self, position: int, limit: int = 64, upto: int | None = None) -> list[Record]:
        """Up to *limit* whole records from *position* (before *upto*, when given).

        In the writer's process only synced records are read; another process reads every
        whole record (each carries its CRC), which may include a batch whose sync is still
        under way: at worst a mail is processed whose sender then retries, and the dedup key
        absorbs the second copy.
        """
        if upto is None and self._fd is not None:
            upto = self.committed_position
        segment, offset = unpack(position)
        found: list[Record] = []
        numbers = self.segment_numbers()
        for number in [n for n in numbers if n >= segment]:
            start = offset if number == segment else 0
            newest = number == numbers[-1]
            for record in records(self.segment_path(number), number, start, newest=newest):
                if (upto is not None and record.position >= upto) or len(found) >= limit:
                    return found
                found.append(record)
        return found

    def checked_position(self, position: int) -> int:
        """*position* (a reader's saved cursor) if the spool still holds it, else a safe one.

        A cursor past the spool's end means the spool was wiped or replaced under a kept
        journal: reading on from it would skip new mail, so reading restarts at the oldest
        segment that could hold unread mail (the dedup keys absorb anything seen before).
        """
        segment, offset = unpack(position)
        numbers = self.segment_numbers()
        if not position or not numbers:
            return position or self.start_position()
        if segment in numbers:
            if offset <= self.segment_path(segment).stat().st_size:
                return position
            safe = pack(segment, 0)
        else:  # retention never removes the cursor's own segment
            later = [n for n in numbers if n > segment]
            safe = pack(later[0] if later else numbers[0], 0)
        log.error(
            "spool: the saved position %s is not in the spool (segments %s..%s); it was wiped"
            " or replaced, so reading restarts at %s",
            spool_id(segment, offset),
            numbers[0],
            numbers[-1],
            spool_id(*unpack(safe)),
        )
        return safe

    def start_position(self) -> int:
        numbers = self.segment_numbers()
        return pack(numbers[0] if numbers else 1, 0)

    def depth(self, position: int) -> int:
        """How many committed records lie after *position* (``bridge status``).

        read_after stops where the spool's committed records end, so this counts exactly those.
        """
        count = 0
        while True:
            batch = self.read_after(position, limit=1000)
            if not batch:
                return count
            count += len(batch)
            position = batch[-1].next_position

    # -- dead letters and retention ----------------------------------------------------

    def keep(
        self, folder: str, record_id: str, raw: bytes, meta: dict[str, Any], reason: str
    ) -> Path:
        """Copy a mail to ``failed/``, ``ignored/``, ``held/`` or ``rejected/`` (damaged
        bytes: ``damaged/``) with its reason beside it."""
        target = {
            "failed": self.failed_dir,
            "damaged": self.damaged_dir,
            "held": self.held_dir,
            "rejected": self.rejected_dir,
            "inbox": self.inbox_dir,
        }.get(folder, self.ignored_dir)
        suffix = ".bin" if folder == "damaged" else kept.MAIL
        return kept.store(target, f"{record_id}{suffix}", raw, reason, meta)

    def expire(self, processed: int, retention_seconds: float, now: float | None = None) -> int:
        """Delete whole segments before *processed* that are older than the retention."""
        now = time.time() if now is None else now
        current, _ = unpack(processed)
        removed = 0
        for number in self.segment_numbers():
            path = self.segment_path(number)
            if number >= current or (self._fd is not None and number >= self._segment):
                break
            if now - path.stat().st_mtime > retention_seconds:
                path.unlink()
                removed += 1
        for folder in (self.ignored_dir,):
            for path in folder.iterdir():
                if now - path.stat().st_mtime > retention_seconds:
                    path.unlink(missing_ok=True)
        return removed


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        log.error("spool: could not cut back a failed write: %s", e)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_of(config: Config) -> Spool:
    """The spool in *config*'s state directory."""
    return Spool(config.state_path / SPOOL_DIR, commit_window=config.spool.group_commit_window)

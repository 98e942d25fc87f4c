"""The spool: accepted mail, durable before the SMTP ``250``.

An append-only log of segment files (``spool/segments/00000001.log``, ...). Each record is a
small header (magic, lengths, CRC-32), the SMTP envelope as JSON and the raw mail bytes.
Concurrent SMTP sessions share one ``fdatasync`` per batch (group commit): on this machine
creating and syncing one file per mail, not the disk, is what limits intake.

A record counts as accepted only once its batch is synced; on start-up a torn record at the
tail (a crash mid-write, before any ``250``) is cut off. Mails the pipeline cannot use are
copied to ``failed/`` or ``ignored/`` with a ``.reason`` file beside them.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import SpoolError

log = logging.getLogger(__name__)

MAGIC = b"BRS1"
_HEADER = struct.Struct(">4sIQI")  # magic, meta length, mail length, crc32(meta + mail)
SEGMENT_BYTES = 64 * 1024 * 1024
POSITION_BITS = 40  # a position packs (segment, offset) into one integer for the journal


@dataclass(frozen=True)
class Record:
    """One spooled mail and where it sits in the log."""

    segment: int
    offset: int
    end: int
    meta: dict[str, Any]
    raw: bytes

    @property
    def position(self) -> int:
        return pack(self.segment, self.offset)

    @property
    def next_position(self) -> int:
        return pack(self.segment, self.end)

    @property
    def spool_id(self) -> str:
        return spool_id(self.segment, self.offset)


def pack(segment: int, offset: int) -> int:
    return (segment << POSITION_BITS) | offset


def unpack(position: int) -> tuple[int, int]:
    return position >> POSITION_BITS, position & ((1 << POSITION_BITS) - 1)


def spool_id(segment: int, offset: int) -> str:
    return f"{segment:08d}-{offset:012d}"


def encode(meta: dict[str, Any], raw: bytes) -> bytes:
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    crc = zlib.crc32(raw, zlib.crc32(meta_bytes))
    return _HEADER.pack(MAGIC, len(meta_bytes), len(raw), crc) + meta_bytes + raw


class Spool:
    """The segment log under ``<state>/spool``. One writer thread; any number of readers."""

    def __init__(
        self, root: Path, *, segment_bytes: int = SEGMENT_BYTES, commit_window: float = 0.0
    ):
        self.root = Path(root)
        self.segments_dir = self.root / "segments"
        self.failed_dir = self.root / "failed"
        self.ignored_dir = self.root / "ignored"
        for folder in (self.segments_dir, self.failed_dir, self.ignored_dir):
            folder.mkdir(parents=True, exist_ok=True)
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
                _write_all(self._fd, record)
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
        return os.open(self.segment_path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _open_tail(self) -> tuple[int, int, int]:
        """Open the newest segment, cutting off a torn record left by a crash."""
        numbers = self.segment_numbers()
        number = numbers[-1] if numbers else 1
        path = self.segment_path(number)
        valid = _valid_length(path) if path.exists() else 0
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
        records: list[Record] = []
        for number in [n for n in self.segment_numbers() if n >= segment]:
            start = offset if number == segment else 0
            for record in _iter_records(self.segment_path(number), number, start):
                if (upto is not None and record.position >= upto) or len(records) >= limit:
                    return records
                records.append(record)
        return records

    def start_position(self) -> int:
        numbers = self.segment_numbers()
        return pack(numbers[0] if numbers else 1, 0)

    def depth(self, position: int) -> int:
        """How many committed records lie after *position* (``bridge status``)."""
        count = 0
        end = self.end_position()
        while True:
            batch = self.read_after(position, limit=1000, upto=end)
            if not batch:
                return count
            count += len(batch)
            position = batch[-1].next_position

    def end_position(self) -> int:
        numbers = self.segment_numbers()
        if not numbers:
            return pack(1, 0)
        return pack(numbers[-1], _valid_length(self.segment_path(numbers[-1])))

    # -- dead letters and retention ----------------------------------------------------

    def keep(
        self, folder: str, record_id: str, raw: bytes, meta: dict[str, Any], reason: str
    ) -> Path:
        """Copy a mail to ``failed/`` or ``ignored/`` with its reason beside it."""
        target = self.failed_dir if folder == "failed" else self.ignored_dir
        path = target / f"{record_id}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        reason_text = f"{reason}\n\nenvelope: {json.dumps(meta, sort_keys=True)}\n"
        path.with_suffix(".reason").write_text(reason_text, encoding="utf-8")
        return path

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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


def _iter_records(path: Path, segment: int, start: int) -> Iterator[Record]:
    try:
        yield from _records_in(path, segment, start)
    except FileNotFoundError:  # expired by retention while we looked
        return


def _records_in(path: Path, segment: int, start: int) -> Iterator[Record]:
    with open(path, "rb") as fh:
        fh.seek(start)
        offset = start
        while True:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            magic, meta_len, mail_len, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                return
            body = fh.read(meta_len + mail_len)
            if len(body) < meta_len + mail_len or zlib.crc32(body) != crc:
                return
            end = offset + _HEADER.size + meta_len + mail_len
            meta = json.loads(body[:meta_len])
            yield Record(segment, offset, end, meta, body[meta_len:])
            offset = end


def _valid_length(path: Path) -> int:
    end = 0
    for record in _iter_records(path, 0, 0):
        end = record.end
    return end

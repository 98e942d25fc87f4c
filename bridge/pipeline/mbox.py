"""Reading mbox archives as a stream: plain, ``.gz``, ``.xz`` or ``.bz2``, in constant memory.

Messages are split at ``From `` lines that look like mbox separators (a sender, then a date
with a time), whether or not a blank line precedes them; ``>From`` quoting is undone one
level (mboxrd); CRLF files are handled. Each message comes with the byte offset of its
separator in the (decompressed) stream, which is what an interrupted replay resumes from.
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 20
HEAD_KEPT = 64 * 1024  # of a mail over the size cap, this much is kept to show what it was
_TAIL = 4096  # enough to hold a separator line cut by a chunk boundary
_SEPARATOR = re.compile(rb"From \S+ +[^\r\n]*\d\d:\d\d[^\r\n]*\r?\n")
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_READ_ERRORS = (EOFError, OSError, ValueError, lzma.LZMAError, zlib.error)


@dataclass(frozen=True)
class MboxMessage:
    """One mail of an archive. Over the size cap, *raw* holds only its first bytes."""

    offset: int
    raw: bytes
    size: int = 0
    oversized: bool = False


class MboxReader:
    """Messages from *stream*, beginning with the one whose separator is at *start*.

    A mail larger than *max_size* is not held in memory: it comes back ``oversized`` with
    its first bytes and its size. A stream that fails (a truncated or corrupt compressed
    file) ends the iteration after the last whole mail; :attr:`error` then says why and
    :attr:`failed_at` where, in bytes of decompressed data.
    """

    def __init__(self, stream: BinaryIO, start: int = 0, max_size: int | None = None):
        self.stream = stream
        self.start = start
        self.max_size = max_size
        self.error: str | None = None
        self.failed_at = 0

    def __iter__(self) -> Iterator[MboxMessage]:
        _skip(self.stream, self.start)
        buffer = b""
        base = self.start  # stream offset of buffer[0]
        line_start = True  # whether buffer[0] begins a line
        current: int | None = None  # stream offset of the current message's separator
        head = b""  # set once the current message is over the cap
        eof = False
        while not eof:
            chunk = self._read(base + len(buffer))
            eof = not chunk
            buffer += chunk
            first = 0 if current is None else max(current + 1 - base, 0)
            for sep in _separators(buffer, first, final=eof, line_start=line_start):
                if current is not None:
                    data = buffer[max(current - base, 0) : sep]
                    yield self._message(current, data, base + sep, head)
                    head = b""
                current = base + sep
            if current is not None and not head and self._over(base + len(buffer) - current):
                head = buffer[current - base : current - base + HEAD_KEPT]
            keep = self._keep_from(buffer, base, current, head)
            line_start = buffer[keep - 1 : keep] == b"\n" if keep else line_start
            base += keep
            buffer = buffer[keep:]
        if current is None or self.error is not None:
            return  # after a read error the last mail is cut short: it is not a mail
        rest = buffer[max(current - base, 0) :]
        if head or rest.strip():
            yield self._message(current, rest, base + len(buffer), head)

    def _read(self, offset: int) -> bytes:
        """About a chunk of the stream; on a read error, what was decoded before it."""
        if self.error is not None:
            return b""
        # read1 hands back each decompressed piece as it comes, so an error loses nothing
        # that was decoded before it (read() would drop its whole chunk).
        read = getattr(self.stream, "read1", self.stream.read)
        pieces: list[bytes] = []
        got = 0
        try:
            while got < CHUNK:
                piece = read(CHUNK - got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
        except _READ_ERRORS as e:
            self.error = f"{type(e).__name__}: {e}"
            self.failed_at = offset + got
        return b"".join(pieces)

    def _over(self, size: int) -> bool:
        return self.max_size is not None and size > self.max_size

    def _message(self, offset: int, data: bytes, end: int, head: bytes) -> MboxMessage:
        size = end - offset
        if head or self._over(size):
            return MboxMessage(offset, head or data[:HEAD_KEPT], size, oversized=True)
        return MboxMessage(offset, _unescape(data), size)

    @staticmethod
    def _keep_from(buffer: bytes, base: int, current: int | None, head: bytes) -> int:
        """How much of *buffer* can go: what no message still being read needs."""
        if current is None or head:
            return max(0, len(buffer) - _TAIL)  # only a separator still to come matters
        return max(current - base, 0)


def _separators(buffer: bytes, start: int, final: bool, line_start: bool = True) -> Iterator[int]:
    """Offsets in *buffer* of separator lines whose whole line has been read."""
    if start == 0 and line_start and buffer.startswith(b"From ") and _SEPARATOR.match(buffer):
        yield 0
    position = max(start, 1)
    while True:
        found = buffer.find(b"\nFrom ", position - 1)
        if found < 0:
            return
        line_start_at = found + 1
        line_end = buffer.find(b"\n", line_start_at)
        if line_end < 0 and not final:
            return  # the separator line is not complete yet: decide with the next chunk
        if _SEPARATOR.match(buffer, line_start_at):
            yield line_start_at
        position = line_start_at + 1


def _skip(stream: BinaryIO, count: int) -> None:
    if count <= 0:
        return
    try:
        stream.seek(count)
        return
    except (OSError, ValueError):
        pass  # not seekable: read and drop
    while count > 0:
        chunk = stream.read(min(CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)


def _unescape(raw: bytes) -> bytes:
    body = raw.rstrip(b"\r\n") + (b"\r\n" if raw.endswith(b"\r\n") else b"\n")
    return _QUOTED_FROM.sub(rb"\1", body) if b">From " in body else body

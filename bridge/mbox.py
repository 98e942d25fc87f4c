"""Reading mbox archives as a stream: plain, ``.gz``, ``.xz`` or ``.bz2``, in constant memory.

Messages are split at ``From `` lines that look like mbox separators (a sender, then a date
with a time), whether or not a blank line precedes them; ``>From`` quoting is undone one
level (mboxrd); CRLF files are handled. Each message comes with the byte offset of its
separator in the (decompressed) stream, which is what an interrupted replay resumes from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 20
_SEPARATOR = re.compile(rb"From \S+ +[^\r\n]*\d\d:\d\d[^\r\n]*\r?\n")
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


@dataclass(frozen=True)
class MboxMessage:
    offset: int
    raw: bytes


def iter_messages(stream: BinaryIO, start: int = 0) -> Iterator[MboxMessage]:
    """Messages from *stream*, beginning with the one whose separator is at *start*."""
    _skip(stream, start)
    buffer = b""
    base = start  # stream offset of buffer[0]
    current: int | None = None  # buffer index where the current message's separator starts
    eof = False
    while not eof:
        chunk = stream.read(CHUNK)
        eof = not chunk
        buffer += chunk
        search_from = 0 if current is None else current + 1
        for sep in _separators(buffer, search_from, final=eof):
            if current is not None:
                yield MboxMessage(base + current, _unescape(buffer[current:sep]))
            current = sep
        if current is None:
            # no separator yet: keep only a tail that could hold the start of one
            keep = max(0, len(buffer) - 4096)
            base += keep
            buffer = buffer[keep:]
        elif current > 0:
            base += current
            buffer = buffer[current:]
            current = 0
    if current is not None and buffer[current:].strip():
        yield MboxMessage(base + current, _unescape(buffer[current:]))


def _separators(buffer: bytes, start: int, final: bool) -> Iterator[int]:
    """Offsets in *buffer* of separator lines whose whole line has been read."""
    if start == 0 and buffer.startswith(b"From ") and _SEPARATOR.match(buffer):
        yield 0
    position = max(start, 1)
    while True:
        found = buffer.find(b"\nFrom ", position - 1)
        if found < 0:
            return
        line_start = found + 1
        line_end = buffer.find(b"\n", line_start)
        if line_end < 0 and not final:
            return  # the separator line is not complete yet: decide with the next chunk
        if _SEPARATOR.match(buffer, line_start):
            yield line_start
        position = line_start + 1


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

"""The spool's on-disk record format, and reading it back even when it is damaged.

A segment file is a run of records: a header (magic, meta length, mail length, CRC-32 of
meta and mail), the SMTP envelope as JSON, the raw mail. Reading tells three things apart:

- a whole record, checked by its CRC;
- a *torn tail*: bytes after the last whole record of the newest segment, with no whole
  record after them. A crash mid-write leaves this before any ``250`` went out (or a writer
  in another process is still appending): it is not mail anyone was promised;
- *damage*: bytes that are no record but are followed by whole records, or any bad bytes in
  an older segment (segments roll only after a sync, so they cannot be torn). Those bytes may
  be acknowledged mail: they come back as a :class:`Record` whose ``damage`` says why, so the
  reader can keep them aside and go on with the valid records after them.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"BRS1"
HEADER = struct.Struct(">4sIQI")  # magic, meta length, mail length, crc32(meta + mail)
MAX_META = 1 << 20  # an envelope is a few hundred bytes; more is a damaged header
POSITION_BITS = 40  # a position packs (segment, offset) into one integer for the journal


@dataclass(frozen=True)
class Record:
    """One spooled mail (or one damaged span, when *damage* is set) and where it sits."""

    segment: int
    offset: int
    end: int
    meta: dict[str, Any]
    raw: bytes
    damage: str | None = None

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
    return HEADER.pack(MAGIC, len(meta_bytes), len(raw), crc) + meta_bytes + raw


def records(path: Path, segment: int, start: int, *, newest: bool) -> Iterator[Record]:
    """The records of one segment file from byte *start*, damaged spans included.

    A segment removed meanwhile (retention) simply has no more records.
    """
    try:
        with open(path, "rb") as fh:
            yield from _scan(fh, segment, start, newest)
    except FileNotFoundError:
        return


def valid_length(path: Path, *, newest: bool = True) -> int:
    """Where the last record (whole or damaged) ends: anything after it is a torn tail."""
    end = 0
    for record in records(path, 0, 0, newest=newest):
        end = record.end
    return end


def _scan(fh: BinaryIO, segment: int, offset: int, newest: bool) -> Iterator[Record]:
    size = fh.seek(0, 2)
    while offset < size:
        fh.seek(offset)
        record = _read_record(fh, segment, offset, size)
        if record is not None:
            yield record
            offset = record.end
            continue
        fh.seek(offset)
        rest = fh.read()
        skip = _next_whole_record(rest, segment, offset, size, fh)
        if skip is None and newest:
            return  # a torn tail (or a record still being written): not acknowledged mail
        damaged = rest if skip is None else rest[:skip]
        reason = _damage_reason(damaged, offset, salvaged=skip is not None)
        yield Record(segment, offset, offset + len(damaged), {}, damaged, damage=reason)
        offset += len(damaged)


def _read_record(fh: BinaryIO, segment: int, offset: int, size: int) -> Record | None:
    header = fh.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    magic, meta_len, mail_len, crc = HEADER.unpack(header)
    end = offset + HEADER.size + meta_len + mail_len
    if magic != MAGIC or meta_len > MAX_META or end > size:
        return None
    body = fh.read(meta_len + mail_len)
    if len(body) < meta_len + mail_len or zlib.crc32(body) != crc:
        return None
    try:
        meta = json.loads(body[:meta_len])
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    return Record(segment, offset, end, meta, body[meta_len:])


def _next_whole_record(
    rest: bytes, segment: int, offset: int, size: int, fh: BinaryIO
) -> int | None:
    """Index in *rest* of the next whole record after a bad one, or None."""
    found = rest.find(MAGIC, 1)
    while found >= 0:
        fh.seek(offset + found)
        if _read_record(fh, segment, offset + found, size) is not None:
            return found
        found = rest.find(MAGIC, found + 1)
    return None


def _damage_reason(damaged: bytes, offset: int, *, salvaged: bool) -> str:
    what = "no whole record" if damaged[:4] != MAGIC else "a record whose checksum fails"
    if salvaged:
        after = "whole records follow it, so it held acknowledged mail"
    else:
        after = "it ends an older segment, which cannot be torn by a crash"
    return f"{len(damaged)} damaged bytes at offset {offset} ({what}); {after}"

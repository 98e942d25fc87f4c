"""How an envelope is stored: its JSON compressed with zlib and a preset dictionary of the
envelope's keys and Debian's mail boilerplate, read back whatever an older bridge stored
(dictionary, zlib alone, or JSON as text or bytes); and the envelope a new row gets."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from zlib_ng import zlib_ng

from bridge.errors import JournalError
from bridge.events import Envelope, Event, ForeignEvent, Naming, iso_epoch, new_msg_id
from bridge.journal.dictionary import CURRENT, DICTIONARIES


def new_envelope(
    naming: Naming,
    i: int,
    seq_id: int,
    event: Event,
    supersedes: str | None,
    not_before: int = 0,
    *,
    backfill: bool = False,
) -> tuple[Envelope, int, int]:
    """The envelope an event is journaled in (its ``msg_id`` assigned here, once), when it
    was journaled, and its time: the envelope's ``timestamp``, which time filters read.

    That time is one thing for every reader: an event that arrived (SMTP, the spool, a push)
    is dated by when the bridge journaled it (a mail's Date can be days old or forged, and
    a subscriber asking for the last hour must get what arrived in it); an event of a
    *backfill* by when the fact happened, its ``occurred_at`` (the mail's date), as the
    archive dates it. Journal time is never before *not_before*, the previous row's: it does
    not go back as ``seq_id`` grows (even when the clock does). A message of another bus
    keeps its own topic, ``msg_id`` and time."""
    now = datetime.now(UTC)
    journaled = max(int(now.timestamp()), not_before)
    if isinstance(event, ForeignEvent):
        happened = event.timestamp or journaled
        envelope = Envelope(
            topic=event.topic,
            msg=event.body,
            timestamp=happened,
            msg_id=event.msg_id,
            i=i,
            username=event.username,
            seq_id=seq_id,
            index=event.index,
            origin=event.origin or None,
        )
        return envelope, journaled, happened
    happened = event_epoch(event.occurred_at, journaled) if backfill else journaled
    envelope = Envelope(
        topic=naming.topic(event.topic),
        msg=event.body,
        timestamp=happened,
        msg_id=new_msg_id(now),
        i=i,
        username=naming.username,
        seq_id=seq_id,
        index=event.index,
        supersedes=supersedes,
    )
    return envelope, journaled, happened


# The FDICT flag of a zlib header's second byte: a preset dictionary's id follows.
PRESET_DICTIONARY = 0x20


def pack(envelope_json: str) -> bytes:
    """An envelope as stored: its JSON compressed with the current preset dictionary (see
    :mod:`bridge.journal.dictionary`), under a third of its size; the bytes published are
    those :func:`unpack` gives back."""
    # zlib-ng: zlib's format, in about two thirds of the time to deflate and to inflate
    compressor = zlib_ng.compressobj(6, zdict=DICTIONARIES[CURRENT])
    return compressor.compress(envelope_json.encode("ascii")) + compressor.flush()


def stored_as_json(stored: bytes | memoryview | str) -> bool:
    """Whether a stored envelope is its JSON itself, as rows written before compression
    hold it (text, or bytes where a column changed type): JSON always starts with ``{``,
    a zlib stream never does (its first byte's low four bits are 8)."""
    return isinstance(stored, str) or bytes(stored[:1]) == b"{"


def unpack(stored: bytes | memoryview | str) -> str:
    """The envelope JSON of a stored one: compressed with the dictionary its zlib header
    names, or without one (rows written before the dictionary), or not at all (see
    :func:`stored_as_json`). A damaged one is a JournalError saying how."""
    if isinstance(stored, str):
        return stored
    return unpack_bytes(stored).decode("utf-8")


def unpack_bytes(stored: bytes | memoryview | str) -> bytes:
    """What :func:`unpack` reads, as bytes: what a text search tests, sparing a decoding of
    every envelope it passes over."""
    if isinstance(stored, str):
        return stored.encode("utf-8")
    stored = bytes(stored)
    if stored_as_json(stored):
        return stored
    if len(stored) > 6 and stored[1] & PRESET_DICTIONARY:
        (named,) = struct.unpack(">I", stored[2:6])
        if named not in DICTIONARIES:
            raise JournalError(f"a stored envelope names an unknown dictionary {named:#010x}")
        inflater = zlib_ng.decompressobj(zdict=DICTIONARIES[named])
    else:
        inflater = zlib_ng.decompressobj()
    try:
        envelope = inflater.decompress(stored)
    except zlib_ng.error as e:
        raise JournalError(f"a stored envelope is damaged: {e}") from None
    if not inflater.eof:
        raise JournalError("a stored envelope is damaged: its compressed stream is cut short")
    return envelope


def event_epoch(occurred_at: str | None, journaled: int) -> int:
    """When the fact happened: the event's own time when known (a backfill's), else now."""
    if occurred_at:
        try:
            return int(iso_epoch(occurred_at))
        except ValueError:
            return journaled
    return journaled

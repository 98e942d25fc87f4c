"""What an event must be before the journal takes it: plain JSON the bus can carry.

Parsers build bodies from hostile mail. Whatever a mail puts in them, an event reaching the
journal holds only JSON values the journal, the wire format and every consumer can hold:
text without lone surrogates (normalised to U+FFFD), integers within 64 bits, finite
numbers, string keys, bounded depth and size. A value that cannot be normalised refuses
the event, with the path of the field and why, so the mail goes to ``failed/`` and the
pipeline goes on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bridge.events import Event, dumps
from bridge.mail import without_surrogates

INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_DEPTH = 32
MAX_BODY_BYTES = 1 << 20
MAX_KEY_CHARS = 4096
_TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class EventRefused(ValueError):
    """An event holds a value the journal cannot take; the message says which and why."""


def normalised(event: Event) -> Event:
    """*event* with its text made safe, or :class:`EventRefused`."""
    if not isinstance(event, Event):
        raise EventRefused(f"a parser returned {type(event).__name__}, not an Event")
    if not isinstance(event.topic, str) or not _TOPIC.fullmatch(event.topic):
        raise EventRefused(f"topic {event.topic!r} is not dot-separated words")
    if not isinstance(event.body, Mapping):
        raise EventRefused(f"body is {type(event.body).__name__}, not a mapping")
    key = event.dedup_key
    if key is not None:
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            raise EventRefused("dedup_key must be a string of at most 4096 characters")
        key = without_surrogates(key)
    body = _value(event.body, "body", 0)
    size = len(dumps(body))
    if size > MAX_BODY_BYTES:
        raise EventRefused(f"body is {size} bytes as JSON, over the limit of {MAX_BODY_BYTES}")
    return replace(event, body=body, dedup_key=key, **_index(event))


def _index(event: Event) -> dict[str, Any]:
    """The index fields, checked: what the journal indexes must be what it can hold."""
    fields: dict[str, Any] = {}
    for name, kind in (("packages", str), ("bugs", int), ("people", str)):
        values = getattr(event, name)
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            raise EventRefused(f"index {name} must be a tuple, not {type(values).__name__}")
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise EventRefused(f"index {name} must hold only {kind.__name__} values")
        fields[name] = tuple(_value(v, f"index.{name}", 0) for v in values)
    when = event.occurred_at
    if when is not None and not isinstance(when, str):
        raise EventRefused(f"index occurred_at must be an ISO 8601 string, not {when!r}")
    fields["occurred_at"] = when
    return fields


# Where a value sits in a body: its container's place and its own key or index, linked
# rather than spelled out, because spelling each value's path cost more than checking it.
# The path is written out only for a refusal.
Place = tuple[Any, str | int] | str


def _where(place: Place) -> str:
    steps: list[str] = []
    while not isinstance(place, str):
        place, step = place
        steps.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return place + "".join(reversed(steps))


def _value(value: Any, place: Place, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise EventRefused(f"{_where(place)}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return without_surrogates(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise EventRefused(f"{_where(place)}: integer {_short(value)} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventRefused(f"{_where(place)}: {value} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_value(v, (place, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return _mapping(value, place, depth)
    raise EventRefused(f"{_where(place)}: {type(value).__name__} is not a JSON value")


def _mapping(value: Mapping[Any, Any], place: Place, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise EventRefused(f"{_where(place)}: key {key!r} is not a string")
        out[without_surrogates(key)] = _value(item, (place, key), depth + 1)
    return out


def _short(number: int) -> str:
    # str() of a huge integer is itself an error (Python limits its digits)
    return str(number) if number.bit_length() <= 100 else f"of {number.bit_length()} bits"

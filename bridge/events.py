"""The event model and the fedmsg wire format.

An :class:`Event` is what a parser produces: an event topic such as ``debbugs.bug.report``,
a JSON-able body, and typed index fields (packages, bugs, people, when). The journal wraps
it in an :class:`Envelope` (``msg_id``, ``seq_id``, timestamp, the index, ...) once, when
it is stored; the same envelope bytes are published and replayed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    """One structured event: *topic* is the event topic part, e.g. ``dak.upload.accepted``.

    *dedup_key* identifies the fact the event reports (a bug-tracker message, an upload);
    two events with the same topic and key are one event. ``None`` lets the pipeline use the
    SHA-256 of the raw mail.

    The index fields say what the event is about, whatever its body calls things: the
    journal, ``bridge query``/``stats`` and the ``tail`` filters read only these.
    *packages* are source package names, *bugs* bug numbers, *people* the names and e-mail
    addresses of those who acted, *occurred_at* when the fact happened (ISO 8601 UTC, e.g.
    the mail's date; ``None``: when it is journaled).

    *signed* is the OpenPGP clearsigned block (armour to armour) the body's facts were read
    from, when they were: the trust check verifies exactly these bytes, never a block it
    finds on its own. It is not stored: ``signed_by`` says what became of it.
    """

    topic: str
    body: Mapping[str, Any]
    dedup_key: str | None = None
    packages: tuple[str, ...] = ()
    bugs: tuple[int, ...] = ()
    people: tuple[str, ...] = ()
    occurred_at: str | None = None
    signed: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def index(self) -> dict[str, list[Any]]:
        """What travels with the envelope for consumers' filters."""
        return {"packages": list(self.packages), "bugs": list(self.bugs)}


@dataclass(frozen=True)
class ForeignEvent(Event):
    """A message of another bus (a fedmsg relay's sender, an upstream bus), journaled as it
    came: *topic* is its own full topic, and it keeps its own *msg_id* (the journal stores
    a msg_id once: two bridges that subscribe to each other never loop) and the time it
    says it was sent. *origin* says how it reached this bridge (``relay`` or ``upstream``,
    the ``sender``, and ``auth``: the verdict on its signature)."""

    msg_id: str = ""
    timestamp: int = 0
    username: str = ""
    origin: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Naming:
    """How event topics become bus topics, and who the service says it is."""

    topic_prefix: str = "org.debian"
    environment: str = "dev"
    username: str = "bridge"

    def topic(self, event_topic: str) -> str:
        return full_topic(self.topic_prefix, self.environment, event_topic)

    def event_topic(self, topic: str) -> str:
        """A user's topic, full or event-relative, as the event topic (no double prefix)."""
        base = f"{self.topic_prefix}.{self.environment}"
        return topic[len(base) + 1 :] if topic.startswith(base + ".") else topic

    def bus_prefix(self, topic_or_prefix: str = "") -> str:
        """Turn a user's ``--topic`` (full or event-relative) into a full topic prefix."""
        base = f"{self.topic_prefix}.{self.environment}"
        if not topic_or_prefix:
            return base
        if topic_or_prefix == base or topic_or_prefix.startswith(base + "."):
            return topic_or_prefix
        return self.topic(topic_or_prefix)


def full_topic(topic_prefix: str, environment: str, event_topic: str) -> str:
    """The one place a bus topic is built: ``<topic_prefix>.<environment>.<event topic>``."""
    parts = [topic_prefix.strip("."), environment.strip("."), event_topic.strip(".")]
    return ".".join(p for p in parts if p)


def debian_login(address: str) -> str | None:
    """The Debian account name of an address: the local part of an ``@debian.org`` one
    (any case), else None. The one place the bridge decides what a Debian login is."""
    local, _, domain = address.strip().lower().rpartition("@")
    return local if domain == "debian.org" and local else None


def dumps(obj: Any) -> str:
    """JSON as fedmsg puts it on the wire: sorted keys, compact separators, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def iso_epoch(value: str) -> float:
    """An ISO 8601 time as epoch seconds, UTC unless it says otherwise (ValueError if it is
    not one)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def new_msg_id(now: datetime | None = None) -> str:
    """A fedmsg message id: ``<year>-<uuid>``, the UUID time-ordered (RFC 9562's version 7:
    milliseconds, then random bits), so ids of successive events sort together and the
    journal's msg_id index grows at its end instead of at random places."""
    now = now or datetime.now(UTC)
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return f"{now.year}-{uuid.UUID(int=value)}"


@dataclass(frozen=True)
class Envelope:
    """A published message: the fedmsg envelope around an event body."""

    topic: str
    msg: Mapping[str, Any]
    timestamp: int
    msg_id: str
    i: int
    username: str
    seq_id: int
    index: Mapping[str, list[Any]] = field(default_factory=dict)
    # The msg_id of the event this one corrects: same fact, better authenticated.
    supersedes: str | None = None
    # How a message of another bus reached this one (relay or upstream, sender, auth).
    origin: Mapping[str, Any] | None = None

    def to_json(self) -> str:
        data = {
            "topic": self.topic,
            "msg": self.msg,
            "timestamp": self.timestamp,
            "msg_id": self.msg_id,
            "i": self.i,
            "username": self.username,
            "seq_id": self.seq_id,
            "index": self.index,
        }
        if self.supersedes:
            data["supersedes"] = self.supersedes
        if self.origin:
            data["origin"] = self.origin
        return dumps(data)

    @property
    def packages(self) -> list[str]:
        return list(self.index.get("packages") or [])

    @property
    def bugs(self) -> list[int]:
        return list(self.index.get("bugs") or [])

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        """An envelope from its JSON already parsed (the dicts are shared, not copied)."""
        return cls(
            topic=data["topic"],
            msg=data["msg"],
            timestamp=int(data["timestamp"]),
            msg_id=data["msg_id"],
            i=int(data.get("i", 0)),
            username=data.get("username", ""),
            seq_id=int(data["seq_id"]),
            index=data.get("index") or {},
            supersedes=data.get("supersedes"),
            origin=data.get("origin"),
        )


def event_line(naming: Naming, event: Event, **where: Any) -> str:
    """One event as ``bridge parse`` and ``replay-mbox --dry-run`` print it: a JSON line
    with the full topic, dedup key, index fields and body, and where the mail came from."""
    line = {
        **where,
        "topic": naming.topic(event.topic),
        "dedup_key": event.dedup_key,
        "index": {
            **event.index,
            "people": list(event.people),
            "occurred_at": event.occurred_at,
        },
        "msg": event.body,
    }
    return json.dumps(line, ensure_ascii=False, sort_keys=True)


def frames(topic: str, envelope_json: str) -> list[bytes]:
    """The two ZeroMQ frames of one message: topic, then the JSON envelope."""
    return [topic.encode("utf-8"), envelope_json.encode("ascii")]


def amqp_timestamp(headers: Mapping[str, Any]) -> int:
    """An AMQP message's time: the envelope's own (``debian_bus_timestamp``) when a bridge
    sent it, else when it was sent (``sent-at``, fedora-messaging's header), else 0."""
    own = headers.get("debian_bus_timestamp")
    if isinstance(own, int):
        return own
    sent = headers.get("sent-at")
    if isinstance(sent, str):
        try:
            return int(datetime.fromisoformat(sent).timestamp())
        except ValueError:
            return 0
    return 0

"""A small client for bus consumers: subscribe, decode envelopes, filter.

from bridge.client import tail
for envelope in tail(["tcp://127.0.0.1:9940"], topic="org.debian.dev.debbugs"):
    print(envelope.seq_id, envelope.topic, envelope.msg["summary"])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import zmq

from bridge.events import Envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filter:
    """Which envelopes a consumer wants, beyond the topic prefix the socket filters on."""

    package: str | None = None
    bug: int | None = None

    def matches(self, envelope: Envelope) -> bool:
        msg = envelope.msg
        if self.package is not None:
            packages = msg.get("packages") or []
            if self.package not in packages:
                return False
        if self.bug is not None:
            bugs = set(msg.get("bugs") or []) | set(msg.get("closes") or [])
            if msg.get("bug") is not None:
                bugs.add(msg.get("bug"))
            if self.bug not in bugs:
                return False
        return True


def subscribe(
    endpoints: Sequence[str],
    topic: str = "",
    *,
    context: zmq.Context | None = None,
    rcvhwm: int = 100_000,
) -> zmq.Socket:
    """A SUB socket connected to every endpoint, filtering on the *topic* prefix."""
    context = context or zmq.Context.instance()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    for endpoint in endpoints:
        sock.connect(endpoint)
    return sock


def decode(frames: list[bytes]) -> Envelope | None:
    """The envelope in a two-frame message, or None when the frames are not one."""
    if len(frames) != 2:
        log.warning("ignoring a message of %d frames", len(frames))
        return None
    try:
        return Envelope.from_json(frames[1])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring an undecodable message on %r: %s", frames[0][:80], e)
        return None


def tail(
    endpoints: Sequence[str],
    topic: str = "",
    *,
    filter: Filter | None = None,
    timeout: float | None = None,
    context: zmq.Context | None = None,
) -> Iterator[Envelope]:
    """Yield live envelopes; stop after *timeout* seconds without one (None: never)."""
    sock = subscribe(endpoints, topic, context=context)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    wanted = filter or Filter()
    try:
        while True:
            ready = dict(poller.poll(None if timeout is None else int(timeout * 1000)))
            if sock not in ready:
                return
            envelope = decode(sock.recv_multipart())
            if envelope is not None and wanted.matches(envelope):
                yield envelope
    finally:
        sock.close()


def envelope_json(envelope: Envelope) -> str:
    return json.dumps(json.loads(envelope.to_json()), ensure_ascii=False, sort_keys=True)

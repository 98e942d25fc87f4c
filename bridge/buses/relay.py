"""fedmsg's relay inbound (``[relay] listen``): services that cannot be connected to
publish *actively*, connecting a PUB socket to this SUB socket (``relay_inbound`` in their
fedmsg config: ``fedmsg-logger``, ``fedmsg.publish(..., active=True)``). Each message is
checked, journaled under its own topic and ``msg_id``, and published by every sink like the
bridge's own events.

A message is refused, counted (``relay.refused.<why>``) and logged with why, never journaled,
when it is larger than ``max_message_bytes``, not fedmsg's two frames of topic and JSON, under
a topic outside ``topic_prefixes``, over its sender's rate, or, with
``validate_signatures``, unsigned, badly signed or sent by a certificate ``routing_policy``
does not allow. A message the journal holds already (the same ``msg_id``) is a duplicate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from bridge.config import RelayConfig
from bridge.events import ForeignEvent
from bridge.journal import Journal
from bridge.trust.x509 import Verdict, verifier_for

log = logging.getLogger(__name__)

DRAIN = 500  # messages journaled in one transaction at most
POLL_MS = 200


class Refused(ValueError):
    """Why a message is not journaled: *kind* names its counter."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


class SenderRates:
    """A token bucket a sender: *rate* messages a second, *burst* at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, sender: str) -> bool:
        now = self.clock()
        tokens, then = self.buckets.get(sender, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self.buckets[sender] = (tokens, now)
            return False
        self.buckets[sender] = (tokens - 1, now)
        return True


class RelayInbound:
    """The SUB socket and what it journals. Call :meth:`run` in a thread."""

    name = "relay"

    def __init__(
        self,
        settings: RelayConfig,
        journal: Journal,
        context: zmq.Context,
        on_appended: Callable[[], None],
    ):
        self.settings = settings
        self.journal = journal
        self.on_appended = on_appended
        self.verifier = verifier_for(settings)
        self.rates = SenderRates(settings.rate_limit, settings.rate_burst)
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.setsockopt(zmq.LINGER, 0)
        # a burst from many publishers waits here, bounded, while the journal catches up
        self.socket.setsockopt(zmq.RCVHWM, 100_000)
        # far larger messages are cut off by ZeroMQ itself (the sender is disconnected);
        # those up to twice the limit are read, counted and logged
        self.socket.setsockopt(zmq.MAXMSGSIZE, 2 * settings.max_message_bytes + 4096)
        self.socket.bind(settings.listen)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("relay: listening for fedmsg publishers on %s", self.endpoint)

    def run(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            batch: list[list[zmq.Frame]] = []
            while len(batch) < DRAIN:
                try:
                    batch.append(self.socket.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    break
            self.take(batch)

    def take(self, batch: list[list[zmq.Frame]]) -> None:
        """Check each message; journal those that pass in one transaction."""
        counts: Counter[str] = Counter()
        accepted: list[ForeignEvent] = []
        for frames in batch:
            try:
                accepted.append(self.check(frames))
            except Refused as e:
                counts[f"relay.refused.{e.kind}"] += 1
                log.warning("relay: refused a message from %s: %s", _peer(frames), e)
        if not accepted and not counts:
            return
        with self.journal.batch() as journal:  # the events and their counts commit together
            result = journal.append(accepted, "relay")
            counts["relay.accepted"] += len(result.seq_ids)
            counts["relay.duplicates"] += result.duplicates
            journal.add_counters({k: v for k, v in counts.items() if v})
        if result.seq_ids:
            self.on_appended()

    def check(self, frames: list[zmq.Frame]) -> ForeignEvent:
        size = sum(len(f.bytes) for f in frames)
        if size > self.settings.max_message_bytes:
            raise Refused("too_large", f"{size} bytes, above max_message_bytes")
        if len(frames) != 2:
            raise Refused("malformed", f"{len(frames)} frames, not fedmsg's topic and JSON")
        try:
            topic = frames[0].bytes.decode("utf-8")
            message = json.loads(frames[1].bytes)
        except (UnicodeDecodeError, ValueError) as e:
            raise Refused("malformed", f"not UTF-8 JSON: {e}") from None
        if not isinstance(message, dict) or message.get("topic") != topic:
            raise Refused("malformed", "the JSON is not a message of the frame's topic")
        for key, kind in (("msg_id", str), ("msg", dict)):
            if not isinstance(message.get(key), kind):
                raise Refused("malformed", f"the message has no {key} of type {kind.__name__}")
        prefixes = self.settings.topic_prefixes
        if prefixes and not any(topic.startswith(p) for p in prefixes):
            raise Refused("topic", f"topic {topic} is outside topic_prefixes")
        verdict = self._verdict(message)
        sender = verdict.signer or _peer(frames)
        if not self.rates.take(sender):
            raise Refused("rate", f"{sender} sends faster than rate_limit")
        if not verdict.passed and self.verifier is not None:
            kind = "unsigned" if verdict.signer is None else "signature"
            if "routing_policy" in verdict.reason:
                kind = "unauthorised"
            raise Refused(kind, f"{topic} {message['msg_id']}: {verdict.reason}")
        timestamp = message.get("timestamp")
        return ForeignEvent(
            topic,
            message["msg"],
            dedup_key=message["msg_id"],
            msg_id=message["msg_id"],
            timestamp=int(timestamp) if isinstance(timestamp, int | float) else 0,
            username=str(message.get("username") or ""),
            origin={"relay": self.settings.name, "sender": sender, "auth": verdict.as_auth()},
        )

    def _verdict(self, message: dict[str, Any]) -> Verdict:
        if self.verifier is None:
            return Verdict(False, None, "signatures are not checked (validate_signatures off)")
        return self.verifier.verify(message)

    def close(self) -> None:
        self.socket.close(linger=0)


def _peer(frames: list[zmq.Frame]) -> str:
    """The sending peer's address, as ZeroMQ tells it (an unsigned message's sender)."""
    try:
        return frames[0].get("Peer-Address") or "unknown"
    except (zmq.ZMQError, AttributeError):
        return "unknown"

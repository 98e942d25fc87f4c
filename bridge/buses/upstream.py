"""Upstreams (``[upstream.NAME]``): other buses whose messages this bridge journals too, so
that its history, replay and web answer for the whole bus.

A fedmsg bus (endpoints, or a domain's SRV records, followed when it moves) is read from
a SUB socket; a message whose ``seq_id`` skips some is preceded by what the upstream's
replay endpoint returns for the skipped ones (asked with fedmsg's ``seq_ids`` query, which
fedmsg's own replay and the bridge's both answer); what it cannot return is counted and
logged. The last ``seq_id`` seen is kept in the journal, so a restarted bridge asks for what
it missed while down. An AMQP queue (fedora-messaging's format) is read and acknowledged once
journaled.

Every message keeps its own topic and ``msg_id`` and says ``origin.upstream``; the journal
stores a ``msg_id`` once, so two bridges subscribed to each other do not loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from bridge.client import Following, subscribe
from bridge.config import UpstreamConfig
from bridge.discovery import Discovery, DiscoveryError
from bridge.events import ForeignEvent, amqp_timestamp
from bridge.journal import Journal
from bridge.trust.x509 import Verdict, verifier_for

log = logging.getLogger(__name__)

POLL_MS = 200
REPLAY_CHUNK = 500  # seq_ids asked of a replay endpoint at once
REPLAY_TIMEOUT_MS = 10_000
RETRY = (1.0, 2.0, 5.0, 10.0, 30.0)


class Upstream:
    """What every upstream does the same way: check, journal, count, remember."""

    def __init__(
        self,
        name: str,
        settings: UpstreamConfig,
        journal: Journal,
        on_appended: Callable[[], None],
    ):
        self.name = name
        self.settings = settings
        self.journal = journal
        self.on_appended = on_appended
        self.key = f"upstream.{name}"
        self.verifier = verifier_for(settings)

    def event_of(self, message: Mapping[str, Any], sender: str) -> ForeignEvent | str:
        """The message as an event to journal, or why it is refused."""
        topic, msg_id, body = message.get("topic"), message.get("msg_id"), message.get("msg")
        if not (isinstance(topic, str) and isinstance(msg_id, str) and isinstance(body, dict)):
            return "not a fedmsg message (topic, msg_id and msg)"
        verdict = (
            self.verifier.verify(message)
            if self.verifier is not None
            else Verdict(False, None, "signatures are not checked (validate_signatures off)")
        )
        if self.verifier is not None and not verdict.passed:
            return f"{topic} {msg_id}: {verdict.reason}"
        index = message.get("index") if isinstance(message.get("index"), dict) else {}
        timestamp = message.get("timestamp")
        return ForeignEvent(
            topic,
            body,
            dedup_key=msg_id,
            packages=tuple(p for p in index.get("packages") or () if isinstance(p, str)),
            bugs=tuple(b for b in index.get("bugs") or () if isinstance(b, int)),
            msg_id=msg_id,
            timestamp=int(timestamp) if isinstance(timestamp, int | float) else 0,
            username=str(message.get("username") or ""),
            origin={
                "upstream": self.name,
                "sender": verdict.signer or sender,
                "auth": verdict.as_auth(),
            },
        )

    def wanted(self, topic: Any) -> bool:
        prefixes = self.settings.topics
        return not prefixes or (isinstance(topic, str) and topic.startswith(tuple(prefixes)))

    def journal_messages(
        self, messages: list[tuple[Mapping[str, Any], str]], counts: Counter[str], last: int
    ) -> None:
        """Journal what passes of (message, sender), record the last seq_id seen, count."""
        events: list[ForeignEvent] = []
        for message, sender in messages:
            counts["received"] += 1
            if not self.wanted(message.get("topic")):
                counts["skipped"] += 1
                continue
            found = self.event_of(message, sender)
            if isinstance(found, str):
                counts["refused"] += 1
                log.warning("upstream %s: refused a message from %s: %s", self.name, sender, found)
                continue
            events.append(found)
        # the messages, the last seq_id seen and the counts commit together: a restart asks
        # the replay endpoint for exactly what was not journaled
        with self.journal.batch() as batch:
            result = batch.append(events, f"upstream:{self.name}")
            counts["journaled"] += len(result.seq_ids)
            counts["duplicates"] += result.duplicates
            if last:
                batch.set_cursor(self.key, last)
            batch.set_cursor(f"{self.key}.at", int(time.time()))
            batch.add_counters({f"{self.key}.{k}": v for k, v in counts.items() if v})
        if result.seq_ids:
            self.on_appended()


class FedmsgUpstream(Upstream):
    """A fedmsg bus (or another bridge's) read from its PUB endpoints."""

    def __init__(
        self,
        name: str,
        settings: UpstreamConfig,
        journal: Journal,
        context: zmq.Context,
        discovery: Discovery,
        on_appended: Callable[[], None],
    ):
        super().__init__(name, settings, journal, on_appended)
        self.context = context
        self.discovery = discovery
        self.last = journal.cursor(self.key)
        self.sock: zmq.Socket | None = None
        self.follow: Following | None = None
        self.replay_endpoint = settings.replay or None

    def connect(self) -> None:
        settings = self.settings
        endpoints = list(settings.endpoints)
        if settings.srv:
            endpoints = self.discovery.endpoints(settings.srv, fresh=True)
            if not settings.replay:
                self.replay_endpoint = self.discovery.replay(settings.srv, fresh=True)
        # every message, whatever its topic: a seq_id skipped by a filter is no gap
        self.sock = subscribe(endpoints, "", context=self.context)
        if settings.srv:
            self.follow = Following(settings.srv, self.discovery, False)
            self.follow.watch(self.sock, endpoints, None)
        log.info(
            "upstream %s: subscribed to %s (replay %s), after seq_id %d",
            self.name,
            ", ".join(endpoints),
            self.replay_endpoint or "none",
            self.last,
        )

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if self.sock is None:
                    self.connect()
                self._read(stop)
                failures = 0
            except (DiscoveryError, zmq.ZMQError, OSError) as e:
                log.warning("upstream %s: %s; trying again", self.name, e)
                self.close()
                stop.wait(RETRY[min(failures, len(RETRY) - 1)])
                failures += 1
        self.close()

    def _read(self, stop: threading.Event) -> None:
        assert self.sock is not None
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.follow is not None and self.follow.monitor is not None:
            poller.register(self.follow.monitor, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(POLL_MS))
            if self.follow is not None and self.follow.monitor in ready:
                self.follow.event()
            if self.sock not in ready:
                continue
            batch: list[list[bytes]] = []
            while len(batch) < 500:
                try:
                    batch.append(self.sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            self.take(batch)

    def take(self, batch: list[list[bytes]]) -> None:
        counts: Counter[str] = Counter()
        messages: list[tuple[Mapping[str, Any], str]] = []
        sender = f"{self.name} bus"
        for frames in batch:
            try:
                message = json.loads(frames[-1])
            except ValueError:
                counts["refused"] += 1
                continue
            if not isinstance(message, dict):
                counts["refused"] += 1
                continue
            seq_id = message.get("seq_id")
            if isinstance(seq_id, int) and self.last and seq_id > self.last + 1:
                messages += [(m, f"{self.name} replay") for m in self.fill(seq_id, counts)]
            if isinstance(seq_id, int):
                self.last = seq_id  # a lower one than before: the upstream started over
            messages.append((message, sender))
        self.journal_messages(messages, counts, self.last)

    def fill(self, seq_id: int, counts: Counter[str]) -> list[dict[str, Any]]:
        """The messages between the last seen and *seq_id*, from the replay endpoint."""
        missing = list(range(self.last + 1, seq_id))
        found: dict[int, dict[str, Any]] = {}
        if self.replay_endpoint:
            for start in range(0, len(missing), REPLAY_CHUNK):
                chunk = missing[start : start + REPLAY_CHUNK]
                for message in self._replay({"seq_ids": chunk}):
                    if isinstance(message.get("seq_id"), int):
                        found[message["seq_id"]] = message
        lost = len(missing) - len(found)
        counts["recovered"] += len(found)
        counts["gaps"] += lost
        log.log(
            logging.WARNING if lost else logging.INFO,
            "upstream %s: seq_id %d-%d missed; %d recovered from %s, %d not",
            self.name,
            missing[0],
            missing[-1],
            len(found),
            self.replay_endpoint or "no replay endpoint",
            lost,
        )
        return [found[s] for s in sorted(found)]

    def _replay(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """One query of the replay endpoint, its messages as they were sent (signature
        included); [] when it answers with an error or not at all."""
        assert self.replay_endpoint is not None
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.replay_endpoint)
            sock.send(json.dumps(query).encode())
            if not sock.poll(REPLAY_TIMEOUT_MS):
                log.warning("upstream %s: %s did not answer", self.name, self.replay_endpoint)
                return []
            frames = sock.recv_multipart()
        finally:
            sock.close()
        if len(frames) == 1 and frames[0].startswith(b"error"):
            said = frames[0][:200].decode("utf-8", "replace")
            log.warning("upstream %s: replay: %s", self.name, said)
            return []
        found = []
        for frame in frames:
            try:
                message = json.loads(frame)
            except ValueError:
                continue
            if isinstance(message, dict):
                found.append(message)
        return found

    def close(self) -> None:
        if self.follow is not None:
            self.follow.close()
            self.follow = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


class AmqpUpstream(Upstream):
    """A queue on an AMQP broker, in fedora-messaging's format (the routing key is the
    topic, the body the message, ``message_id`` its id); acknowledged once journaled."""

    def run(self, stop: threading.Event) -> None:
        import pika

        failures = 0
        while not stop.is_set():
            try:
                connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
            except Exception as e:  # pika's many connection errors
                log.warning("upstream %s: cannot connect (%s); trying again", self.name, e)
                stop.wait(RETRY[min(failures, len(RETRY) - 1)])
                failures += 1
                continue
            failures = 0
            try:
                self._consume(connection, stop)
            except Exception as e:
                log.warning("upstream %s: the broker went away (%s); reconnecting", self.name, e)
            finally:
                if connection.is_open:
                    connection.close()

    def _consume(self, connection: Any, stop: threading.Event) -> None:
        settings = self.settings
        channel = connection.channel()
        channel.basic_qos(prefetch_count=500)
        channel.queue_declare(settings.amqp_queue, durable=True)
        for binding in settings.amqp_bindings:
            channel.queue_bind(settings.amqp_queue, settings.amqp_exchange, routing_key=binding)
        log.info("upstream %s: reading queue %s", self.name, settings.amqp_queue)
        pending: list[tuple[Any, Mapping[str, Any]]] = []
        for method, properties, body in channel.consume(
            settings.amqp_queue, inactivity_timeout=POLL_MS / 1000
        ):
            if method is not None:
                pending.append((method, message_of_amqp(method.routing_key, properties, body)))
                if len(pending) < 500:
                    continue
            if pending:
                self.journal_messages([(m, f"{self.name} queue") for _, m in pending], Counter(), 0)
                channel.basic_ack(pending[-1][0].delivery_tag, multiple=True)
                pending = []
            if stop.is_set():
                return

    def close(self) -> None:
        pass


def message_of_amqp(routing_key: str, properties: Any, body: bytes) -> dict[str, Any]:
    """A fedora-messaging message as the fedmsg message it carries: the bridge's own
    headers give its msg_id and index; otherwise ``message_id`` is the id."""
    headers = properties.headers or {}
    try:
        msg = json.loads(body)
    except ValueError:
        msg = None
    msg_id = headers.get("debian_bus_msg_id") or properties.message_id
    return {
        "topic": routing_key,
        "msg": msg,
        "msg_id": str(msg_id) if msg_id else None,
        "timestamp": amqp_timestamp(headers),
        "username": str(headers.get("fedora_messaging_user") or ""),
        "index": {
            "packages": list(headers.get("debian_bus_packages") or []),
            "bugs": list(headers.get("debian_bus_bugs") or []),
        },
    }


def build_upstreams(
    config: Any,
    open_journal: Callable[[], Journal],
    context: zmq.Context,
    on_appended: Callable[[], None],
) -> list[Upstream]:
    """One reader a configured upstream, each on its own journal connection."""
    found: list[Upstream] = []
    discovery = config.discovery_client()
    for name, settings in config.upstream.items():
        if settings.amqp_url:
            found.append(AmqpUpstream(name, settings, open_journal(), on_appended))
        else:
            found.append(
                FedmsgUpstream(name, settings, open_journal(), context, discovery, on_appended)
            )
    return found

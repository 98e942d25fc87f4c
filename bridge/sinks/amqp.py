"""The AMQP sink: every journal row, in ``seq_id`` order, to a broker in fedora-messaging's
wire format (design §11).

It is a second publisher beside the ZeroMQ one, with its own durable cursor (``amqp``):
a row counts as sent when the broker confirmed it, so a crash or an outage re-sends at most
the rows in flight (at-least-once; consumers drop duplicates by ``debian_bus_seq_id``). A
broker that is away stalls only this sink: it retries with growing pauses, logs once when
the connection is lost and once when it is back, and then catches up in order.

A batch of rows is published at once and the broker confirms them as it takes them
(asynchronous publisher confirms, :mod:`bridge.sinks.confirms`): the cursor moves past the
rows confirmed from the batch's start, and no further.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.events import Envelope, amqp_timestamp
from bridge.journal import Journal, Row
from bridge.sinks.base import Sink
from bridge.sinks.confirms import ConfirmingPublisher, Message

log = logging.getLogger(__name__)

CURSOR = "amqp"
SEVERITY_INFO = 20
SCHEMA_PREFIX = "debian_bus."  # the schema package's entry points: debian_bus.<event topic>


def builtin_topics() -> frozenset[str]:
    """The topics the schema package has message classes for: those the bridge ships a
    schema for."""
    from importlib.resources import files

    return frozenset(
        entry.name.removesuffix(".json")
        for entry in (files("parsers") / "schemas").iterdir()
        if entry.name.endswith(".json")
    )


def schema_name(event_topic: str, known: frozenset[str]) -> str:
    """The fedora-messaging schema (entry point) name of a topic; ``base.message`` for a
    topic the schema package has no class for."""
    return SCHEMA_PREFIX + event_topic if event_topic in known else "base.message"


def message_of(
    envelope: Envelope, event_topic: str, known: frozenset[str], now: datetime | None = None
) -> Message:
    """*envelope* in fedora-messaging's wire format: the body is the event body (``msg``)."""
    sent = (now or datetime.now(UTC)).replace(microsecond=0)
    return Message(
        routing_key=envelope.topic,
        body=json.dumps(envelope.msg, ensure_ascii=False, sort_keys=True).encode("utf-8"),
        properties={
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "delivery_mode": 2,
            # msg_id is "<year>-<uuid4>": the UUID is what fedora-messaging calls message_id
            "message_id": envelope.msg_id.split("-", 1)[1],
            "headers": amqp_headers(envelope, event_topic, known, sent),
        },
    )


def amqp_headers(
    envelope: Envelope, event_topic: str, known: frozenset[str], sent: datetime
) -> dict[str, Any]:
    """The headers a message of *envelope* carries (and datagrepper-style history shows)."""
    return {
        "fedora_messaging_schema": schema_name(event_topic, known),
        "fedora_messaging_severity": SEVERITY_INFO,
        "sent-at": sent.isoformat(),
        "debian_bus_seq_id": envelope.seq_id,
        "debian_bus_msg_id": envelope.msg_id,
        # the envelope's own time (sent-at is when this message left the bridge)
        "debian_bus_timestamp": envelope.timestamp,
        # what the event is about, for filtering without knowing each body
        "debian_bus_packages": envelope.packages,
        "debian_bus_bugs": envelope.bugs,
    }


def connection_parameters(
    url: str, ca_certificate: str = "", certificate: str = "", key: str = ""
) -> Any:
    """pika's parameters for *url* (``amqps://`` for TLS), with the optional CA and client
    certificate."""
    import pika

    parameters = pika.URLParameters(url)
    if ca_certificate or certificate:
        context = ssl.create_default_context(cafile=ca_certificate or None)
        if certificate:
            context.load_cert_chain(certificate, key or None)
        host = parameters.host
        parameters.ssl_options = pika.SSLOptions(context, host)
    parameters.blocked_connection_timeout = 60
    return parameters


class AmqpSink(Sink):
    """Sends journal rows to the broker, each confirmed. Call :meth:`run` in its own thread."""

    name = CURSOR
    label = "AMQP sink"
    bus = "AMQP broker"

    def __init__(
        self,
        journal: Journal,
        parameters: Any,
        *,
        exchange: str = "amq.topic",
        known_topics: frozenset[str] = frozenset(),
        batch_size: int = 500,
        poll_interval: float = 0.2,
    ):
        super().__init__(journal, batch_size=batch_size, poll_interval=poll_interval)
        self.known_topics = known_topics
        self._publisher = ConfirmingPublisher(parameters, exchange)

    def connect(self) -> bool:
        if self._publisher.open:
            return False
        self._publisher.close()
        self._publisher.connect()
        return True

    def disconnect(self) -> None:
        self._publisher.close()

    def send(self, rows: Sequence[Row]) -> None:
        """The rows published at once, in order; the cursor moves past those the broker
        confirmed from the first (on a nack or a lost connection this raises, and a retry
        starts after the last confirmed one: durably once the batch is recorded)."""
        messages = [
            message_of(Envelope.from_json(row.envelope), row.event_topic, self.known_topics)
            for row in rows
        ]
        try:
            self._publisher.publish(messages)
        finally:
            if self._publisher.confirmed:
                self.cursor = rows[self._publisher.confirmed - 1].seq_id

    def wait(self, stop: threading.Event, seconds: float) -> None:
        """Wait for a wake-up or *seconds*, keeping the connection alive (heartbeats)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._publisher.idle(min(remaining, 0.1))
        self._wake.clear()


def consume(
    url: str, topic_prefix: str, *, queue: str | None = None, timeout: float | None = None
) -> Iterator[Envelope]:
    """The bridge's messages from a broker, as envelopes, from a queue bound to
    *topic_prefix*: an exclusive one that goes away with the consumer, or the durable
    *queue* (created if missing), which keeps what arrives while nobody listens.
    Stops after *timeout* idle seconds, if given."""
    import pika

    connection = pika.BlockingConnection(connection_parameters(url))
    try:
        channel = connection.channel()
        if queue:
            name = channel.queue_declare(queue, durable=True).method.queue
        else:
            name = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(name, "amq.topic", routing_key=f"{topic_prefix}.#")
        channel.queue_bind(name, "amq.topic", routing_key=topic_prefix)
        for method, properties, body in channel.consume(name, inactivity_timeout=timeout):
            if method is None:
                return  # idle for *timeout* seconds
            yield envelope_of(method.routing_key, properties, body)
            channel.basic_ack(method.delivery_tag)
    finally:
        if connection.is_open:
            connection.close()


def envelope_of(routing_key: str, properties: Any, body: bytes) -> Envelope:
    """An AMQP message the sink published, as the envelope it came from."""
    headers = properties.headers or {}
    return Envelope(
        topic=routing_key,
        msg=json.loads(body),
        timestamp=amqp_timestamp(headers),
        msg_id=str(headers.get("debian_bus_msg_id", "")),
        i=0,
        username="",
        seq_id=int(headers.get("debian_bus_seq_id", 0)),
        index={
            "packages": list(headers.get("debian_bus_packages") or []),
            "bugs": list(headers.get("debian_bus_bugs") or []),
        },
    )

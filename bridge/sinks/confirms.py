"""Publishing to an AMQP broker with asynchronous publisher confirms, on pika's
SelectConnection driven from the calling thread.

Waiting for each message's confirm before sending the next (pika's BlockingConnection in
confirm mode) costs a round trip and a frame to decode per message; the broker can instead
confirm many at once (``Basic.Ack`` with ``multiple``). :class:`ConfirmingPublisher` sends a
whole batch, then runs the connection's I/O loop until the broker has confirmed it, and says
how many messages from the start of the batch are confirmed: the caller moves its cursor
past those only. Nothing here runs in another thread: the I/O loop runs only inside
:meth:`~ConfirmingPublisher.publish` and :meth:`~ConfirmingPublisher.idle`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OPEN_TIMEOUT = 30.0  # seconds for the connection, channel and confirm mode to be ready
CONFIRM_TIMEOUT = 60.0  # seconds for a batch's confirms before the connection is given up


class BrokerError(ConnectionError):
    """The broker refused a message, went away, or did not answer in time."""


@dataclass
class _Batch:
    """The delivery tags of one batch and which of them the broker has confirmed."""

    first: int  # the delivery tag of the batch's first message
    size: int
    confirmed_upto: int  # every tag up to this one is confirmed
    single: set[int] = field(default_factory=set)  # confirmed one by one beyond it
    refused: int | None = None  # the first tag the broker nacked

    @property
    def last(self) -> int:
        return self.first + self.size - 1

    def confirm(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.confirmed_upto = max(self.confirmed_upto, tag)
        else:
            self.single.add(tag)
        while self.confirmed_upto + 1 in self.single:
            self.confirmed_upto += 1
            self.single.discard(self.confirmed_upto)

    def refuse(self, tag: int, multiple: bool) -> None:
        lowest = self.confirmed_upto + 1 if multiple else tag
        self.refused = lowest if self.refused is None else min(self.refused, lowest)

    @property
    def done(self) -> bool:
        return self.refused is not None or self.confirmed_upto >= self.last

    @property
    def confirmed(self) -> int:
        """How many messages from the start of the batch are confirmed."""
        upto = (
            self.confirmed_upto
            if self.refused is None
            else min(self.confirmed_upto, self.refused - 1)
        )
        return max(0, min(upto, self.last) - self.first + 1)


@dataclass(frozen=True)
class Message:
    """One message as it goes to the broker."""

    routing_key: str
    body: bytes
    properties: dict[str, Any]


class ConfirmingPublisher:
    """One connection and one channel in confirm mode to the broker of *parameters* (pika's
    connection parameters), publishing to *exchange*."""

    def __init__(self, parameters: Any, exchange: str):
        self.parameters = parameters
        self.exchange = exchange
        self._connection: Any = None
        self._channel: Any = None
        self._tag = 0  # the delivery tag of the last message published on this channel
        self._batch: _Batch | None = None
        self._lost: str | None = None  # why the connection or channel closed, once it did
        self._ready = False
        self.confirmed = 0  # of the last batch, from its start (also when publish raised)

    @property
    def open(self) -> bool:
        return self._channel is not None and self._lost is None

    def connect(self) -> None:
        """Open the connection, a channel and confirm mode; raise :class:`BrokerError`."""
        import pika

        self._lost, self._ready, self._tag = None, False, 0
        self._connection = pika.SelectConnection(
            self.parameters,
            on_open_callback=self._opened,
            on_open_error_callback=self._open_failed,
            on_close_callback=self._closed,
        )
        self._run_until(lambda: self._ready, OPEN_TIMEOUT, "the broker to accept a connection")

    def publish(self, messages: Sequence[Message]) -> int:
        """Send *messages* in order and wait for the broker's confirms; return how many from
        the start are confirmed (all of them, unless this raises :class:`BrokerError` after
        recording the confirmed count in :attr:`confirmed`)."""
        import pika

        if not self.open:
            raise BrokerError(self._lost or "not connected")
        batch = _Batch(first=self._tag + 1, size=len(messages), confirmed_upto=self._tag)
        self._batch = batch
        publish = self._channel.basic_publish
        for message in messages:
            publish(self.exchange, message.routing_key, message.body,
                    pika.BasicProperties(**message.properties))  # fmt: skip
        self._tag += len(messages)
        try:
            self._run_until(lambda: batch.done, CONFIRM_TIMEOUT, "the broker's confirms")
        finally:
            self.confirmed = batch.confirmed
            self._batch = None
        if batch.refused is not None:
            raise BrokerError(f"the broker refused message {batch.refused - batch.first + 1}"
                              f" of {batch.size} (Basic.Nack)")  # fmt: skip
        return batch.confirmed

    def idle(self, seconds: float) -> None:
        """Let the connection do its own work (heartbeats) for *seconds*."""
        if self._connection is None or self._lost is not None:
            return
        loop = self._connection.ioloop
        timer = loop.call_later(seconds, loop.stop)
        loop.start()
        loop.remove_timeout(timer)

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return
        with contextlib.suppress(Exception):  # already broken: nothing more to release
            if connection.is_open:
                connection.close()
                ended = connection.ioloop.call_later(5.0, connection.ioloop.stop)
                connection.ioloop.start()  # until closed (_closed stops it) or 5 s
                connection.ioloop.remove_timeout(ended)

    # -- the I/O loop's callbacks (each stops the loop when there is news) ---------------------

    def _run_until(self, condition: Any, timeout: float, what: str) -> None:
        loop = self._connection.ioloop
        timed_out = []
        timer = loop.call_later(timeout, lambda: (timed_out.append(True), loop.stop()))
        try:
            while not condition() and self._lost is None and not timed_out:
                loop.start()
        finally:
            loop.remove_timeout(timer)
        if condition():
            return
        if self._lost is not None:
            raise BrokerError(self._lost)
        raise BrokerError(f"waited {timeout:.0f} s for {what}")

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._channel_closed)
        channel.confirm_delivery(self._confirmation, callback=self._confirming)

    def _confirming(self, _frame: Any) -> None:
        self._ready = True
        self._connection.ioloop.stop()

    def _confirmation(self, frame: Any) -> None:
        import pika

        method = frame.method
        if self._batch is not None:
            if isinstance(method, pika.spec.Basic.Ack):
                self._batch.confirm(method.delivery_tag, method.multiple)
            else:  # Basic.Nack: the broker could not take it
                self._batch.refuse(method.delivery_tag, method.multiple)
            if self._batch.done:
                self._connection.ioloop.stop()

    def _open_failed(self, connection: Any, error: Any) -> None:
        self._lost = f"cannot connect: {error}"
        connection.ioloop.stop()

    def _closed(self, connection: Any, reason: Any) -> None:
        self._lost = self._lost or f"connection closed: {reason}"
        self._channel = None
        connection.ioloop.stop()

    def _channel_closed(self, _channel: Any, reason: Any) -> None:
        self._lost = self._lost or f"channel closed: {reason}"
        self._channel = None
        if self._connection is not None:
            self._connection.ioloop.stop()

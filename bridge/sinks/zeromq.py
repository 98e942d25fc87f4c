"""The ZeroMQ sink: the only writer of the PUB socket, in fedmsg's wire format.

ZeroMQ acknowledges nothing: a message handed to the PUB socket may still sit in this
process's buffers. The durable cursor therefore records only what was handed over at least
CURSOR_LAG ago, so an instance that dies (or one that takes over from it) sends the last
moments again rather than leaving a gap: at-least-once. Following the journal is
:class:`~bridge.sinks.base.Sink`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import zmq

from bridge.events import frames
from bridge.journal import Journal, Row
from bridge.sinks.base import Sink
from bridge.sinks.signing import EnvelopeSigner

log = logging.getLogger(__name__)

CURSOR = "publisher"
CURSOR_LAG = 2.0


class Publisher(Sink):
    """Sends journal rows on a bound PUB socket. Call :meth:`run` in its own thread."""

    name = CURSOR
    label = "publisher"
    bus = "the PUB socket"

    def __init__(
        self,
        journal: Journal,
        endpoint: str,
        *,
        context: zmq.Context | None = None,
        poll_interval: float = 0.02,
        startup_delay: float = 0.0,
        batch_size: int = 500,
        send_hwm: int = 100_000,
        signer: EnvelopeSigner | None = None,
    ):
        super().__init__(
            journal,
            batch_size=batch_size,
            poll_interval=poll_interval,
            startup_delay=startup_delay,
        )
        self.signer = signer
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(endpoint)
        self._handed_over: deque[tuple[float, int]] = deque()  # (when, seq_id), not yet saved
        self._saved = self.cursor

    @property
    def bound_endpoint(self) -> str:
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def took_over(self) -> None:
        self._saved = self.cursor
        self._handed_over.clear()

    def send(self, rows: Sequence[Row]) -> None:
        for row in rows:
            envelope = self.signer.sign(row.envelope) if self.signer else row.envelope
            self._socket.send_multipart(frames(row.topic, envelope))

    def advance(self, seq_id: int) -> None:
        """Handed over to ZeroMQ: recorded once CURSOR_LAG has passed (:meth:`save_cursor`)."""
        self.cursor = seq_id
        self._handed_over.append((time.monotonic(), seq_id))
        self.save_cursor()

    def flush(self) -> None:
        self.save_cursor()

    def save_cursor(self, *, everything: bool = False) -> None:
        """Record, durably, the position handed over to ZeroMQ at least CURSOR_LAG ago
        (*everything*: all of it, when the socket has been flushed)."""
        now = time.monotonic()
        safe = None
        while self._handed_over and (everything or now - self._handed_over[0][0] >= CURSOR_LAG):
            safe = self._handed_over.popleft()[1]
        if safe is not None and safe != self._saved:
            self.journal.set_cursor(CURSOR, safe)
            self._saved = safe

    def run(self, stop: threading.Event) -> None:
        log.info("publishing on %s from seq_id %d", self.bound_endpoint, self.cursor + 1)
        super().run(stop)

    def idle_for(self) -> float:
        idle = super().idle_for()
        if self._leading and self._handed_over:  # come back to save the cursor after the lag
            return min(CURSOR_LAG, idle)
        return idle

    def finish(self) -> None:
        """Send what is left; the socket is closed by :meth:`close`."""
        try:
            self.publish_pending()
        except zmq.ZMQError as e:
            log.warning("publisher: could not send the last rows (%s); they go next time", e)

    def close(self) -> None:
        # closing lingers until ZeroMQ has sent what it holds: then all of it is handed over
        self._socket.close()
        if self._leading:
            self.save_cursor(everything=True)

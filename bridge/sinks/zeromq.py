"""The publisher: the only writer of the PUB socket.

It follows the journal in ``seq_id`` order from a durable cursor, so rows written by any
process are published, and a restart after a crash resumes after the last row it recorded as
sent (at-least-once: a row sent just before a crash may be sent again, never skipped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import zmq

from bridge.events import frames
from bridge.journal import Journal
from bridge.runner import run_loop
from bridge.sinks.signing import EnvelopeSigner

log = logging.getLogger(__name__)

CURSOR = "publisher"
STANDBY_RETRY = 1.0  # how often an instance that does not publish asks for the lock
# With journal notifications a publisher sleeps until woken; this only bounds how long a
# notification lost in a reconnect could delay a message.
NOTIFIED_IDLE = 30.0
# ZeroMQ acknowledges nothing: a message handed to the PUB socket may still sit in this
# process's buffers. The durable cursor therefore records only what was handed over at
# least this long ago, so an instance that dies (or one that takes over from it) sends
# the last moments again rather than leaving a gap: at-least-once.
CURSOR_LAG = 2.0


class Publisher:
    """Sends journal rows on a bound PUB socket. Call :meth:`run` in its own thread."""

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
        self.journal = journal
        self.signer = signer
        self.endpoint = endpoint
        self.poll_interval = poll_interval
        self.startup_delay = startup_delay
        self.batch_size = batch_size
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(endpoint)
        self.cursor = journal.cursor(CURSOR)
        self._wake = threading.Event()
        self._leading = False
        self._notified = False
        self._handed_over: deque[tuple[float, int]] = deque()  # (when, seq_id), not yet saved
        self._saved = self.cursor

    @property
    def bound_endpoint(self) -> str:
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def wake(self) -> None:
        """Ask for an immediate look at the journal (the worker calls this after an append)."""
        self._wake.set()

    def leading(self) -> bool:
        """Whether this instance publishes (one does, on a journal shared between hosts);
        taking over, it starts from the shared cursor."""
        if self.journal.lead(CURSOR):
            if not self._leading:
                self.cursor = self._saved = self.journal.cursor(CURSOR)
                self._handed_over.clear()
                self._leading = True
            return True
        self._leading = False
        return False

    def publish_pending(self) -> int:
        """Send every row after the cursor; return how many were sent."""
        if not self.leading():
            return 0
        sent = 0
        while True:
            last = self.journal.last_seq_id()  # read first: rows at or below it are committed
            rows = self.journal.rows_after(self.cursor, self.batch_size, live_only=True)
            if not rows:
                if last > self.cursor:  # only history rows remain: step over them
                    self.cursor = last
                    self._handed_over.append((time.monotonic(), last))
                self.save_cursor()
                return sent
            for row in rows:
                envelope = self.signer.sign(row.envelope) if self.signer else row.envelope
                self._socket.send_multipart(frames(row.topic, envelope))
            self.cursor = rows[-1].seq_id
            self._handed_over.append((time.monotonic(), self.cursor))
            self.save_cursor()
            sent += len(rows)

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
        self._notified = self.journal.watch(self.wake)
        stop.wait(self.startup_delay)
        run_loop(
            "publisher",
            lambda: self.publish_pending() > 0,
            stop,
            idle=self._idle,
            wake=self._wake,
        )
        self.publish_pending()

    def _idle(self) -> float:
        if not self._leading:
            return STANDBY_RETRY
        if self._handed_over:  # come back to save the cursor once the lag has passed
            return min(CURSOR_LAG, NOTIFIED_IDLE if self._notified else self.poll_interval)
        return NOTIFIED_IDLE if self._notified else self.poll_interval

    def close(self) -> None:
        # closing lingers until ZeroMQ has sent what it holds: then all of it is handed over
        self._socket.close()
        if self._leading:
            self.save_cursor(everything=True)

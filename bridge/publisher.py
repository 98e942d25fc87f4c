"""The publisher: the only writer of the PUB socket.

It follows the journal in ``seq_id`` order from a durable cursor, so rows written by any
process are published, and a restart after a crash resumes after the last row it recorded as
sent (at-least-once: a row sent just before a crash may be sent again, never skipped).
"""

from __future__ import annotations

import logging
import threading

import zmq

from bridge.events import frames
from bridge.journal import Journal
from bridge.runner import run_loop
from bridge.signing import EnvelopeSigner

log = logging.getLogger(__name__)

CURSOR = "publisher"


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

    @property
    def bound_endpoint(self) -> str:
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def wake(self) -> None:
        """Ask for an immediate look at the journal (the worker calls this after an append)."""
        self._wake.set()

    def publish_pending(self) -> int:
        """Send every row after the cursor; return how many were sent."""
        sent = 0
        while True:
            last = self.journal.last_seq_id()  # read first: rows at or below it are committed
            rows = self.journal.rows_after(self.cursor, self.batch_size, live_only=True)
            if not rows:
                if last > self.cursor:  # only history rows remain: step over them
                    self.cursor = last
                    self.journal.set_cursor(CURSOR, last)
                return sent
            for row in rows:
                envelope = self.signer.sign(row.envelope) if self.signer else row.envelope
                self._socket.send_multipart(frames(row.topic, envelope))
            self.cursor = rows[-1].seq_id
            self.journal.set_cursor(CURSOR, self.cursor)
            sent += len(rows)

    def run(self, stop: threading.Event) -> None:
        log.info("publishing on %s from seq_id %d", self.bound_endpoint, self.cursor + 1)
        stop.wait(self.startup_delay)
        run_loop(
            "publisher",
            lambda: self.publish_pending() > 0,
            stop,
            idle=self.poll_interval,
            wake=self._wake,
        )
        self.publish_pending()

    def close(self) -> None:
        self._socket.close()

"""What every sink does the same way: follow the journal from a durable cursor.

A sink is the only writer of its bus. It sends the live rows after its cursor in ``seq_id``
order, a batch at a time, and moves its cursor only past rows the bus has taken (what
"taken" means is the sink's: a broker's confirm, a socket's buffer some time ago). On a
journal shared between hosts one instance runs each sink at a time (:meth:`Journal.lead`);
one that takes over starts from the shared cursor. A bus that fails stalls only its sink,
which retries with growing pauses, says once that it is down and once that it is back, and
then catches up in order. Rows written by any process are sent: the sink wakes on the
journal's notifications where the engine has them, else it polls.

A subclass gives its :attr:`name` (also its cursor's and its thread's) and :meth:`send`;
it may override :meth:`connect`, :meth:`disconnect`, :meth:`advance`, :meth:`flush` and
:meth:`wait`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

from bridge.journal import Journal, Row

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # pauses between attempts on a failing bus
STANDBY_RETRY = 1.0  # how often an instance that does not run the sink asks for the lock
# With journal notifications a sink sleeps until woken; this only bounds how long a
# notification lost in a reconnect could delay a message.
NOTIFIED_IDLE = 30.0


class Sink(ABC):
    """Sends journal rows to one bus. Call :meth:`run` in its own thread."""

    name: str = "sink"  # its cursor's and its thread's name
    label: str = "sink"  # how the log names it
    bus: str = "the bus"  # how the log names what it writes to

    def __init__(
        self,
        journal: Journal,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
        startup_delay: float = 0.0,
    ):
        self.journal = journal
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.startup_delay = startup_delay
        self.cursor = journal.cursor(self.name)
        self._wake = threading.Event()
        self._leading = False
        self._notified = False

    # -- what a bus does its own way -------------------------------------------------------

    @abstractmethod
    def send(self, rows: Sequence[Row]) -> None:
        """Hand *rows* to the bus, in order; raise when the bus did not take them all."""

    def connect(self) -> bool:
        """Make sure the bus can be written to; True when a connection was made just now."""
        return False

    def disconnect(self) -> None:  # noqa: B027 - a hook: nothing to let go by default
        """Let go of a connection the bus broke (or at the end)."""

    def advance(self, seq_id: int) -> None:
        """The bus has taken every row up to *seq_id*: record it durably."""
        self.cursor = seq_id
        self.journal.set_cursor(self.name, seq_id)

    def flush(self) -> None:  # noqa: B027 - a hook: most sinks record at once
        """Nothing is left to send for now (a sink that records lazily records here)."""

    def idle_for(self) -> float:
        """How long to wait for a wake-up when there is nothing to send."""
        if not self._leading:
            return STANDBY_RETRY
        return NOTIFIED_IDLE if self._notified else self.poll_interval

    def wait(self, stop: threading.Event, seconds: float) -> None:
        """Wait *seconds*, or until woken or stopped."""
        self._wake.wait(seconds)
        self._wake.clear()

    def took_over(self) -> None:  # noqa: B027 - a hook: most sinks need nothing more
        """This instance now runs the sink, from the shared cursor."""

    # -- the same for every bus ------------------------------------------------------------

    def wake(self) -> None:
        """Ask for an immediate look at the journal (the worker calls this after an append)."""
        self._wake.set()

    def leading(self) -> bool:
        """Whether this instance runs the sink (one does, on a journal shared between
        hosts); taking over, it starts from the shared cursor."""
        if not self.journal.lead(self.name):
            self._leading = False
            return False
        if not self._leading:
            self.cursor, self._leading = self.journal.cursor(self.name), True
            self.took_over()
        return True

    def publish_pending(self) -> int:
        """Send every live row after the cursor; return how many were sent."""
        if not self.leading():
            return 0
        sent = 0
        while True:
            last = self.journal.last_seq_id()  # read first: rows at or below it are committed
            rows = self.journal.rows_after(self.cursor, self.batch_size, live_only=True)
            if not rows:
                if last > self.cursor:  # only history rows remain: step over them
                    self.advance(last)
                self.flush()
                return sent
            self.send(rows)
            self.advance(rows[-1].seq_id)
            sent += len(rows)

    def run(self, stop: threading.Event) -> None:
        """Send until *stop*, retrying a failing bus with growing pauses; then send what is
        left and let go."""
        self._notified = self.journal.watch(self.wake)
        stop.wait(self.startup_delay)
        failures, down_since = 0, None
        while not stop.is_set():
            try:
                fresh = self.connect()
                sent = self.publish_pending()
                if down_since is not None:
                    log.warning(
                        "%s back after %.0fs; sending from seq_id %d",
                        self.bus,
                        time.monotonic() - down_since,
                        self.cursor + 1,
                    )
                elif fresh:
                    log.info("%s connected; sending from seq_id %d", self.label, self.cursor + 1)
                failures, down_since = 0, None
                if sent == 0:
                    self.wait(stop, self.idle_for())
            except Exception as e:  # the bus's errors, sockets, a broker that went away
                self.disconnect()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "%s cannot send (%s: %s); retrying", self.label, type(e).__name__, e
                    )
                stop.wait(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1
        self.finish()

    def close(self) -> None:  # noqa: B027 - a hook: most sinks let go in finish()
        """After the thread has ended: release what the sink still holds."""

    def finish(self) -> None:
        """At the end: send what the journal still holds, if the bus takes it, then let go."""
        try:
            self.publish_pending()
        except Exception as e:
            log.warning("%s: could not send the last rows (%s); they go next time", self.label, e)
        self.disconnect()

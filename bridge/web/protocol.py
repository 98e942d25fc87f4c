"""HTTP/1.1 for ``bridge web``: uvicorn's h11 protocol with a deadline for each request.

uvicorn cuts a connection that stays idle between requests, but not one that sends a
request's head or body a byte at a time: a few hundred such clients would hold as many
connections for ever. Here a request must arrive whole within ``[web] request_timeout``
seconds of its first byte (of the connection, for the first request), or the connection
is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def with_deadline(seconds: float) -> type[H11Protocol]:
    """The protocol class for uvicorn's ``http=`` with a request deadline of *seconds*."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"request_timeout": seconds})


DRAIN_SECONDS = 2.0  # how long a refused request's remaining bytes are read and dropped


class DeadlineH11Protocol(H11Protocol):
    request_timeout = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _draining = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return  # the rest of a refused request: read, so closing sends no reset
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a request after a keep-alive pause
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        # h11 is IDLE until the head is in whole and in SEND_BODY until the body is:
        # past those, the request has arrived (or the connection is over)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot read (a head over its 16 KiB, a malformed line): a JSON 400
        like every other error, then the rest of what the client sends is read and dropped
        for a moment before the connection closes, so the client reads the answer instead
        of a connection reset."""
        body = json.dumps(
            {
                "error": "the request cannot be read: its head is malformed or over 16 KiB"
                " (a query string that long is no search this server answers)",
                "status": 400,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        raw = h11.Connection(h11.SERVER)  # the request's own state machine is in error
        raw.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.next_event()
        self.transport.write(raw.send(h11.Response(status_code=400, headers=headers)) or b"")
        self.transport.write(raw.send(h11.Data(data=body)) or b"")
        self._draining = True
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            client = "{}:{}".format(*self.client) if self.client else "a client"
            log.info(
                "web: %s sent no whole request in %.0f s; connection closed",
                client,
                self.request_timeout,
            )
            self.transport.close()

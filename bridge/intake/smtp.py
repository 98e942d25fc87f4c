"""SMTP intake: a thin aiosmtpd handler in front of the spool.

RCPT is accepted only for the configured recipients (the bridge never relays); DATA is
answered ``250`` only once the mail and its envelope are synced to the spool. Every failure
before that is a 4xx, so the sending MTA keeps the mail and retries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import time
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.config import SmtpConfig, networks, parse_hostport
from bridge.intake.spool import Spool

log = logging.getLogger(__name__)

# What the bridge answers, as RFC 5321 reply codes with RFC 3463's enhanced status codes:
# 2xx accepted, 4xx try again later (the sender keeps the mail), 5xx refused for good.
NOT_A_RECIPIENT = "550 5.7.1 <{address}>: not a recipient of this bridge (relaying denied)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
RECIPIENT_OK = "250 2.1.5 OK"
NO_STORAGE = "452 4.3.1 Insufficient system storage, try again later"
NOT_STORED = "451 4.3.0 Could not store the mail, try again later"
QUEUED = "250 2.0.0 OK queued as {spool_id}"
SERVER_ERROR = "451 4.3.0 Temporary server error, try again later"
PEER_REFUSED = "554 5.7.1 {host} may not send mail to this bridge"
TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections, try again later"
TOO_MANY_FROM_HOST = "421 4.7.0 Too many connections from your host, try again later"
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 Error: Too much mail data"
DATA_TOO_LONG = "421 4.4.2 DATA took too long, closing connection"
IDLE_TOO_LONG = "421 4.4.2 Idle for too long, closing connection"


class Recipients:
    """The addresses this bridge takes mail for: exact addresses, or ``@domain`` entries."""

    def __init__(self, entries: list[str]):
        self.addresses = {e.lower() for e in entries if not e.startswith("@")}
        self.domains = {e[1:].lower() for e in entries if e.startswith("@")}

    def __contains__(self, address: str) -> bool:
        address = address.strip("<>").lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains


class Peers:
    """The networks allowed to connect (``[smtp] allowed_peers``)."""

    def __init__(self, cidrs: list[str]):
        self.networks = networks("smtp.allowed_peers", cidrs)

    def __contains__(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class IntakeHandler:
    """aiosmtpd hooks: recipient check, durable spool write, reply."""

    def __init__(self, spool: Spool, config: SmtpConfig):
        self.spool = spool
        self.config = config
        self.recipients = Recipients(config.recipients)
        self.peers = Peers(config.allowed_peers)
        self.counters: Counter[str] = Counter()
        self.connections = 0
        self.per_peer: Counter[str] = Counter()
        self.in_data = 0
        self._space_checked = (0.0, True)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address not in self.recipients:
            self.counters["rejected"] += 1
            return NOT_A_RECIPIENT.format(address=address)
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if not self._enough_space():
            self.counters["tempfail"] += 1
            log.error(
                "refusing mail: less than %d bytes free in the spool", self.config.min_free_bytes
            )
            return NO_STORAGE
        meta = {
            "peer": list(session.peer) if isinstance(session.peer, tuple) else str(session.peer),
            "helo": session.host_name,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "received": time.time(),
        }
        try:
            spool_id = await asyncio.wrap_future(
                self.spool.submit(meta, envelope.original_content or b"")
            )
        except Exception as e:  # any failure before the commit: the sender must retry
            self.counters["tempfail"] += 1
            log.error("could not spool mail from %s: %s", envelope.mail_from, e)
            return NOT_STORED
        self.counters["accepted"] += 1
        return QUEUED.format(spool_id=spool_id)

    def _enough_space(self) -> bool:
        """Free space in the spool, looked up at most every 0.5 s (it is one statvfs call)."""
        checked_at, enough = self._space_checked
        now = time.monotonic()
        if now - checked_at > 0.5:
            enough = shutil.disk_usage(self.spool.root).free >= self.config.min_free_bytes
            self._space_checked = (now, enough)
        return enough

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer a permanent 500; nothing failed for good, so the sender retries.
        log.exception("SMTP session error")
        self.counters["tempfail"] += 1
        return SERVER_ERROR


class BridgeSMTP(SMTP):
    """aiosmtpd's SMTP with the bridge's bounds: line length, connections, idle and DATA time."""

    def __init__(self, handler: IntakeHandler, config: SmtpConfig, **kwargs: Any):
        self.line_length_limit = config.max_line_length  # read by SMTP.__init__
        super().__init__(handler, **kwargs)
        self.bridge_handler = handler
        self.config = config
        self.data_timeout = config.data_timeout
        self._peer_host: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self._refusal(host)
        if refusal is not None:
            transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        handler = self.bridge_handler
        self._peer_host = host
        handler.connections += 1
        handler.per_peer[host] += 1
        super().connection_made(transport)

    def _refusal(self, host: str) -> str | None:
        """Why a connection from *host* is refused (counted), or None."""
        handler = self.bridge_handler
        if host not in handler.peers:
            handler.counters["refused_peers"] += 1
            log.warning("refusing a connection from %s: not in [smtp] allowed_peers", host)
            return PEER_REFUSED.format(host=host)
        if handler.connections >= self.config.max_connections:
            handler.counters["refused_connections"] += 1
            return TOO_MANY_CONNECTIONS
        if handler.per_peer[host] >= self.config.max_connections_per_peer:
            handler.counters["refused_connections"] += 1
            return TOO_MANY_FROM_HOST
        return None

    def connection_lost(self, error: Exception | None) -> None:
        if self._peer_host is None:
            return  # refused at connect: nothing was counted or started
        handler = self.bridge_handler
        handler.connections -= 1
        handler.per_peer[self._peer_host] -= 1
        if handler.per_peer[self._peer_host] <= 0:
            del handler.per_peer[self._peer_host]
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's idle timer only restarts between commands, so it would cut a long DATA
        # phase without a word: DATA gets its own deadline instead. A watchdog rather than a
        # cancellation: a cancelled DATA closes the stream, which would swallow the 421 that
        # tells the client why.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        watchdog = self.loop.call_later(self.data_timeout, self._data_too_slow)
        # A stop waits for transactions in DATA (drain_and_stop), from the first line on.
        self.bridge_handler.in_data += 1
        try:
            await self._data(arg)
        finally:
            self.bridge_handler.in_data -= 1
            watchdog.cancel()
            if self.transport is not None:
                self._reset_timeout()

    async def _data(self, arg: str) -> None:
        """DATA as aiosmtpd (1.4) answers it, step for step, with the mail read by
        :class:`DataReader`; the stream, the writer and the envelope's reset it uses are
        aiosmtpd's own, which tests/test_smtp.py exercises reply by reply."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(self._reader, self.data_size_limit, self.line_length_limit)
        try:
            content = await reader.read()
        except asyncio.CancelledError:  # the client went away during DATA
            self._writer.close()
            raise
        except DataRefused as refusal:
            self._set_post_data_state()
            await self.push(refusal.reply)
            return
        self.envelope.original_content = self.envelope.content = unstuff(content)
        status = await self.bridge_handler.handle_DATA(self, self.session, self.envelope)
        self._set_post_data_state()
        await self.push(status)

    def _data_too_slow(self) -> None:
        peer = self.session.peer if self.session else "?"
        log.warning("%r DATA took longer than %ss; closing", peer, self.data_timeout)
        self.bridge_handler.counters["data_timeouts"] += 1
        self._close_with(DATA_TOO_LONG)

    def _timeout_cb(self) -> None:
        self.bridge_handler.counters["idle_timeouts"] += 1
        self._close_with(IDLE_TOO_LONG)

    def _close_with(self, reply: str) -> None:
        if self.transport is not None:
            self.transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()


class DataRefused(Exception):
    """The mail was read to its end, and is refused with *reply*."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class DataReader:
    """Reads DATA up to its closing ``.`` line, a run of lines per wake-up.

    aiosmtpd awaits each line in turn, which made reading a mail the intake's largest cost. The
    reader asks the stream for everything up to the next ``.<CR><LF>`` instead (lines ending
    in a full stop included), or for as much as the stream's limit lets through, and leaves
    what follows the closing line in the stream: a pipelining client's next command. The mail
    is returned as sent, dot-stuffing still on; one that breaks a limit is read to its end
    and refused then, as RFC 5321 §4.2.5 implies, its text dropped as soon as it breaks it
    (so a line with no end costs no more memory than the line limit).
    """

    END = b".\r\n"

    def __init__(self, stream: asyncio.StreamReader, size_limit: int | None, line_limit: int):
        self.stream = stream
        self.size_limit = size_limit or None
        self.line_limit = line_limit
        self.content = bytearray()
        self.line_start = 0  # where in content the line not yet checked for length begins
        self.size = 0  # bytes read, kept or not
        self.tail = b"\r\n"  # the last two bytes read: DATA starts at the start of a line
        self.refusal: str | None = None

    async def read(self) -> bytes:
        while True:
            try:
                chunk = await self.stream.readuntil(self.END)
            except asyncio.LimitOverrunError as e:  # no ".\r\n" within the stream's limit
                self._keep(await self.stream.readexactly(e.consumed))
                continue
            before = chunk[: -len(self.END)]
            ending = before[-2:] if len(before) >= 2 else (self.tail + before)[-2:]
            if ending == b"\r\n":  # the "." is alone on its line: the end
                self._keep(before)
                break
            self._keep(chunk)
        if self.refusal is not None:
            raise DataRefused(self.refusal)
        return bytes(self.content)

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self.tail = (self.tail + data[-2:])[-2:]
        if self.refusal is not None:
            return
        self.content += data
        unchecked = self.content[self.line_start :]  # the lines this data ended or began
        if longest_line(unchecked) > self.line_limit:
            self._refuse(LINE_TOO_LONG)
        elif self.size_limit and self.size > self.size_limit:
            self._refuse(TOO_MUCH_DATA)
        elif (last_end := unchecked.rfind(b"\r\n")) >= 0:
            self.line_start += last_end + 2

    def _refuse(self, reply: str) -> None:
        """The first limit broken is what the client is told; nothing more is kept."""
        self.refusal = reply
        self.content.clear()


def longest_line(content: bytes | bytearray) -> int:
    """The length of *content*'s longest line, its <CR><LF> counted."""
    return max(map(len, content.split(b"\r\n"))) + 2 if content else 0


def unstuff(content: bytes) -> bytes:
    """*content* with RFC 5321 §4.5.2's transparency undone: a line's leading "." dropped."""
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]


class IntakeServer(Controller):
    """The SMTP listener, run in its own thread with its own event loop."""

    def __init__(self, spool: Spool, config: SmtpConfig, listen: str | None = None):
        host, port = parse_hostport(listen or config.listen)
        self.intake = IntakeHandler(spool, config)
        self.config = config
        super().__init__(
            self.intake,
            hostname=host,
            port=port,
            data_size_limit=config.max_message_size,
            timeout=config.command_timeout,
            command_call_limit=config.max_commands,
            decode_data=False,
            enable_SMTPUTF8=True,
            ident="debian-bus-bridge ESMTP",
        )

    def factory(self) -> SMTP:
        return BridgeSMTP(self.intake, self.config, **self.SMTP_kwargs)

    def drain_and_stop(self, grace: float = 10.0) -> None:
        """Stop listening, let transactions in flight finish, then stop."""
        if self.loop.is_running() and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        deadline = time.monotonic() + grace
        while self.intake.in_data and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop()

"""An IRC client just big enough to say lines in channels: it registers, joins, answers
the server's PINGs, keeps under the flood limits servers enforce, and connects again when
the connection is gone.

Flood control is a token bucket: *burst* lines at once, then one every *interval* seconds
(the pace servers such as ngircd and Libera's tolerate from a client that sends
continuously). One connection serves every rule that speaks on that server.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time

log = logging.getLogger(__name__)

REGISTRATION_TIMEOUT = 30.0


class IrcError(OSError):
    """The server refused us or went away."""


class FloodControl:
    """*burst* lines at once, then one per *interval* seconds."""

    def __init__(self, burst: int, interval: float, clock=time.monotonic):
        self.burst, self.interval, self.clock = burst, interval, clock
        self.tokens = float(burst)
        self.updated = clock()

    def delay(self) -> float:
        """Seconds to wait before the next line may go (taking its token)."""
        now = self.clock()
        if self.interval > 0:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) / self.interval)
        else:
            self.tokens = float(self.burst)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        wait = (1 - self.tokens) * self.interval
        self.tokens = 0.0
        self.updated = now + wait
        return wait


class IrcServer:
    """One connection to one server, shared by the rules that speak there."""

    def __init__(
        self,
        host: str,
        port: int,
        nick: str,
        *,
        tls: bool = False,
        burst: int = 4,
        interval: float = 2.0,
        timeout: float = 10.0,
    ):
        self.host, self.port, self.tls = host, port, tls
        self.wanted_nick = self.nick = nick
        self.timeout = timeout
        self.flood = FloodControl(burst, interval)
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.joined: set[str] = set()

    @property
    def label(self) -> str:
        return f"irc{'s' if self.tls else ''}://{self.host}:{self.port}"

    def say(self, channel: str, lines: list[str]) -> None:
        """Send *lines* to *channel* in order, paced by the flood control; raises IrcError
        (or OSError) when the connection fails, after which the next call reconnects."""
        with self.lock:
            try:
                self._connect()
                self._join(channel)
                for line in lines:
                    pause = self.flood.delay()
                    if pause:
                        time.sleep(pause)
                    self._drain()
                    self._send(f"PRIVMSG {channel} :{line}")
            except OSError:
                self._close()
                raise

    def keepalive(self) -> None:
        """Answer what the server sent while we were quiet (its PINGs)."""
        with self.lock:
            if self.sock is None:
                return
            try:
                self._drain()
            except OSError:
                self._close()

    def close(self) -> None:
        with self.lock:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self._send("QUIT :bye")
            self._close()

    # -- the protocol ----------------------------------------------------------------------

    def _connect(self) -> None:
        if self.sock is not None:
            return
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        if self.tls:
            raw = ssl.create_default_context().wrap_socket(raw, server_hostname=self.host)
        self.sock, self.buffer, self.joined, self.nick = raw, b"", set(), self.wanted_nick
        self._send(f"NICK {self.nick}")
        self._send(f"USER {self.wanted_nick} 0 * :Debian bus bridge notifications")
        deadline = time.monotonic() + REGISTRATION_TIMEOUT
        while time.monotonic() < deadline:
            for line in self._read(deadline - time.monotonic()):
                parts = line.split(" ")
                code = parts[1] if len(parts) > 1 else ""
                if code == "001":
                    log.info("%s: registered as %s", self.label, self.nick)
                    return
                if code in ("432", "433", "436"):  # nick refused or taken: try another
                    self.nick = f"{self.nick[:14]}_"
                    self._send(f"NICK {self.nick}")
                elif parts[0] == "ERROR" or code in ("465", "464"):
                    raise IrcError(f"{self.label} refused us: {line[:200]}")
        raise IrcError(f"{self.label}: no welcome within {REGISTRATION_TIMEOUT:.0f}s")

    def _join(self, channel: str) -> None:
        if channel not in self.joined:
            self._send(f"JOIN {channel}")
            self.joined.add(channel)

    def _send(self, line: str) -> None:
        assert self.sock is not None
        self.sock.sendall(line.encode("utf-8")[:510] + b"\r\n")

    def _drain(self) -> None:
        """Read what is waiting without blocking, answering PINGs."""
        assert self.sock is not None
        while select.select([self.sock], [], [], 0)[0]:
            self._read(self.timeout)

    def _read(self, timeout: float) -> list[str]:
        """The complete lines one read brings (PINGs answered, errors raised)."""
        assert self.sock is not None
        self.sock.settimeout(max(timeout, 0.01))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return []
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            raise IrcError(f"{self.label} closed the connection")
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        lines = []
        for raw in complete:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if line.startswith("PING"):
                self._send("PONG" + line[4:])
            elif line.startswith("ERROR"):
                raise IrcError(f"{self.label}: {line[:200]}")
            else:
                lines.append(line)
        return lines

    def _close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock, self.joined = None, set()

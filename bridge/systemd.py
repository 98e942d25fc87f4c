"""systemd's service notifications (``Type=notify``), without a library: one datagram to
``$NOTIFY_SOCKET`` each (sd_notify(3)).

``READY=1`` once SMTP listens and the journal, the pipeline and its sinks are up;
``STOPPING=1`` when a stop begins; ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the
service runs. Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send *state* (``READY=1``, ``STATUS=…``); False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as e:
        log.warning("cannot notify systemd (%s): %s", address, e)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, when systemd asks for them for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


def watchdog(stop: threading.Event, healthy: Callable[[], bool]) -> None:
    """Ping the watchdog while *healthy()* holds; a service that stops answering is
    restarted by systemd."""
    interval = watchdog_interval()
    if interval is None:
        return
    while not stop.wait(interval):
        if healthy():
            notify("WATCHDOG=1")

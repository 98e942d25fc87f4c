"""How the bridge runs its loops and threads: one way, with the same rules everywhere.

A loop calls its step until told to stop. A step that finds nothing to do waits (for a
wake-up, or a pause); a step that raises is logged and retried after a pause, so a passing
fault never ends a loop. A thread is started supervised: if its loop dies anyway, it is
restarted with growing pauses, and one that keeps dying ends the process loudly (exit 70)
so that whoever started the process starts it afresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_THREAD_CRASHED = 70


def run_loop(
    name: str,
    step: Callable[[], bool],
    stop: threading.Event,
    *,
    idle: float | Callable[[], float],
    wake: threading.Event | None = None,
    error_pause: float = 1.0,
) -> None:
    """Call *step* until *stop*; it returns whether it did something (then go on at once).
    Otherwise wait *idle* seconds (or what *idle()* says now) or until *wake* is set."""
    while not stop.is_set():
        try:
            busy = step()
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, error_pause)
            stop.wait(error_pause)
            continue
        if busy:
            continue
        pause = idle() if callable(idle) else idle
        if wake is None:
            stop.wait(pause)
        else:
            wake.wait(pause)
            wake.clear()


def start_thread(
    name: str, target: Callable[[threading.Event], None], stop: threading.Event
) -> threading.Thread:
    """Run ``target(stop)`` in a supervised daemon thread named *name*."""
    thread = threading.Thread(target=supervised, args=(name, target, stop), name=name, daemon=True)
    thread.start()
    return thread


def supervised(
    name: str,
    target: Callable[[threading.Event], None],
    stop: threading.Event,
    *,
    max_crashes: int = 5,
    window: float = 60.0,
) -> None:
    """Run *target* until *stop*; restart it when it crashes, with a growing pause."""
    crashes: list[float] = []
    while not stop.is_set():
        try:
            target(stop)
            return
        except Exception:
            now = time.monotonic()
            crashes = [t for t in crashes if now - t < window] + [now]
            if len(crashes) > max_crashes:
                log.critical(
                    "%s crashed %d times in %.0fs; ending the process", name, len(crashes), window
                )
                logging.shutdown()
                os._exit(EXIT_THREAD_CRASHED)
            pause = min(0.1 * 2 ** len(crashes), 5.0)
            log.exception("%s crashed; restarting it in %.1fs", name, pause)
            stop.wait(pause)

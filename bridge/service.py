"""``bridge serve``: the long-running service and its parts, started and stopped together."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import zmq

from bridge.config import Config
from bridge.events import Naming
from bridge.journal import JOURNAL_FILE, Journal
from bridge.publisher import Publisher

log = logging.getLogger(__name__)


def naming_of(config: Config) -> Naming:
    return Naming(config.topic_prefix, config.environment, config.username)


class Service:
    """The publisher (and, once configured, the other parts) of one bridge."""

    def __init__(self, config: Config):
        self.config = config
        self.state_dir = config.state_path
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stop_event = threading.Event()
        self._context = zmq.Context()
        self._threads: list[threading.Thread] = []
        self.publisher = Publisher(
            Journal(self.state_dir / JOURNAL_FILE, naming_of(config)),
            config.bus.publish,
            context=self._context,
            poll_interval=config.bus.poll_interval,
            startup_delay=config.bus.startup_delay,
            send_hwm=config.bus.send_hwm,
        )

    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL_FILE

    def start(self) -> None:
        self._spawn("publisher", self.publisher.run)

    def _spawn(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        self.publisher.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        self.publisher.close()
        self._context.term()

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        log.info("bridge serving; publish %s", self.config.bus.publish)
        while not self.stop_event.wait(0.5):
            pass
        log.info("stopping")
        self.stop()

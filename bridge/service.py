"""``bridge serve``: SMTP intake, worker, publisher (and replay), started and stopped together."""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq

from bridge.config import Config
from bridge.events import Naming
from bridge.journal import JOURNAL_FILE, Journal
from bridge.pipeline import Pipeline
from bridge.plugins import Parser, discover
from bridge.publisher import Publisher
from bridge.spool import Spool
from bridge.worker import Worker

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
STATS_EVERY = 60.0


def naming_of(config: Config) -> Naming:
    return Naming(config.topic_prefix, config.environment, config.username)


def open_journal(config: Config) -> Journal:
    return Journal(config.state_path / JOURNAL_FILE, naming_of(config))


def spool_of(config: Config) -> Spool:
    return Spool(config.state_path / SPOOL_DIR, commit_window=config.spool.group_commit_window)


class Service:
    """One running bridge."""

    def __init__(self, config: Config, parsers: list[Parser] | None = None):
        from bridge.smtp import IntakeServer

        self.config = config
        config.state_path.mkdir(parents=True, exist_ok=True)
        self.stop_event = threading.Event()
        self._context = zmq.Context()
        self._threads: list[threading.Thread] = []
        if parsers is None:
            parsers = discover().parsers
        self.publisher = Publisher(
            open_journal(config),
            config.bus.publish,
            context=self._context,
            poll_interval=config.bus.poll_interval,
            startup_delay=config.bus.startup_delay,
            send_hwm=config.bus.send_hwm,
        )
        self.spool = spool_of(config)
        self.worker_journal = open_journal(config)
        self.worker = Worker(
            self.spool, self.worker_journal, Pipeline(parsers), on_appended=self.publisher.wake
        )
        self.intake = IntakeServer(self.spool, config.smtp)
        self._flushed: Counter[str] = Counter()

    @property
    def journal_path(self) -> Path:
        return self.config.state_path / JOURNAL_FILE

    def start(self) -> None:
        self.spool.start()
        self._spawn("publisher", self.publisher.run)
        self._spawn("worker", self.worker.run)
        self._spawn("stats", self._stats)
        self.intake.start()
        log.info(
            "bridge serving: SMTP %s:%s, publish %s",
            self.intake.hostname,
            self.intake.port,
            self.config.bus.publish,
        )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop accepting, finish the transaction in flight, drain the worker, close."""
        self.intake.drain_and_stop()
        self.stop_event.set()
        self.publisher.wake()
        for thread in self._threads:
            thread.join(timeout=30)
        self.flush_counters()
        self.log_counters()
        self.spool.close()
        self.publisher.close()
        self._context.term()

    def flush_counters(self) -> None:
        """Move the intake's counters into the journal, where ``bridge status`` reads them."""
        current = Counter(self.intake.intake.counters)
        delta = {k: v - self._flushed[k] for k, v in current.items() if v != self._flushed[k]}
        if delta:
            self.worker_journal.add_counters(delta)
            self._flushed = current

    def log_counters(self) -> None:
        counters = self.worker_journal.counters()
        log.info(
            "counters: %s", " ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none yet"
        )

    def _stats(self, stop: threading.Event) -> None:
        waited = 0.0
        while not stop.wait(2.0):
            waited += 2.0
            try:
                self.flush_counters()
                if waited >= STATS_EVERY:
                    waited = 0.0
                    self.log_counters()
                    self.spool.expire(
                        self.worker.position, self.config.spool.retention_days * 86400
                    )
            except Exception:  # statistics must never take the service down
                log.exception("could not update counters")

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT (SIGUSR1 logs the counters)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGUSR1, lambda *_: self.log_counters())
        self.start()
        while not self.stop_event.wait(0.5):
            pass
        log.info("stopping")
        self.stop_event.clear()
        self.stop()

"""``bridge serve``: the running bridge, as two processes.

The intake process runs the SMTP listener and the spool writer and nothing else, so the
``250`` goes out as soon as the spool commit lands. The pipeline process (spawned by it)
runs the worker, the publisher and the replay endpoint; CPU spent parsing never holds the
SMTP replies back behind the GIL. The intake wakes the pipeline through a pipe after each
commit; the pipeline dies with the intake (``PR_SET_PDEATHSIG``) so a restarted bridge never
finds a stale worker on its spool.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import zmq

from bridge.buses.relay import RelayInbound
from bridge.buses.upstream import build_upstreams
from bridge.config import Config
from bridge.errors import BridgeError, JournalDamaged, JournalError
from bridge.files import private_dir
from bridge.intake.spool import spool_of
from bridge.journal import open_journal
from bridge.ops.inbox import AutoForward
from bridge.pipeline import Pipeline, describe
from bridge.pipeline.plugins import discover
from bridge.pipeline.worker import Worker, spool_cursor
from bridge.runner import run_loop, start_thread
from bridge.sinks.registry import build as build_sinks
from bridge.sinks.replay import ReplayServer
from bridge.sinks.signing import signer_of
from bridge.systemd import notify, watchdog
from bridge.trust import Trust

log = logging.getLogger(__name__)

STATS_EVERY = 60.0
_PR_SET_PDEATHSIG = 1
BIND_PATIENCE = 5.0  # seconds a new pipeline waits for the bus ports of a stopping one
EXIT_CANNOT_START = 2  # the pipeline process met a configuration error: restarting won't help
RESTART_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
HEALTHY_AFTER = 60.0  # a child that ran this long starts the pause sequence over
READY_TIMEOUT = 60.0


class Service:
    """The intake process of one running bridge."""

    def __init__(self, config: Config, parser_names: list[str] | None = None):
        from bridge.intake.smtp import IntakeServer

        self.config = config
        private_dir(config.state_path)
        self.journal = open_journal(config)
        damage = self.journal.check()
        if damage:
            self.journal.close()
            raise JournalDamaged(
                f"the journal {self.journal.location} is damaged ({len(damage)} problem(s), first:"
                f" {damage[0]}); the bridge will not run on it: stop it, then run"
                " 'bridge fsck --repair'"
            )
        self.stop_event = threading.Event()
        self.spool = spool_of(config)
        self.intake = IntakeServer(self.spool, config.smtp)
        self.parser_names = parser_names
        self._flushed: Counter[str] = Counter()
        self._threads: list[threading.Thread] = []
        self._child: multiprocessing.process.BaseProcess | None = None
        self.pipeline_failed = False
        self._wake_fd = -1
        self._wake_lock = threading.Lock()
        self._last_report = time.monotonic()

    def start(self) -> None:
        self.spool.start()
        try:
            self.intake.start()  # bind SMTP first: a port in use fails before anything runs
        except Exception:
            self.spool.close()
            raise
        # Mail accepted before the pipeline is up waits in the spool; it is processed first.
        self._start_pipeline_process()
        self.spool.listeners.append(self._wake_pipeline)
        self._spawn("stats", self._stats)
        self._spawn("pipeline-supervisor", self._supervise_pipeline)
        self._spawn("watchdog", lambda stop: watchdog(stop, self._healthy))
        if not self._wait_ready():
            return  # said why; "serving" would be untrue (the supervisor goes on trying)
        notify(f"READY=1\nSTATUS=SMTP on {self.intake.hostname}:{self.intake.port}")
        log.info(
            "bridge serving: SMTP %s:%s, publish %s, replay %s",
            self.intake.hostname,
            self.intake.port,
            self.config.bus.publish,
            self.config.bus.replay,
        )

    def _start_pipeline_process(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        self._ready = ctx.Event()  # set by the child once its sockets and sinks are up
        self._child = ctx.Process(
            target=pipeline_main,
            name="bridge-pipeline",
            args=(self.config, self.parser_names, level, reader, os.getpid(), self._ready),
        )
        self._child.start()
        self._child_started = time.monotonic()
        reader.close()
        self._wake_writer = writer
        self._wake_fd = writer.fileno()
        os.set_blocking(self._wake_fd, False)

    def _supervise_pipeline(self, stop: threading.Event) -> None:
        """Restart a pipeline process that died, with growing pauses; intake goes on."""
        failures = 0
        while not stop.wait(0.2):
            child = self._child
            if child is None or child.is_alive():
                continue
            if child.exitcode == EXIT_CANNOT_START:
                log.error("the pipeline process cannot start (see above); stopping")
                self.pipeline_failed = True
                self.stop_event.set()
                return
            ran = time.monotonic() - self._child_started
            failures = 1 if ran > HEALTHY_AFTER else failures + 1
            pause = RESTART_PAUSES[min(failures, len(RESTART_PAUSES)) - 1]
            log.error(
                "the pipeline process died (exit %s) after %.0fs; restarting it in %.0fs;"
                " SMTP intake goes on, mail waits in the spool",
                child.exitcode,
                ran,
                pause,
            )
            self.intake.intake.counters["pipeline_restarts"] += 1
            if stop.wait(pause):
                return
            old_writer = self._wake_writer
            with self._wake_lock:  # never write a wake-up to a closed (and reused) descriptor
                self._start_pipeline_process()
                old_writer.close()
            self._wake_pipeline()

    def _wait_ready(self) -> bool:
        """Wait for the pipeline process to be up; False if it died or took too long."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.wait(0.1):
            if self.stop_event.is_set() or time.monotonic() > deadline:
                log.warning("the pipeline process is not up: not telling systemd we are ready")
                return False
        return True

    def _healthy(self) -> bool:
        child = self._child
        return not self.stop_event.is_set() and child is not None and child.is_alive()

    def _wake_pipeline(self) -> None:
        # A full pipe means a wake-up is pending already; a closed one, that we are stopping.
        with self._wake_lock, contextlib.suppress(OSError):
            os.write(self._wake_fd, b"\x01")

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self._threads.append(start_thread(name, target, self.stop_event))

    def stop(self) -> None:
        """Stop accepting, finish the transaction in flight, drain the pipeline, close."""
        self.intake.drain_and_stop()
        self.spool.close()
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.flush_counters()
        # Closing the wake pipe tells the pipeline to drain and exit, even if it is still
        # starting up (a signal could arrive before its handler is installed).
        with self._wake_lock:
            self._wake_writer.close()
        if self._child is not None:
            self._child.join(120)
            if self._child.is_alive():
                log.error("the pipeline process did not stop; terminating it")
                self._child.terminate()
        self.log_counters()
        self.journal.close()

    def flush_counters(self) -> None:
        """Move the intake's counters into the journal, where ``bridge status`` reads them."""
        current = Counter(self.intake.intake.counters)
        delta = {k: v - self._flushed[k] for k, v in current.items() if v != self._flushed[k]}
        if delta:
            self.journal.add_counters(delta)
            self._flushed = current

    def expire_spool(self) -> None:
        """Drop spool segments the pipeline has finished with, once past the retention."""
        processed = self.journal.cursor(spool_cursor(self.config))
        if processed:
            removed = self.spool.expire(processed, self.config.spool.retention_days * 86400)
            if removed:
                log.info("spool: removed %d segment(s) past the retention", removed)

    def log_counters(self) -> None:
        counters = self.journal.counters()
        log.info(
            "counters: %s", " ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none yet"
        )

    def _stats(self, stop: threading.Event) -> None:
        run_loop("stats", self._stats_step, stop, idle=2.0)

    def _stats_step(self) -> bool:
        """Flush the intake's counters; every minute also log them and expire the spool."""
        self.flush_counters()
        if time.monotonic() - self._last_report >= STATS_EVERY:
            self._last_report = time.monotonic()
            self.log_counters()
            self.expire_spool()
        return False

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT (SIGUSR1 logs the counters)."""
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
        signal.signal(signal.SIGUSR1, lambda *_: self.log_counters())
        self.start()
        while not stopping.wait(0.5) and not self.stop_event.is_set():
            pass
        log.info("stopping")
        notify("STOPPING=1")
        self.stop()
        if self.pipeline_failed:
            raise BridgeError("the pipeline process stopped unexpectedly; see the log above")


class PipelineProcess:
    """Worker, publisher and replay endpoint: everything after the spool."""

    def __init__(self, config: Config, parser_names: list[str] | None):
        self.config = config
        self.stop_event = threading.Event()
        self._context = zmq.Context()
        registry = discover(only=parser_names)
        signer = signer_of(config.bus.signing.key, config.bus.signing.certificate)
        try:
            self.sinks = build_sinks(config, self._context, signer)
            self.replay = ReplayServer(
                open_journal(config, durable=False),
                config.bus.replay,
                context=self._context,
                limit=config.bus.replay_max_messages,
                max_request_bytes=config.bus.replay_max_request_bytes,
                signer=signer,
            )
        except zmq.ZMQError:
            # leave nothing bound: the caller may try again once the ports are free
            self._context.destroy(linger=0)
            raise
        self.spool = spool_of(config)
        self.worker = Worker(
            self.spool,
            open_journal(config),
            Pipeline(registry.parsers, Trust(config.trust)),
            on_appended=self._appended,
            policy_for=config.trust.policy_for,
            cursor=spool_cursor(config),
            on_inbox=AutoForward(config.inbox) if config.inbox.forward_to else None,
        )
        self.relay = (
            RelayInbound(
                config.relay, open_journal(config), self._context, on_appended=self._appended
            )
            if config.relay.listen
            else None
        )
        self.upstreams = build_upstreams(
            config, lambda: open_journal(config), self._context, on_appended=self._appended
        )
        self._threads: list[threading.Thread] = []

    def _appended(self) -> None:
        for sink in self.sinks:
            sink.wake()

    def run(self, wake: Connection, parent: int) -> None:
        threads = [(sink.name, sink.run) for sink in self.sinks]
        threads += [("replay", self.replay.run), ("worker", self._work)]
        if self.relay is not None:
            threads.append(("relay", self.relay.run))
        threads += [(f"upstream-{u.name}", u.run) for u in self.upstreams]
        self._threads = [start_thread(name, target, self.stop_event) for name, target in threads]
        self._watch(wake, parent)
        self.stop_event.set()
        self._appended()  # every sink looks once more, and sees the stop
        for thread in self._threads:
            thread.join(60)
        for sink in self.sinks:
            sink.close()
        self.replay.close()
        if self.relay is not None:
            self.relay.close()
        self._context.term()

    def _watch(self, wake: Connection, parent: int) -> None:
        """Forward the intake's wake-ups to the worker until told to stop."""
        fd = wake.fileno()
        os.set_blocking(fd, False)
        while not self.stop_event.is_set() and os.getppid() == parent:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    if not os.read(fd, 4096):
                        return  # the intake closed its end: it is stopping
                except BlockingIOError:
                    continue
                self.worker.wake()

    def _work(self, stop: threading.Event) -> None:
        self.worker.run(stop)


def pipeline_main(
    config: Config,
    parser_names: list[str] | None,
    level: int,
    wake: Connection,
    parent: int,
    ready: Any = None,
) -> None:
    """Entry point of the pipeline process."""
    _die_with_parent()
    if os.getppid() != parent:
        # the intake died before the line above asked to be told: nothing to serve (and a
        # restarted bridge needs the bus ports this process would take)
        return
    # Under overload the intake comes first: a mail must be acknowledged promptly, while
    # parsing may lag a little and catch up from the spool.
    with contextlib.suppress(OSError):
        os.nice(5)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    deadline = time.monotonic() + BIND_PATIENCE
    while True:
        try:
            process = PipelineProcess(config, parser_names)
            break
        except zmq.ZMQError as e:
            # the pipeline of a bridge that was just stopped may still hold the ports
            if e.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            log.error(
                "cannot bind the bus endpoints (%s, %s): %s",
                config.bus.publish,
                config.bus.replay,
                e,
            )
            raise SystemExit(EXIT_CANNOT_START) from e
        except (JournalError, OSError):
            raise  # the journal or the disk may come back: the supervisor restarts this process
        except Exception as e:  # a value the sockets or sinks refuse: restarting won't help
            log.error("the pipeline cannot start: %s", describe(e))
            raise SystemExit(EXIT_CANNOT_START) from e
    signal.signal(signal.SIGTERM, lambda *_: process.stop_event.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the intake decides when to stop
    if ready is not None:
        ready.set()  # sockets bound, journal open, sinks built
    process.run(wake, parent)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent-pid check in _watch still applies
        pass

"""``bridge notify``: every rule followed in a thread of its own (a slow destination, an
IRC channel under flood control, holds back only its rule), each on its own journal
connection, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.journal import Journal, open_journal
from bridge.notify.destinations import Destination, IrcServers, open_destination
from bridge.notify.follow import RuleFollower
from bridge.notify.rules import read_rules
from bridge.runner import run_loop, start_thread
from bridge.systemd import notify, watchdog

log = logging.getLogger(__name__)


class NotifyService:
    """The rules of *config*, each followed by a :class:`RuleFollower`."""

    def __init__(self, config: Config, only: list[str] | None = None):
        rules = read_rules(config)
        unknown = [name for name in only or () if name not in rules]
        if unknown:
            raise ConfigError(f"no rule {unknown[0]!r} in [notify.rules]")
        if not rules:
            raise ConfigError(
                "no [notify.rules.NAME] in the configuration: nothing to deliver"
                " (README, 'Notifications')"
            )
        self.config = config
        self.stop_event = threading.Event()
        self.irc = IrcServers(config.notify)
        self.journals: list[Journal] = []
        self.destinations: list[Destination] = []
        self.followers: list[RuleFollower] = []
        for name, rule in rules.items():
            if only and name not in only:
                continue
            destination = open_destination(name, rule.settings, config.notify, self.irc)
            journal = open_journal(config, durable=False)
            self.journals.append(journal)
            self.destinations.append(destination)
            self.followers.append(RuleFollower(rule, journal, destination, config.notify))
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for follower in self.followers:
            wake = threading.Event()
            follower.journal.watch(wake.set)
            self.threads.append(
                start_thread(
                    f"notify-{follower.rule.name}",
                    lambda stop, f=follower, w=wake: run_loop(
                        f"rule {f.rule.name}",
                        f.step,
                        stop,
                        idle=self.config.notify.poll_interval,
                        wake=w,
                    ),
                    self.stop_event,
                )
            )
        self.threads.append(
            start_thread("watchdog", lambda stop: watchdog(stop, self._healthy), self.stop_event)
        )
        notify(f"READY=1\nSTATUS={len(self.followers)} rules")
        log.info(
            "bridge notify: %d rule(s): %s",
            len(self.followers),
            ", ".join(f"{f.rule.name} -> {f.destination.label}" for f in self.followers),
        )

    def _healthy(self) -> bool:
        return all(t.is_alive() for t in self.threads if t.name.startswith("notify-"))

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)
        for destination in self.destinations:
            destination.close()
        for journal in self.journals:
            journal.close()

    def run_until_signalled(self) -> None:
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
        self.start()
        while not stopping.wait(0.5):
            pass
        log.info("stopping")
        notify("STOPPING=1")
        self.stop()

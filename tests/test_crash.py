"""SIGKILL at random moments: every mail that got a 250 gives its events exactly once."""

from __future__ import annotations

import random
import smtplib
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import Server, send, sql, wait_until
from tests.mails import bug_report

MAILS = 300
CLIENTS = 6


class Client(threading.Thread):
    """Sends its share of mails, retrying each until the server answers 250."""

    def __init__(self, server: Server, bugs: list[int]):
        super().__init__(daemon=True)
        self.server = server
        self.bugs = bugs
        self.acknowledged: list[int] = []
        self.attempts: Counter[int] = Counter()

    def run(self) -> None:
        for bug in self.bugs:
            while True:
                self.attempts[bug] += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.server.smtp_port, timeout=10) as smtp:
                        smtp.sendmail("lists@example.org", ["bridge@localhost"], bug_report(bug))
                    self.acknowledged.append(bug)
                    time.sleep(0.01)  # list servers pace their deliveries a little
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)  # refused, reset or 4xx: an MTA keeps the mail and retries


def test_random_sigkills_lose_nothing_and_duplicate_nothing(state_dir: Path):
    rng = random.Random(20261128)
    server = Server(state_dir).start()
    server.wait_for_smtp()
    bugs = list(range(500_000, 500_000 + MAILS))
    clients = [Client(server, bugs[i::CLIENTS]) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    kills = 0
    try:
        while kills < 3 or (any(c.is_alive() for c in clients) and kills < 6):
            time.sleep(rng.uniform(0.05, 0.4))
            server.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
            server.wait_for_smtp()
        for client in clients:
            client.join(120)
        acknowledged = sorted(b for c in clients for b in c.acknowledged)
        assert acknowledged == bugs
        wait_until(lambda: _journaled(state_dir) >= MAILS, 60, "every acknowledged mail's event")
    finally:
        server.stop()
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        events = list(journal.envelopes(journal.rows_after(0, limit=10 * MAILS)))
        keys = [row[0] for row in sql(journal.path, "SELECT base_key FROM events")]
    per_bug = Counter(e.msg["bug"] for e in events)
    assert set(per_bug) == set(bugs), "a mail that got 250 produced no event"
    assert set(per_bug.values()) == {1}, "a mail produced its event twice"
    assert len(keys) == len(set(keys)) == MAILS
    assert [e.seq_id for e in events] == list(range(1, MAILS + 1))
    retried = sum(1 for c in clients for n in c.attempts.values() if n > 1)
    print(f"\n{kills} kills; {retried} mails needed a retry")
    assert kills >= 3


def _journaled(state_dir: Path) -> int:
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        return journal.last_seq_id()


def _occupy(endpoint: str) -> socket.socket:
    """Hold the TCP port of *endpoint* as another program would."""
    port = int(endpoint.rsplit(":", 1)[1])
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_bus_port_freed_within_seconds_is_waited_for(state_dir: Path):
    """A restart while the old pipeline still holds the bus ports: the new one waits."""
    server = Server(state_dir)
    holder = _occupy(server.publish)
    server.start()
    try:
        time.sleep(1.5)
        holder.close()
        server.wait_for_smtp()
        assert send(server, bug_report(730500)) == {}
        wait_until(lambda: _journaled(state_dir) >= 1, 20, "the mail's event")
    finally:
        holder.close()
        server.stop()


def test_a_bus_port_another_program_keeps_stops_the_bridge_saying_why(state_dir: Path):
    server = Server(state_dir)
    holder = _occupy(server.replay)
    try:
        server.start()
        assert server.proc.wait(60) != 0  # type: ignore[union-attr]
    finally:
        holder.close()
        server.stop()
    log = server.log_text()
    assert "cannot bind the bus endpoints" in log
    assert "bridge serving" not in log  # it never served: the log does not say it did

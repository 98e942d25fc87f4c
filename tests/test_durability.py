"""Durability as ordering: no 250 before the sync, no spool position before its events.

These tests hold the sync (or the journal) back and check that nothing that depends on it
has happened yet, so they fail if a sync is removed or an order is swapped, not by luck.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.config import SmtpConfig
from bridge.intake.smtp import IntakeServer
from bridge.intake.spool import Spool
from bridge.journal import SqliteJournal
from bridge.pipeline import Pipeline
from bridge.pipeline.plugins import discover
from bridge.pipeline.worker import CURSOR, Worker
from tests.helpers import (
    RCPT,
    Server,
    Subscriber,
    config_file,
    free_port,
    journal_events,
    require,
    send,
    sql,
    wait_until,
)
from tests.mails import bug_report


class HeldSync:
    """Stands in for os.fdatasync: records each call and returns only when released."""

    def __init__(self) -> None:
        self.real = os.fdatasync
        self.calls: list[int] = []
        self.released = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls.append(fd)
        assert self.released.wait(30), "the test never released the sync"
        self.real(fd)


@pytest.fixture
def held_sync(monkeypatch: pytest.MonkeyPatch) -> HeldSync:
    held = HeldSync()
    monkeypatch.setattr(os, "fdatasync", held)
    return held


def test_no_spool_future_completes_before_its_batch_is_synced(tmp_path: Path, held_sync):
    spool = Spool(tmp_path / "spool")
    spool.start()
    try:
        futures = [spool.submit({"n": n}, f"mail {n}".encode()) for n in range(5)]
        wait_until(lambda: held_sync.calls, 10, "the writer to reach its sync")
        time.sleep(0.2)  # the futures had every chance to complete early
        assert not any(f.done() for f in futures)
        assert spool.segment_path(1).stat().st_size > 0  # written, just not yet synced
        held_sync.released.set()
        assert [f.result(10) for f in futures]
    finally:
        held_sync.released.set()
        spool.close()


def test_no_smtp_250_goes_out_before_the_mail_is_synced(tmp_path: Path, held_sync):
    spool = Spool(tmp_path / "spool")
    spool.start()
    server = IntakeServer(spool, SmtpConfig(), listen=f"127.0.0.1:{free_port()}")
    server.start()
    try:
        with ThreadPoolExecutor(1) as pool:

            def deliver() -> dict:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                    return client.sendmail("a@example.org", [RCPT], bug_report(780001))

            reply = pool.submit(deliver)
            wait_until(lambda: held_sync.calls, 10, "the spool to reach its sync")
            time.sleep(0.3)
            assert not reply.done(), "the client got its reply before the sync"
            held_sync.released.set()
            assert reply.result(10) == {}
    finally:
        held_sync.released.set()
        server.stop()
        spool.close()


def test_the_spool_position_never_moves_without_its_events(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    for bug in (780101, 780102, 780103):
        spool.write_now({}, bug_report(bug))
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    sql(  # the journal cannot record a position: so no event may be kept either
        journal.path,
        "CREATE TRIGGER hold BEFORE INSERT ON cursors BEGIN SELECT RAISE(ABORT, 'held'); END",
    )
    worker = Worker(spool, journal, Pipeline(discover(only=["debbugs"]).parsers))
    with pytest.raises(Exception, match="held"):
        worker.step()
    assert journal.last_seq_id() == 0 and journal.cursor(CURSOR) == 0
    sql(journal.path, "DROP TRIGGER hold")
    assert worker.step() is True
    assert journal.last_seq_id() == 3 and journal.cursor(CURSOR) == spool.committed_position
    spool.close()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 8 MiB filesystem (tmpfs) for the state directory."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True
    )
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return filler


def test_mail_refused_on_a_full_disk_is_delivered_and_published_once_space_returns(
    small_disk: Path, tmp_path: Path
):
    state = small_disk / "state"
    state.mkdir()
    server = Server(state, config=config_file(tmp_path, "min_free_bytes = 0")).start()
    sub = None
    try:
        server.wait_for_smtp()
        sub = Subscriber(server.publish)
        sub.warm_up(state)
        assert send(server, bug_report(780201)) == {}
        assert sub.collect(lambda got: len(got) == 1, 20), "the first mail never arrived"
        filler = fill(small_disk, leave=20_000)
        mail = bug_report(780202, body_bytes=200_000)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server, mail)
        assert refused.value.smtp_code == 451  # a real ENOSPC: the sender keeps the mail
        filler.unlink()
        assert send(server, mail) == {}  # the sending MTA's retry
        got = sub.collect(lambda got: len(got) == 2, 20)
        assert [e.msg["bug"] for e in got] == [780201, 780202]
    finally:
        if sub is not None:
            sub.close()
        server.stop()
    assert [e.msg["bug"] for e in journal_events(state) if "bug" in e.msg] == [780201, 780202]

"""``bridge web`` never shows a frozen history: under a running web with a live stream open
(and, in a real browser, the live page), ``bridge serve`` is restarted, SIGKILLed, and its
journal replaced or its write-ahead log made anew, and /raw, /metrics and the page catch up
within seconds each time; /healthz/ready never answers 200 from a view older than the
journal."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import Server, send, wait_until
from tests.mails import bug_report
from tests.web import WebServer

CATCH_UP = 5.0  # seconds the web may take to show what the journal holds


def journal_total(state: Path) -> int:
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        return journal.count()


def metrics_events(web: WebServer) -> float:
    lines = web.get("/metrics").body.decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("bridge_events_total{")
    )


def caught_up(web: WebServer, state: Path) -> None:
    """/raw's total and /metrics' event count equal the journal's within CATCH_UP."""
    total = journal_total(state)
    started = time.monotonic()
    wait_until(lambda: web.get("/raw").json()["total"] == total, CATCH_UP, f"/raw at {total}")
    wait_until(lambda: metrics_events(web) == total, CATCH_UP, f"/metrics at {total}")
    wait_until(lambda: web.get("/healthz/ready").status == 200, CATCH_UP, "/healthz/ready")
    print(f"  caught up with {total} events in {time.monotonic() - started:.2f} s")


def mails(server: Server, first: int, count: int = 5) -> None:
    """*count* new bug reports from #*first* on, sent and journaled."""
    state = server.state_dir
    before = journal_total(state) if (state / JOURNAL_FILE).exists() else 0
    for n in range(first, first + count):
        assert send(server, bug_report(n)) == {}
    wait_until(lambda: journal_total(state) == before + count, 20, "the mails journaled")


@pytest.mark.slow
def test_the_web_catches_up_after_serve_is_restarted_killed_and_its_journal_renewed(tmp_path):
    state = tmp_path / "state"
    server = Server(state).start()
    server.wait_for_smtp()
    mails(server, 1)
    web = WebServer(state).start()
    stream = socket.create_connection(("127.0.0.1", web.port), timeout=10)
    stream.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # as the live page does
    assert stream.recv(100).startswith(b"HTTP/1.1 200")
    try:
        assert web.get("/v1/stats").status == 200
        caught_up(web, state)

        server.stop()  # restarted
        server = Server(state).start()
        server.wait_for_smtp()
        mails(server, 10)
        caught_up(web, state)

        server.kill()  # killed, then started again
        server = Server(state).start()
        server.wait_for_smtp()
        mails(server, 20)
        caught_up(web, state)

        # replaced: the journal file is another file now (a restore from a backup)
        server.stop()
        backup = state / "backup.sqlite3"
        # (closed, not just committed: an open connection would keep this process's view)
        with (
            closing(sqlite3.connect(state / JOURNAL_FILE)) as source,
            closing(sqlite3.connect(backup)) as copy,
        ):
            source.backup(copy)
        for leftover in ("-wal", "-shm"):  # the old file's log is no log of the new one
            (state / (JOURNAL_FILE + leftover)).unlink(missing_ok=True)
        os.replace(backup, state / JOURNAL_FILE)
        server = Server(state).start()
        server.wait_for_smtp()
        mails(server, 30)
        caught_up(web, state)

        # the write-ahead log and its index made anew under the web's open connections, as
        # SQLite does when it takes itself for the last connection
        server.stop()
        with closing(sqlite3.connect(state / JOURNAL_FILE)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for leftover in ("-wal", "-shm"):
            (state / (JOURNAL_FILE + leftover)).unlink(missing_ok=True)
        server = Server(state).start()
        server.wait_for_smtp()
        mails(server, 40)
        caught_up(web, state)
        assert "opening the journal again" in web.log_text()
    finally:
        stream.close()
        web.stop()
        server.stop()


def journal_last(state: Path) -> int:
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        return journal.last_seq_id()


def ready_never_lies(web: WebServer, state: Path, seconds: float) -> int:
    """Ask /healthz/ready over and over for *seconds*: a 200 must report a view at least as
    new as the journal was when the question was sent. Returns how many 503s it gave."""
    refusals = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        before = journal_last(state)
        reply = web.get("/healthz/ready")
        if reply.status == 200:
            assert reply.json()["last_seq_id"] >= before, (
                "ready, with a view older than the journal"
            )
        else:
            assert reply.status == 503, reply.status
            refusals += 1
        time.sleep(0.05)
    return refusals


def newest_on_page(driver) -> str:
    from selenium.webdriver.common.by import By

    events = driver.find_elements(By.CSS_SELECTOR, "#events li.event")
    return events[0].text if events else ""


@pytest.mark.slow
def test_the_open_page_catches_up_after_serve_is_restarted_and_killed(tmp_path, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    state = tmp_path / "state"
    server = Server(state).start()
    server.wait_for_smtp()
    mails(server, 1, 3)
    web = WebServer(state).start()
    try:
        browser.get(web.base + "/")
        WebDriverWait(browser, 10).until(lambda d: "#3 " in newest_on_page(d))
        for first, how in (
            (100, "restarted"),
            (200, "killed"),
            (300, "restarted"),
            (400, "killed"),
        ):
            if how == "killed":
                server.kill()
            else:
                server.stop()
            server = Server(state).start()
            server.wait_for_smtp()
            mails(server, first, 3)
            newest = f"#{first + 2} "
            started = time.monotonic()
            WebDriverWait(browser, CATCH_UP, poll_frequency=0.05).until(
                lambda d, n=newest: n in newest_on_page(d)
            )
            shown = time.monotonic() - started
            caught_up(web, state)
            print(f"  {how}: the open page showed {newest.strip()} after {shown:.2f} s")
            ready_never_lies(web, state, 1.0)
    finally:
        web.stop()
        server.stop()

"""Operations that never claim what they did not check: a replay of a replaced file, fsck
of a PostgreSQL journal it cannot reach, config values out of range, mboxes that are pipes
or compressed under another name, and a state directory frozen under a running bridge."""

from __future__ import annotations

import gzip
import os
import shutil
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.pipeline.backfill import resume_key
from tests.helpers import (
    OFFLINE_TRUST,
    Server,
    bridge,
    config_file,
    free_port,
    require,
    send,
    wait_until,
)
from tests.mails import bug_report
from tests.test_replay_mbox import journal_rows, write_mbox


def bugs_in(state: Path) -> list[int]:
    return [m["bug"] for _, m in journal_rows(state) if "bug" in m]


def replay_mbox(state: Path, *paths: Path, config: Path | None = None):
    args = ["--config", str(config)] if config else []
    return bridge(*args, "--state-dir", str(state), "replay-mbox", *map(str, paths), timeout=120)


# --- replay-mbox: one file's resume point is never another's ---------------------------


def left_off_after(state: Path, path: Path, mails: int) -> None:
    """The journal as an interrupted replay leaves it: *path*'s first *mails* mails
    journaled and its resume point after them."""
    ran = replay_mbox(state, path)
    assert ran.returncode == 0, ran.stderr.decode()
    offsets = [0]
    data = path.read_bytes()
    at = 0
    while (at := data.find(b"\nFrom ", at + 1)) >= 0:
        offsets.append(at + 1)
    with SqliteJournal(state / JOURNAL_FILE) as journal, journal.batch() as batch:
        batch.set_resume_point(resume_key(path), offsets[mails - 1], mails)


def test_a_replaced_file_is_replayed_from_its_start_and_says_so(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "list.mbox"
    write_mbox(path, [bug_report(n) for n in range(1, 11)])
    left_off_after(state, path, 5)
    # another month's archive under the same name
    write_mbox(path, [bug_report(n) for n in range(101, 131)])
    ran = replay_mbox(state, path)
    assert ran.returncode == 0, ran.stderr.decode()
    assert "not the file an interrupted replay left off in" in ran.stderr.decode()
    assert bugs_in(state) == [*range(1, 11), *range(101, 131)]
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        assert journal.resume_points(str(path.resolve())) == []  # forgotten, not left behind


def test_a_grown_file_resumes_where_it_left_off(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "list.mbox"
    first = [bug_report(n) for n in range(1, 11)]
    write_mbox(path, first)
    left_off_after(state, path, 10)
    write_mbox(path, [*first, *(bug_report(n) for n in range(11, 16))])  # the list went on
    ran = bridge("--state-dir", str(state), "replay-mbox", "--json-summary", str(path))
    assert ran.returncode == 0, ran.stderr.decode()
    assert b'"mails": 5' in ran.stdout  # only the new ones were read
    assert bugs_in(state) == list(range(1, 16))


def test_a_pipe_and_a_gzip_file_without_its_suffix_are_replayed(tmp_path):
    state = tmp_path / "state"
    plain = write_mbox(tmp_path / "plain.mbox", [bug_report(n) for n in range(1, 4)])
    packed = tmp_path / "archive.mbox"  # gzip data, no .gz
    packed.write_bytes(gzip.compress(write_mbox(tmp_path / "x", [bug_report(4)]).read_bytes()))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(plain.read_bytes()))
    writer.start()
    ran = replay_mbox(state, fifo, packed)
    writer.join(10)
    assert ran.returncode == 0, ran.stderr.decode()
    assert bugs_in(state) == [1, 2, 3, 4]


def test_a_file_with_no_mail_in_it_is_an_error(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("Shopping list:\n- milk\n- bread\n")
    ran = replay_mbox(tmp_path / "state", junk)
    assert ran.returncode == 1
    assert "holds no mail" in ran.stderr.decode()
    assert replay_mbox(tmp_path / "state", tmp_path).returncode == 2  # a directory


# --- fsck and config -------------------------------------------------------------------


def test_fsck_of_a_postgresql_journal_it_cannot_reach_says_so(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'{OFFLINE_TRUST}\n[journal]\nurl = "postgresql://127.0.0.1:{free_port()}/test"\n'
    )
    ran = bridge("--config", str(config), "--state-dir", str(tmp_path / "s"), "fsck")
    assert ran.returncode == 1
    out = ran.stdout.decode()
    assert "PROBLEM journal postgresql://" in out and "not checked" in out
    assert "sound" not in out


@pytest.mark.parametrize(
    ("section", "line", "says"),
    [
        ("bus", "send_hwm = 9223372036854775807", "'bus.send_hwm' must be from 0 to 2.14748e+09"),
        ("smtp", "command_timeout = nan", "'smtp.command_timeout' must be from 0.1"),
        ("smtp", "data_timeout = -1.0", "'smtp.data_timeout' must be from 0.1"),
        ("web", "page_events = -1", "'web.page_events' must be from 1 to 1000"),
        ("trust", "dns_budget = inf", "'trust.dns_budget' must be from 0.01"),
    ],
)
def test_a_value_out_of_range_is_one_line_and_exit_2_for_every_command(
    tmp_path, section, line, says
):
    config = tmp_path / "bridge.toml"
    config.write_text(f"[{section}]\n{line}\n")
    for command in (["serve"], ["status"], ["query"], ["web"]):
        ran = bridge("--config", str(config), "--state-dir", str(tmp_path / "s"), *command)
        assert ran.returncode == 2, (command, ran.stderr.decode())
        (message,) = ran.stderr.decode().strip().splitlines()
        assert says in message, message


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_bytes(b'[smtp]\nlisten = "127.0.0.1:8025" # caf\xe9\n')
    ran = bridge("--config", str(config), "status")
    assert ran.returncode == 2
    (message,) = ran.stderr.decode().strip().splitlines()
    assert "is not UTF-8" in message


# --- a state directory frozen under a running bridge -----------------------------------


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", "-R", flag, str(path)], check=True, capture_output=True)


@pytest.mark.slow
def test_a_frozen_state_dir_is_451_and_never_kills_the_bridge(tmp_path):
    require(shutil.which("chattr") is not None, "chattr (package e2fsprogs) is not installed")
    probe = tmp_path / "probe"
    probe.touch()
    frozen = subprocess.run(["chattr", "+i", str(probe)], capture_output=True)
    require(frozen.returncode == 0, f"this filesystem has no immutable flag: {frozen.stderr!r}")
    chattr("-i", probe)
    for run in range(5):
        state = tmp_path / f"state{run}"
        server = Server(state, config=config_file(tmp_path)).start()
        server.wait_for_smtp()
        for n in range(1, 4):
            assert send(server, bug_report(n)) == {}
        wait_until(lambda s=state: bugs_in(s) == [1, 2, 3], 30, "the first mails journaled")
        chattr("+i", state)
        codes = []
        try:
            for n in range(10, 30):
                try:
                    send(server, bug_report(n))
                    codes.append(250)
                except smtplib.SMTPResponseException as e:
                    codes.append(e.smtp_code)
                time.sleep(0.05)
            time.sleep(1.5)  # the publisher and the counters try the journal meanwhile
            alive = server.proc.poll() is None
        finally:
            chattr("-i", state)
        assert alive, f"run {run}: the bridge died ({server.proc.returncode}): {server.log_text()}"
        assert set(codes) == {451}, codes
        assert send(server, bug_report(99)) == {}  # unfrozen, it goes on
        wait_until(lambda s=state: 99 in bugs_in(s), 30, "the mail after the thaw journaled")
        assert server.stop() == 0
        assert bugs_in(state) == [1, 2, 3, 99]

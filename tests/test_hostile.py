"""Hostile input against the real server: nothing a sender or a damaged file does stalls it."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import time
from pathlib import Path

import zmq

from bridge.events import Event
from bridge.intake.spool import Spool, encode
from bridge.journal import JOURNAL_FILE, Criteria, SqliteJournal
from tests.helpers import (
    FIXTURES,
    RCPT,
    Server,
    bridge,
    config_file,
    counters,
    journal_events,
    send,
    start_data,
    wait_until,
)
from tests.mails import bug_report

HUGE = "99999999999999999999999"
META = {"peer": ["127.0.0.1", 1], "rcpt_tos": [RCPT]}


def with_header(raw: bytes, name: str, value: str) -> bytes:
    """*raw* with header *name* set to *value* (replaced where present, else added)."""
    pattern = re.compile(rb"^" + name.encode() + rb":[^\r\n]*", re.MULTILINE | re.IGNORECASE)
    line = f"{name}: {value}".encode()
    if pattern.search(raw):
        return pattern.sub(lambda _: line, raw, count=1)
    return line + b"\r\n" + raw


def huge_closes_upload() -> bytes:
    raw = (FIXTURES / "dak" / "accepted-maintainer-copy.eml").read_bytes()
    return raw.replace(b"Closes: 1056001 1056002", f"Closes: {HUGE}".encode())


def failed_reasons(state_dir: Path) -> dict[str, str]:
    folder = state_dir / "spool" / "failed"
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.reason"))}


def bugs_journaled(state_dir: Path) -> list[int]:
    return sorted(e.msg["bug"] for e in journal_events(state_dir) if "bug" in e.msg)


def test_poison_mails_go_to_failed_and_the_mail_after_them_flows(state_dir: Path):
    poisons = [
        with_header(bug_report(700001), "X-Debian-PR-Message", f"report {HUGE}"),
        huge_closes_upload(),
    ]
    awkward = {  # once fatal to the worker; now decoded like any header
        700002: "=?idna?q?abc?=",
        700003: "=?zlib_codec?q?abc?=",
        700004: "=?utf-7?q?+2D0-?=",
    }
    good = list(range(700010, 700015))
    server = Server(state_dir).start()
    try:
        server.wait_for_smtp()
        for raw in poisons:
            assert send(server, raw) == {}
        for bug, message_id in awkward.items():
            assert send(server, with_header(bug_report(bug), "Message-ID", message_id)) == {}
        for bug in good:
            assert send(server, bug_report(bug)) == {}
        wanted = sorted([*awkward, *good])
        wait_until(lambda: bugs_journaled(state_dir) == wanted, 20, "the good mails' events")
        wait_until(lambda: len(failed_reasons(state_dir)) == 2, 10, "two failed mails")
    finally:
        server.stop()
    reasons = list(failed_reasons(state_dir).values())
    assert all("does not fit in 64 bits" in r for r in reasons), reasons
    assert any("body.bug" in r for r in reasons) and any("body.closes" in r for r in reasons)
    ids = {e.msg["bug"]: e.msg["origin"]["message_id"] for e in journal_events(state_dir)}
    assert ids[700002] == ids[700003] == "abc"
    assert ids[700004] == "\ufffd"

    # a restart neither retries the poison nor loses what follows it
    restarted = Server(state_dir).start()
    try:
        restarted.wait_for_smtp()
        assert send(restarted, bug_report(700020)) == {}
        wanted.append(700020)
        wait_until(lambda: bugs_journaled(state_dir) == wanted, 20, "the mail after restart")
    finally:
        restarted.stop()
    assert len(failed_reasons(state_dir)) == 2
    assert "Traceback" not in server.log_text()


def ask_replay(endpoint: str, frames: list[bytes], timeout_ms: int = 5000) -> list[bytes] | None:
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return sock.recv_multipart() if sock.poll(timeout_ms) else None
    finally:
        sock.close()


def test_malformed_and_oversized_replay_requests_leave_the_endpoint_answering(
    state_dir: Path, tmp_path: Path
):
    config = config_file(tmp_path, top="[bus]\nreplay_max_request_bytes = 65536")
    server = Server(state_dir, config=config).start()
    try:
        server.wait_for_smtp()
        assert send(server, bug_report(710001)) == {}
        wait_until(lambda: bugs_journaled(state_dir) == [710001], 20, "the event")
        (two_frames,) = ask_replay(server.replay, [b'{"seq_id": 1}', b"x"])
        assert two_frames.startswith(b"error: ") and b"one frame" in two_frames
        oversized = b'{"msg_ids": ["' + b"x" * 200_000 + b'"]}'
        assert ask_replay(server.replay, [oversized], timeout_ms=1000) is None  # dropped
        (garbage,) = ask_replay(server.replay, [os.urandom(300)])
        assert garbage.startswith(b"error: ")
        (answer,) = ask_replay(server.replay, [b'{"seq_id": 1}'])
        assert json.loads(answer)["msg"]["bug"] == 710001
    finally:
        assert server.stop() == 0


def spool_three_segments(state_dir: Path, bugs: list[int]) -> Spool:
    spool = Spool(state_dir / "spool", segment_bytes=2000)
    spool.start()
    for bug in bugs:
        spool.write_now(META, bug_report(bug))
    spool.close()
    assert len(spool.segment_numbers()) >= 3
    return spool


def flip_bytes(path: Path, offset: int, count: int = 16) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(count)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_damaged_spool_records_are_kept_aside_and_every_valid_one_is_processed(state_dir):
    bugs = list(range(720001, 720013))
    spool = spool_three_segments(state_dir, bugs)
    numbers = spool.segment_numbers()
    older, newest = spool.segment_path(numbers[0]), spool.segment_path(numbers[-1])
    records = spool.read_after(spool.start_position(), limit=100)
    newest_records = [r for r in records if r.segment == numbers[-1]]
    assert len(newest_records) >= 2, "the newest segment needs a record after the damage"
    older_first = [r for r in records if r.segment == numbers[0]][0]
    flip_bytes(older, older_first.offset + 80)  # inside the first mail of the oldest segment
    flip_bytes(newest, newest_records[0].offset + 80)  # inside the newest's first mail
    damaged = {older_first.raw, newest_records[0].raw}
    survivors = sorted(bug for bug, r in zip(bugs, records, strict=True) if r.raw not in damaged)

    server = Server(state_dir).start()
    try:
        server.wait_for_smtp()
        wait_until(lambda: bugs_journaled(state_dir) == survivors, 20, "the valid records")
        assert send(server, bug_report(720100)) == {}  # and the spool takes new mail
        wait_until(lambda: 720100 in bugs_journaled(state_dir), 20, "new mail")
    finally:
        server.stop()
    kept = sorted((state_dir / "spool" / "damaged").glob("*.bin"))
    assert len(kept) == 2
    status = json.loads(bridge("--state-dir", str(state_dir), "status", "--json").stdout)
    assert (status["spool_damaged"], status["counters"]["spool_damaged"]) == (2, 2)
    assert {len(p.read_bytes()) for p in kept} == {len(encode(META, raw)) for raw in damaged}
    log = server.log_text()
    assert log.count("DAMAGED record") == 2
    assert "acknowledged mail" in log and "older segment" not in log


def test_a_wiped_spool_under_a_kept_journal_does_not_skip_new_mail(state_dir: Path):
    spool_three_segments(state_dir, list(range(730001, 730010)))
    server = Server(state_dir).start()
    try:
        server.wait_for_smtp()
        wait_until(lambda: len(bugs_journaled(state_dir)) == 9, 20, "the first mails")
    finally:
        server.stop()
    for segment in (state_dir / "spool" / "segments").iterdir():
        segment.unlink()
    restarted = Server(state_dir).start()
    try:
        restarted.wait_for_smtp()
        assert send(restarted, bug_report(730100)) == {}
        wait_until(lambda: 730100 in bugs_journaled(state_dir), 20, "the mail after the wipe")
    finally:
        restarted.stop()
    assert "it was wiped or replaced" in restarted.log_text()


def damage_journal(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\xa5" * 8192)


def test_a_damaged_journal_is_refused_in_one_line_and_fsck_salvages_it(state_dir: Path):
    journal = SqliteJournal(state_dir / JOURNAL_FILE)
    # random padding: compressed envelopes stay large, so the damage lands among them
    events = [
        Event(
            "test.row",
            {"n": n, "pad": os.urandom(300).hex()},
            dedup_key=f"{n}",
            packages=(f"pkg{n % 7}",),
            bugs=(n,),
            people=(f"p{n % 5}@example.org",),
        )
        for n in range(3000)
    ]
    journal.append(events, "test")
    journal.close()
    damage_journal(state_dir / JOURNAL_FILE)

    served = bridge("--state-dir", str(state_dir), "serve", "--smtp", "127.0.0.1:0")
    assert served.returncode == 3
    (line,) = served.stderr.decode().strip().splitlines()
    assert "journal" in line and "damaged" in line and "bridge fsck --repair" in line

    queried = bridge("--state-dir", str(state_dir), "query", "--limit", "5000")
    assert queried.returncode == 3 and len(queried.stderr.decode().strip().splitlines()) == 1

    checked = bridge("--state-dir", str(state_dir), "fsck")
    assert checked.returncode == 1
    assert "PROBLEM journal" in checked.stdout.decode()

    repaired = bridge("--state-dir", str(state_dir), "fsck", "--repair")
    out = repaired.stdout.decode()
    salvaged = int(re.search(r"(\d+) event\(s\) salvaged", out).group(1))
    lost = re.search(r"LOST seq_id\(s\) ([\d, -]+)", out).group(1)
    lost_ids = {
        n
        for span in lost.split(", ")
        for a, _, b in [span.partition("-")]
        for n in range(int(a), int(b or a) + 1)
    }
    with SqliteJournal(state_dir / JOURNAL_FILE) as healed:
        assert healed.check() == []
        rows = list(healed.envelopes(healed.rows_after(0, limit=10_000)))
        # what the kept rows are found by came with them: lookups and daily counts
        assert healed.count(Criteria(topics=("test",))) == salvaged
        for field, value, n_of in (
            ("people", "p1@example.org", lambda n: n % 5 == 1),
            ("packages", "pkg3", lambda n: n % 7 == 3),
        ):
            found = healed.find(Criteria(**{field: (value,)}), limit=10_000)
            assert sorted(e.seq_id for e in found) == sorted(
                e.seq_id for e in rows if n_of(e.msg["n"])
            )
        some = rows[len(rows) // 2]
        assert [e.seq_id for e in healed.find(Criteria(bugs=(some.msg["n"],)))] == [some.seq_id]
    kept_ids = {e.seq_id for e in rows}
    assert len(rows) == salvaged and lost_ids and not lost_ids & kept_ids
    assert lost_ids | kept_ids == set(range(1, 3001))  # every row accounted for
    assert all(e.msg["n"] == e.seq_id - 1 for e in rows)  # and each kept row is the original
    assert list(state_dir.glob("journal.sqlite3.damaged-*"))


def test_data_has_its_own_deadline_longer_than_the_idle_timeout(state_dir, tmp_path):
    config = config_file(tmp_path, "command_timeout = 1.0\ndata_timeout = 4.0")
    server = Server(state_dir, config=config).start()
    try:
        server.wait_for_smtp()
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as sock:
            start_data(sock)
            started = time.monotonic()
            reply = b""
            sock.settimeout(0.4)
            while not reply and time.monotonic() - started < 15:
                try:
                    sock.sendall(b"X-Slow: one header line at a time\r\n")
                    reply = sock.recv(1024)
                except TimeoutError:
                    continue
                except OSError:
                    break
            took = time.monotonic() - started
        assert reply.startswith(b"421 4.4.2 DATA took too long"), reply
        assert 3.5 < took < 8, took  # not cut by the 1 s idle timer, cut at the 4 s deadline
        wait_until(
            lambda: counters(server).get("data_timeouts") == 1, 20, "one DATA timeout counted"
        )
    finally:
        server.stop()


def test_one_peer_holding_connections_does_not_lock_out_another(state_dir, tmp_path):
    config = config_file(tmp_path, "max_connections = 10\nmax_connections_per_peer = 4")
    server = Server(state_dir, config=config).start()
    held: list[smtplib.SMTP] = []
    try:
        server.wait_for_smtp()
        for _ in range(4):
            held.append(smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10))
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as extra:
            assert extra.recv(1024).startswith(b"421 4.7.0 Too many connections from your host")
        other = smtplib.SMTP(timeout=10, source_address=("127.0.0.2", 0))
        other.connect("127.0.0.1", server.smtp_port)
        assert other.sendmail("a@example.org", [RCPT], bug_report(740001)) == {}
        other.quit()
        wait_until(lambda: bugs_journaled(state_dir) == [740001], 20, "the other peer's mail")
        wait_until(lambda: counters(server).get("refused_connections") == 1, 20, "one refusal")
    finally:
        for client in held:
            client.close()
        server.stop()


def pipeline_child(server: Server) -> int:
    assert server.proc is not None
    (pid,) = [
        pid
        for pid in children_of(server.proc.pid)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return pid


def children_of(parent: int) -> list[int]:
    """Child processes of *parent*, whichever of its threads started them."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_pipeline_is_restarted_while_smtp_keeps_accepting(state_dir: Path):
    server = Server(state_dir).start()
    try:
        server.wait_for_smtp()
        wait_until(lambda: "publishing on" in server.log_text(), 20, "the pipeline")
        first = pipeline_child(server)
        os.kill(first, signal.SIGKILL)
        bugs = list(range(750001, 750006))
        for bug in bugs:  # accepted while no pipeline runs
            assert send(server, bug_report(bug)) == {}
        wait_until(lambda: bugs_journaled(state_dir) == bugs, 30, "mail accepted meanwhile")
        assert pipeline_child(server) != first
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0
    assert "the pipeline process died" in server.log_text()


def test_a_replay_client_that_never_reads_its_answers_does_not_stall_others(state_dir: Path):
    server = Server(state_dir).start()
    context = zmq.Context()
    greedy = context.socket(zmq.DEALER)  # asks and asks, and never reads
    greedy.setsockopt(zmq.RCVHWM, 1)
    greedy.setsockopt(zmq.LINGER, 0)
    try:
        server.wait_for_smtp()
        for bug in range(770001, 770021):
            assert send(server, bug_report(bug, body_bytes=20_000)) == {}
        wait_until(lambda: len(bugs_journaled(state_dir)) == 20, 20, "the events")
        greedy.connect(server.replay)
        for _ in range(500):
            greedy.send_multipart([b"", b'{"seq_id_range": [1, 20]}'])
        started = time.monotonic()
        (answer,) = ask_replay(server.replay, [b'{"seq_id": 3}'])
        assert json.loads(answer)["msg"]["bug"] == 770003
        assert time.monotonic() - started < 10
    finally:
        greedy.close()
        context.term()
        assert server.stop() == 0


def test_fsck_reports_damage_and_a_torn_tail_in_the_spool(state_dir: Path):
    spool = Spool(state_dir / "spool", segment_bytes=100)
    spool.start()
    for n in range(3):
        spool.write_now({"n": n}, b"y" * 150)  # one record per segment
    spool.close()
    first = spool.segment_path(1)
    record_length = first.stat().st_size
    with open(first, "r+b") as fh:  # the end of an older segment: damage, not a torn tail
        fh.seek(-5, 2)
        fh.write(b"zzzzz")
    torn = encode({}, b"never acknowledged")[:-2]
    with open(spool.segment_path(3), "ab") as fh:
        fh.write(torn)
    checked = bridge("--state-dir", str(state_dir), "fsck")
    assert checked.returncode == 1
    assert checked.stdout.decode().splitlines() == [
        f"PROBLEM spool 00000001.log: {record_length} damaged bytes at offset 0 (a record whose"
        " checksum fails); it ends an older segment, which cannot be torn by a crash",
        f"PROBLEM spool 00000003.log: a torn tail of {len(torn)} bytes (a crash mid-write,"
        " never acknowledged; cut at the next start)",
    ]

"""The real server on a free port, a real SMTP client, a real SUB socket, a real spool."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import signal
import smtplib
import socket
import time

import pytest

from bridge.intake.smtp import (
    LINE_TOO_LONG,
    TOO_MUCH_DATA,
    DataReader,
    DataRefused,
    Peers,
    unstuff,
)
from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import (
    FIXTURES,
    RCPT,
    Server,
    Subscriber,
    bridge,
    config_file,
    counters,
    journal_events,
    send,
    start_data,
    wait_until,
)
from tests.mails import bug_report


@pytest.fixture
def server(state_dir):
    server = Server(state_dir).start()
    server.wait_for_smtp()
    yield server
    server.stop()


def test_a_mail_sent_over_smtp_arrives_on_the_bus(server):
    sub = Subscriber(server.publish)
    try:
        sub.warm_up(server.state_dir)
        probes = len(journal_events(server.state_dir))
        assert send(server, bug_report(1056001)) == {}
        received = sub.collect(lambda got: bool(got), timeout=20)
    finally:
        sub.close()
    (envelope,) = received
    assert envelope.topic == "org.debian.dev.debbugs.bug.report"
    assert envelope.msg["bug"] == 1056001
    assert envelope.seq_id == probes + 1 and envelope.msg_id.startswith(time.strftime("%Y-"))
    topic, body = sub.raw[0]
    assert topic == b"org.debian.dev.debbugs.bug.report"
    assert json.loads(body)["msg"]["summary"].startswith("Jane Doe reported #1056001")


def test_other_recipients_are_refused_the_bridge_never_relays(server):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        send(server, bug_report(1), rcpt="postmaster@example.org")
    code, text = info.value.recipients["postmaster@example.org"]
    assert code == 550 and b"relaying denied" in text
    wait_until(lambda: counters(server).get("rejected") == 1, 20, "the refusal counted once")


def test_too_many_recipients_are_refused_with_452(server):
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo()
        client.mail("lists@example.org")
        codes = [client.rcpt(RCPT)[0] for _ in range(1000)]
    assert codes[:100] == [250] * 100
    assert set(codes[100:]) == {452}


def test_an_oversized_mail_gets_552_and_the_server_goes_on(state_dir, tmp_path):
    server = Server(state_dir, config=config_file(tmp_path, "max_message_size = 1048576")).start()
    server.wait_for_smtp()
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
            client.ehlo()
            client.mail("lists@example.org")  # no SIZE= given: the limit bites during DATA
            client.rcpt(RCPT)
            code, _ = client.data(bug_report(2, body_bytes=50 * 1024 * 1024))
        assert code == 552
        assert send(server, bug_report(3)) == {}
    finally:
        server.stop()


def test_a_100kb_line_is_refused_and_the_server_goes_on(server):
    raw = bug_report(4) + b"x" * 100_000 + b"\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        client.ehlo()
        client.mail("lists@example.org")
        client.rcpt(RCPT)
        code, text = client.data(raw)
    assert code == 500 and b"too long" in text.lower()
    assert send(server, bug_report(5)) == {}


def test_garbage_instead_of_smtp_gets_errors_and_the_server_goes_on(server):
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
        raw.recv(1024)
        raw.sendall(b"\x00\xff\xfe GET / HTTP/1.1\r\n\x16\x03\x01 binary junk\r\n")
        replies = raw.recv(4096)  # waits (10 s at most) for the first reply
    assert replies.startswith(b"5")
    assert send(server, bug_report(6)) == {}


def test_a_dribbling_client_is_cut_off_while_others_are_served(state_dir, tmp_path):
    server = Server(state_dir, config=config_file(tmp_path, "command_timeout = 2.0")).start()
    server.wait_for_smtp()
    try:
        dribbler = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10)
        dribbler.recv(1024)
        started = time.monotonic()
        closed = False
        for byte in b"EHLO slowly.example.org\r\n":
            try:
                dribbler.sendall(bytes([byte]))
                if dribbler.recv(1024, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            assert send(server, bug_report(7)) == {}
            time.sleep(0.5)
        assert closed, "the dribbling client was never disconnected"
        assert time.monotonic() - started < 10
    finally:
        dribbler.close()
        server.stop()


def test_a_mail_no_parser_wants_is_kept_in_the_inbox_with_its_reason(server, state_dir):
    assert send(server, b"just some words, no headers at all\r\n") == {}
    inbox = state_dir / "spool" / "inbox"
    wait_until(lambda: list(inbox.glob("*.reason")), 20, "the kept mail")
    (reason,) = inbox.glob("*.reason")
    assert "no parser accepted the mail" in reason.read_text()
    assert b"just some words" in reason.with_suffix(".eml").read_bytes()


def test_a_nearly_full_disk_gives_452_and_nothing_is_lost(state_dir, tmp_path):
    server = Server(
        state_dir, config=config_file(tmp_path, "min_free_bytes = 1000000000000000")
    ).start()
    server.wait_for_smtp()
    try:
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(server, bug_report(8))
        assert info.value.smtp_code == 452
        assert server.proc.poll() is None
        wait_until(lambda: counters(server).get("tempfail") == 1, 20, "one tempfail counted")
    finally:
        server.stop()
    assert journal_events(state_dir) == []


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))


def test_an_unwritable_spool_gives_451_and_the_server_keeps_serving(state_dir):
    # A real write failure: the kernel refuses to grow files past RLIMIT_FSIZE (EFBIG).
    server = Server(state_dir, preexec=_small_file_limit).start()
    server.wait_for_smtp()
    accepted, refused = [], []
    try:
        for bug in range(100, 106):
            try:
                send(server, bug_report(bug, body_bytes=100_000))
                accepted.append(bug)
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451
                refused.append(bug)
        assert refused, "the file size limit never bit"
        wait_until(lambda: counters(server).get("tempfail") == len(refused), 20, "tempfails")
        assert server.proc.poll() is None
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            assert client.noop()[0] == 250
        wait_until(
            lambda: len(journal_events(state_dir)) >= len(accepted), 20, "accepted mails' events"
        )
    finally:
        server.stop()
    assert sorted(e.msg["bug"] for e in journal_events(state_dir)) == accepted


def test_a_locked_journal_delays_events_but_loses_no_mail(server, state_dir):
    journal = SqliteJournal(state_dir / JOURNAL_FILE)
    with journal.batch():  # another process holding the write lock
        assert send(server, bug_report(9)) == {}  # intake depends on the spool only
        time.sleep(1.0)
    wait_until(lambda: len(journal_events(state_dir)) == 1, 30, "the event after the lock")
    journal.close()
    assert journal_events(state_dir)[0].msg["bug"] == 9


def test_sigterm_drains_the_worker_and_exits_cleanly(state_dir):
    server = Server(state_dir).start()
    server.wait_for_smtp()
    for bug in range(200, 220):
        assert send(server, bug_report(bug)) == {}
    assert server.stop() == 0
    assert sorted(e.msg["bug"] for e in journal_events(state_dir)) == list(range(200, 220))
    status = bridge("--state-dir", str(state_dir), "status", "--json")
    report = json.loads(status.stdout)
    assert report["spool_pending"] == 0 and report["last_seq_id"] == 20
    assert report["counters"]["accepted"] == 20 and report["counters"]["events"] == 20


def test_bare_lf_inside_a_crlf_stream_is_kept_and_parsed(server, state_dir):
    # smtplib would normalise line ends; a raw client shows what the server does with bare LF
    mail = bug_report(10).replace(b"\r\n", b"\n")
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
        reader = start_data(raw)
        raw.sendall(mail + b"\r\n.\r\n")
        assert reader.readline().startswith(b"250 ")
    wait_until(lambda: journal_events(state_dir), 20, "the event")
    (event,) = journal_events(state_dir)
    assert event.msg["bug"] == 10 and event.msg["version"] == "2.10-3"


def test_retry_reoffers_failed_mails(state_dir):
    failed = state_dir / "spool" / "failed"
    failed.mkdir(parents=True)
    (failed / "a.eml").write_bytes(bug_report(11))  # as if a parser fix now reads it
    (failed / "a.reason").write_text("debbugs raised KeyError\n")
    broken = FIXTURES / "dak-broken" / "missing-version.eml"
    (failed / "b.eml").write_bytes(broken.read_bytes())
    (failed / "b.reason").write_text("dak: malformed .changes\n")
    result = bridge("--state-dir", str(state_dir), "retry", "--all")
    assert result.returncode == 1
    assert "a.eml: published, 1 new event(s)" in result.stdout.decode()
    assert (
        "b.eml: still failing: dak: malformed .changes: missing Version" in result.stderr.decode()
    )
    assert sorted(p.name for p in failed.iterdir()) == ["b.eml", "b.reason"]
    assert [e.msg["bug"] for e in journal_events(state_dir)] == [11]


def greeting(port: int) -> tuple[socket.socket, bytes]:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    return conn, conn.recv(1024)


def test_connections_over_the_cap_are_told_to_come_back_later(state_dir, tmp_path):
    server = Server(state_dir, config=config_file(tmp_path, "max_connections = 2")).start()
    server.wait_for_smtp()
    held: list[socket.socket] = []

    def hold_up_to_two() -> bool:
        # the listener's own readiness probe may still hold a slot for a moment
        conn, hello = greeting(server.smtp_port)
        if hello.startswith(b"220 "):
            held.append(conn)
        else:
            conn.close()
        return len(held) == 2

    try:
        wait_until(hold_up_to_two, 10, "two connections")
        extra, hello = greeting(server.smtp_port)
        extra.close()
        assert hello.startswith(b"421 ")
        held.pop().close()
        wait_until(lambda: _accepted(server, bug_report(12)), 10, "a slot freed by the close")
        wait_until(lambda: counters(server).get("refused_connections") == 1, 20, "one refusal")
    finally:
        for conn in held:
            conn.close()
        server.stop()


def _accepted(server: Server, raw: bytes) -> bool:
    try:
        return send(server, raw) == {}
    except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected):
        return False  # 421: the freed slot is not free yet


def test_a_data_phase_that_takes_too_long_is_cut_off(state_dir, tmp_path):
    server = Server(state_dir, config=config_file(tmp_path, "data_timeout = 2.0")).start()
    server.wait_for_smtp()
    try:
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
            start_data(raw)
            started = time.monotonic()
            reply = b""
            for _ in range(20):
                try:
                    raw.sendall(b"Subject: one line a second\r\n")
                except OSError:
                    break
                time.sleep(0.5)
                raw.setblocking(False)
                try:
                    reply = raw.recv(1024)
                except BlockingIOError:
                    reply = b""
                finally:
                    raw.setblocking(True)
                if reply:
                    break
            assert reply.startswith(b"421 "), reply
            assert time.monotonic() - started < 6
        assert send(server, bug_report(13)) == {}
    finally:
        server.stop()


def test_recipients_match_without_regard_to_case_and_by_domain(state_dir, tmp_path):
    entries = 'recipients = ["Bridge@Example.ORG", "@lists.example.net"]'
    server = Server(state_dir, config=config_file(tmp_path, entries)).start()
    try:
        server.wait_for_smtp()
        assert send(server, bug_report(790001), rcpt="bridge@example.org") == {}
        assert send(server, bug_report(790002), rcpt="BRIDGE@EXAMPLE.ORG") == {}
        assert send(server, bug_report(790003), rcpt="anyone@Lists.Example.Net") == {}
        for stranger in ("bridge@example.org.evil", "x@sub.lists.example.net", "bridge@localhost"):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(server, bug_report(790009), rcpt=stranger)
        wanted = [790001, 790002, 790003]
        wait_until(
            lambda: sorted(e.msg["bug"] for e in journal_events(state_dir)) == wanted, 20, "mail"
        )
    finally:
        server.stop()


def test_peers_outside_allowed_peers_get_554_at_connect_and_are_counted(state_dir, tmp_path):
    config = config_file(tmp_path, 'allowed_peers = ["127.0.0.1/32"]')
    server = Server(state_dir, config=config).start()
    try:
        server.wait_for_smtp()
        stranger = socket.create_connection(
            ("127.0.0.1", server.smtp_port), timeout=10, source_address=("127.0.0.2", 0)
        )
        with stranger:
            greeting = stranger.recv(1024)
            after = stranger.recv(1024)
        assert greeting == b"554 5.7.1 127.0.0.2 may not send mail to this bridge\r\n"
        assert after == b""  # and the connection is closed
        assert send(server, bug_report(791001)) == {}  # from 127.0.0.1: welcome

        def refused() -> int:
            status = bridge("--state-dir", str(state_dir), "status", "--json")
            return json.loads(status.stdout)["counters"].get("refused_peers", 0)

        wait_until(lambda: refused() == 1, 20, "the refusal to be counted")
    finally:
        server.stop()


def test_a_malformed_allowed_peers_entry_is_a_config_error_in_one_line(tmp_path):
    config = config_file(tmp_path, 'allowed_peers = ["10.0.0.0/33"]')
    result = bridge("--config", str(config), "status")
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert "smtp.allowed_peers" in line and "10.0.0.0/33" in line


def test_allowed_peers_match_addresses_and_refuse_what_is_no_address():
    peers = Peers(["127.0.0.1/8", "2001:db8::/32"])  # host bits in a network are tolerated
    assert "127.0.0.9" in peers and "::ffff:127.0.0.9" in peers and "2001:db8::1" in peers
    assert "10.0.0.1" not in peers and "::1" not in peers
    assert "" not in peers and "not-an-address" not in peers  # a unix socket, say


def test_after_a_quick_data_the_session_is_idle_timed_not_data_timed(state_dir, tmp_path):
    config = config_file(tmp_path, "command_timeout = 1.5\ndata_timeout = 1.0")
    server = Server(state_dir, config=config).start()
    try:
        server.wait_for_smtp()
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
            reader = start_data(raw)
            raw.sendall(bug_report(792001) + b"\r\n.\r\n")
            assert reader.readline().startswith(b"250 ")
            started = time.monotonic()
            # silent after its DATA: the DATA deadline (1 s) is over, the idle timer (1.5 s),
            # re-armed, is what ends the session
            closing = reader.readline()
            assert closing.startswith(b"421 4.4.2 Idle for too long"), closing
            assert 1.2 < time.monotonic() - started < 6
        wait_until(lambda: counters(server).get("idle_timeouts") == 1, 20, "one idle timeout")
        assert "data_timeouts" not in counters(server)
    finally:
        server.stop()


def test_sigterm_lets_the_transaction_in_flight_finish_and_takes_no_new_one(state_dir):
    server = Server(state_dir).start()
    try:
        server.wait_for_smtp()
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
            reader = start_data(raw)
            raw.sendall(bug_report(792101)[:200])  # half a mail
            server.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "stopping" in server.log_text(), 10, "the stop to begin")
            with pytest.raises(OSError):  # the listener is closed: no new sessions
                socket.create_connection(("127.0.0.1", server.smtp_port), timeout=2).recv(1)
            raw.sendall(bug_report(792101)[200:] + b"\r\n.\r\n")
            assert reader.readline().startswith(b"250 ")  # the mail in flight is accepted
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    assert [e.msg["bug"] for e in journal_events(state_dir)] == [792101]


# -- reading DATA: a run of lines per wake-up, the end found wherever the stream splits it -----

# DATA as a client sends it (dot-stuffed, ended by "." alone on a line), then what the client
# pipelines after it; the mail the server must keep is written out by hand from each.
DATA_STREAMS = [
    # (sent, kept)
    (b".\r\n", b""),  # an empty mail
    (b"one line\r\n.\r\n", b"one line\r\n"),
    (b"ends in a full stop.\r\nand again.\r\n.\r\n", b"ends in a full stop.\r\nand again.\r\n"),
    (b"..\r\n...\r\n..x\r\n.\r\n", b".\r\n..\r\n.x\r\n"),  # stuffed lines: one dot taken off
    (b"a.\r\n.\r\n", b"a.\r\n"),
    (b"x\r\n\r\n.\r\n", b"x\r\n\r\n"),  # an empty last line
    (b"bare\nLF.\n.\nstill one line\r\n.\r\n", b"bare\nLF.\n.\nstill one line\r\n"),
    (
        b"no dots at all, " * 300 + b"\r\n" + b"a line\r\n" * 400 + b".\r\n",
        b"no dots at all, " * 300 + b"\r\n" + b"a line\r\n" * 400,
    ),
]
PIPELINED = b"MAIL FROM:<next@example.org>\r\n"


def _read_data(sent: bytes, pieces: list[int], size_limit: int | None = None) -> tuple:
    """Feed *sent* + a pipelined command to a stream in pieces of the given sizes, as the
    socket might deliver it; the reader's result (or refusal) and what it left in the stream."""

    async def run() -> tuple:
        stream = asyncio.StreamReader(limit=8000)
        reader = DataReader(stream, size_limit, line_limit=8000)
        reading = asyncio.ensure_future(reader.read())
        data, at = sent + PIPELINED, 0
        for size in pieces:
            stream.feed_data(data[at : at + size])
            at += size
            await asyncio.sleep(0)
        stream.feed_data(data[at:])
        stream.feed_eof()
        try:
            result: bytes | str = await reading
        except DataRefused as refusal:
            result = refusal.reply
        return result, await stream.read()

    return asyncio.run(run())


@pytest.mark.parametrize("sent, kept", DATA_STREAMS)
def test_data_ends_at_the_lone_dot_however_the_stream_is_split(sent, kept):
    rng = random.Random(len(sent))
    splits = {
        "whole": [],
        "byte by byte": [1] * (len(sent) + 5),
        "at random": [rng.randint(1, 9) for _ in range(len(sent) // 3)],
    }
    for how, pieces in splits.items():
        content, left = _read_data(sent, pieces)
        assert unstuff(content) == kept, how
        assert left == PIPELINED, how  # the next command stays for the command loop


def test_data_over_the_size_limit_is_read_to_its_end_then_refused():
    sent = b"0123456789\r\n" * 1000 + b".\r\n"
    assert _read_data(sent, [100] * 50, size_limit=12_000) == (b"0123456789\r\n" * 1000, PIPELINED)
    assert _read_data(sent, [100] * 50, size_limit=11_999) == (TOO_MUCH_DATA, PIPELINED)


def test_a_line_over_the_limit_is_refused_whether_or_not_the_size_is_too():
    long_line = b"x" * 8000 + b"\r\n"
    assert _read_data(b"short\r\n" + long_line + b".\r\n", [512] * 20) == (
        LINE_TOO_LONG,
        PIPELINED,
    )
    # over both limits: the long line came first, and is what the client is told
    sent = long_line + b"y\r\n" * 5000 + b".\r\n"
    assert _read_data(sent, [512] * 20, size_limit=9000) == (LINE_TOO_LONG, PIPELINED)


def test_pipelined_mails_over_one_connection_are_kept_byte_for_byte(server, state_dir):
    # no parser wants these, so the inbox keeps each exactly as the server read it
    first, _ = DATA_STREAMS[3]
    second = b"Subject: second\r\n\r\nthe end.\r\n.\r\n"
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as raw:
        reader = start_data(raw)
        # RFC 2920: the next transaction's commands may follow the end of the mail at once
        raw.sendall(first + f"MAIL FROM:<l@example.org>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
        replies = [reader.readline() for _ in range(4)]
        assert [r[:4] for r in replies] == [b"250 ", b"250 ", b"250 ", b"354 "], replies
        raw.sendall(second + b"QUIT\r\n")
        assert reader.readline().startswith(b"250 ")
        assert reader.readline().startswith(b"221 ")
    inbox = state_dir / "spool" / "inbox"
    wait_until(lambda: len(list(inbox.glob("*.eml"))) == 2, 20, "the two kept mails")
    kept = sorted(path.read_bytes() for path in inbox.glob("*.eml"))
    assert kept == sorted([b".\r\n..\r\n.x\r\n", b"Subject: second\r\n\r\nthe end.\r\n"])

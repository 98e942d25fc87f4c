"""The bridge behind a real postfix: mail survives the bridge being killed and stopped
(postfix queues and retries, nothing bounces), and the operator's inbox forwards through it."""

from __future__ import annotations

import json
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from bridge.mail import strip_from_line
from tests.helpers import (
    CORPUS,
    FIXTURES,
    PROBE_TOPIC,
    Server,
    bridge,
    config_file,
    journal_events,
    wait_until,
)
from tests.mails import bug_report
from tests.postfix import BRIDGE_ADDRESS, Postfix


def behind_postfix(tmp_path: Path) -> tuple[Server, Postfix, Path]:
    """A bridge (not started yet) for the postfix address, and a postfix routing it there."""
    state = tmp_path / "state"
    server = Server(state)
    postfix = Postfix(server.smtp_port)
    server.config = config_file(
        tmp_path,
        smtp=f'recipients = ["{BRIDGE_ADDRESS}"]\n',
        top=f'[inbox]\nsmtp = "127.0.0.1:{postfix.port}"\n',
    )
    return server, postfix, server.config


def submit(postfix: Postfix, mails: list[bytes], progress: list[int]) -> None:
    """Hand *mails* to postfix for the bridge's address, as a list server would."""
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=60) as smtp:
        for raw in mails:
            wire = strip_from_line(raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            smtp.sendmail("lists@lists.debian.org", [BRIDGE_ADDRESS], wire)
            progress[0] += 1


def expected_facts(tmp_path: Path, mails: list[bytes]) -> int:
    """The events these mails give, by the parsers alone (``bridge parse``)."""
    folder = tmp_path / "expected"
    folder.mkdir()
    paths = []
    for n, raw in enumerate(mails):
        path = folder / f"{n}.eml"
        path.write_bytes(strip_from_line(raw))
        paths.append(str(path))
    keys = set()
    for start in range(0, len(paths), 500):
        out = bridge("parse", *paths[start : start + 500], timeout=300).stdout.decode()
        keys |= {(e["topic"], e["dedup_key"]) for e in map(json.loads, out.splitlines())}
    return len(keys)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_twice_and_stopped_for_20s_behind_postfix_every_mail_gives_one_event(tmp_path):
    server, postfix, config = behind_postfix(tmp_path)
    state = server.state_dir
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("mails/*/*.eml"))]
    mails = (corpus + [bug_report(1_500_000 + n) for n in range(1000)])[:1000]
    expected = expected_facts(tmp_path, mails)
    server.start()
    server.wait_for_smtp()
    postfix.start()
    progress = [0]
    submitter = threading.Thread(target=submit, args=(postfix, mails, progress))
    try:
        submitter.start()
        for kill_at in (200, 500):
            wait_until(lambda k=kill_at: facts(state) >= k, 120, f"{kill_at} events")
            server.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            server.proc.wait(10)  # type: ignore[union-attr]
            server.start()  # the same port: postfix's route stays right
        wait_until(lambda: facts(state) >= 700, 120, "700 events")
        assert server.stop() == 0
        time.sleep(20)  # postfix keeps the mail queued meanwhile
        server.start()
        submitter.join(300)
        assert progress[0] == 1000
        postfix.flush()
        wait_until(lambda: postfix.queue_size() == 0, 180, "postfix's queue to empty")
        wait_until(lambda: facts(state) >= expected, 120, f"{expected} events")
    finally:
        server.stop()
        log = postfix.log_text()
        postfix.stop()
    assert facts(state) == expected  # each fact once, whatever postfix had to retry
    deliveries = [line for line in log.splitlines() if f"to=<{BRIDGE_ADDRESS}>" in line]
    statuses = {line.split("status=")[1].split()[0] for line in deliveries if "status=" in line}
    assert statuses <= {"sent", "deferred"} and "sent" in statuses, statuses
    assert "bounced" not in log
    deferred = sum("status=deferred" in d for d in deliveries)
    sent = sum("status=sent" in d for d in deliveries)
    print(f"\n{deferred} deferrals, {sent} deliveries, {expected} events")


def facts(state: Path) -> int:
    try:
        return sum(1 for e in journal_events(state) if not e.topic.endswith(PROBE_TOPIC))
    except Exception:  # the journal is being created
        return 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_list_confirmation_waits_in_the_inbox_and_is_forwarded_through_postfix(tmp_path):
    server, postfix, config = behind_postfix(tmp_path)
    state = server.state_dir
    confirmation = (FIXTURES / "inbox" / "list-confirmation.eml").read_bytes()
    server.start()
    server.wait_for_smtp()
    postfix.start()
    try:
        submit(postfix, [confirmation], [0])

        def listed() -> list[str]:
            out = bridge("--config", str(config), "--state-dir", str(state), "inbox", "list")
            return out.stdout.decode().splitlines()

        wait_until(lambda: bool(listed()), 60, "the confirmation in the inbox")
        (line,) = listed()
        assert "confirm subscription of bridge@lists.example.org" in line
        assert "no parser accepted the mail" in line
        status = json.loads(
            bridge("--config", str(config), "--state-dir", str(state), "status", "--json").stdout
        )
        assert status["inbox_waiting"] == 1
        inbox_id = line.split()[0]
        sent = bridge("--config", str(config), "--state-dir", str(state), "inbox", "forward",
                      inbox_id, "nobody@localhost")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        mailbox = postfix.mail / "nobody"
        wait_until(mailbox.exists, 30, "postfix's local delivery")
        delivered = mailbox.read_text(errors="replace")
        after = bridge("--config", str(config), "--state-dir", str(state), "inbox", "list")
    finally:
        server.stop()
        postfix.stop()
    assert "Resent-To: nobody@localhost" in delivered
    assert "confirm 8f1c2a9d7e0b4c35" in delivered
    assert "[forwarded to nobody@localhost at" in after.stdout.decode()

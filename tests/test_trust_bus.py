"""Forged mail sent over SMTP to a running bridge: marked, held, released once, and never
winning over the real mail it imitates."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE
from tests import dkimkit
from tests.helpers import (
    Server,
    Subscriber,
    bridge,
    config_file,
    counters,
    journal_events,
    send,
    sql,
    wait_until,
)
from tests.test_openpgp import CHANGES, accepted_mail
from tests.test_trust import BTS, CLOSURE, FOLLOWUP

FORGED_CLOSURE = CLOSURE.replace(
    b"which is due to be installed", b"which is due to be installed, trust me"
)
FORGED_ACCEPTANCE = accepted_mail(CHANGES.format(uid="Mallory <mallory@example.org>"))


def serve(tmp_path: Path, policy: str = "") -> Server:
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS)
    trust = f'dkim_keys = "{keys}"\nkeyrings = []\n' + (
        f"[trust.policy]\n{policy}" if policy else ""
    )
    state = tmp_path / "state"
    server = Server(state, config=config_file(tmp_path, trust=trust)).start()
    server.wait_for_smtp()
    return server


def by_topic(envelopes, suffix: str):
    return [e for e in envelopes if e.topic.endswith(suffix)]


def test_forgeries_are_published_marked_under_mark(tmp_path):
    server = serve(tmp_path)
    sub = Subscriber(server.publish)
    try:
        sub.warm_up(server.state_dir)
        for raw in (FORGED_CLOSURE, FORGED_ACCEPTANCE, dkimkit.sign(FOLLOWUP, BTS)):
            assert send(server, raw) == {}
        received = sub.collect(lambda got: len(got) >= 3, timeout=30)
    finally:
        sub.close()
        server.stop()
    verdicts = {e.topic.split(".", 3)[3]: e.msg["origin"]["auth"] for e in received}
    assert verdicts["debbugs.bug.closed"]["verdict"] == "none"
    assert verdicts["debbugs.bug.closed"]["reason"] == "no DKIM signature"
    assert verdicts["dak.upload.accepted"]["verdict"] == "none"
    assert verdicts["debbugs.bug.followup"]["verdict"] == "pass"


def held_ids(state: Path) -> list[str]:
    listing = bridge("--state-dir", str(state), "held", "list")
    assert listing.returncode == 0, listing.stderr
    return [line.split()[0] for line in listing.stdout.decode().splitlines()]


@pytest.mark.slow
def test_held_forgeries_wait_for_an_operator_and_are_released_exactly_once(tmp_path):
    server = serve(tmp_path, 'debbugs = "hold"\ndak = "hold"\n')
    state = server.state_dir
    sub = Subscriber(server.publish)
    try:
        sub.warm_up(state)
        for raw in (FORGED_CLOSURE, FORGED_ACCEPTANCE, dkimkit.sign(FOLLOWUP, BTS)):
            assert send(server, raw) == {}
        # the signed follow-up passes and goes out; the forgeries do not
        received = sub.collect(lambda got: len(got) >= 1, timeout=30)
        wait_until(lambda: counters(server).get("held") == 2, 20, "two held mails")
        assert [e.topic.rsplit(".", 1)[1] for e in received] == ["followup"]
        ids = held_ids(state)
        assert len(ids) == 2
        listing = bridge("--state-dir", str(state), "held", "list").stdout.decode()
        assert "trust verdict none (no DKIM signature); policy hold" in listing
        closure_id = next(
            i
            for i in ids
            if "debbugs"
            in bridge("--state-dir", str(state), "held", "show", i)
            .stdout.decode()
            .split("\n", 1)[0]
        )
        released = bridge("--state-dir", str(state), "held", "release", closure_id)
        assert released.returncode == 0, released.stderr
        assert b"1 event(s) published" in released.stdout
        again = bridge("--state-dir", str(state), "held", "release", closure_id)
        assert again.returncode == 2 and b"no held mail" in again.stderr
        received = sub.collect(lambda got: len(got) >= 2, timeout=30)
    finally:
        sub.close()
        server.stop()
    (closed,) = by_topic(received, "closed")
    assert closed.msg["origin"]["auth"]["verdict"] == "none"  # released, still marked
    # held mail survives a restart; released while the bridge is down, it goes out on start
    (dak_id,) = held_ids(state)
    assert bridge("--state-dir", str(state), "held", "release", dak_id).returncode == 0
    assert held_ids(state) == []
    (accepted,) = by_topic(journal_events(state), "accepted")
    server = Server(state, config=server.config).start()
    try:
        wait_until(
            lambda: (
                sql(state / JOURNAL_FILE, "SELECT seq_id FROM cursors WHERE name = 'publisher'")
                == [(accepted.seq_id,)]
            ),
            30,
            "the publisher to send the released event",
        )
    finally:
        server.stop()
    events = journal_events(state)
    assert len(by_topic(events, "closed")) == 1 and len(by_topic(events, "accepted")) == 1


def test_a_forgery_that_reuses_a_real_handler_id_is_superseded_by_the_real_mail(tmp_path):
    server = serve(tmp_path)
    sub = Subscriber(server.publish)
    try:
        sub.warm_up(server.state_dir)
        assert send(server, FORGED_CLOSURE) == {}  # first, with the real mail's Message-ID
        sub.collect(lambda got: len(got) >= 1, timeout=30)
        assert send(server, dkimkit.sign(CLOSURE, BTS)) == {}
        received = sub.collect(lambda got: len(got) >= 2, timeout=30)
    finally:
        sub.close()
        server.stop()
    forged, real = by_topic(received, "closed")
    assert forged.msg["origin"]["auth"]["verdict"] == "none"
    assert "trust me" in forged.msg["body"]
    assert real.msg["origin"]["auth"]["verdict"] == "pass"
    assert real.supersedes == forged.msg_id and forged.supersedes is None
    # both stay on record
    assert [e.msg_id for e in by_topic(journal_events(server.state_dir), "closed")] == [
        forged.msg_id,
        real.msg_id,
    ]


def test_an_operator_drops_a_held_mail_into_rejected(tmp_path):
    from bridge.intake.spool import Spool

    state = tmp_path / "state"
    spool = Spool(state / "spool")
    spool.keep("held", "0000000100000000", FORGED_CLOSURE, {"peer": "127.0.0.1"}, "held: why")
    spool.close()
    assert held_ids(state) == ["0000000100000000"]
    dropped = bridge("--state-dir", str(state), "held", "drop", "0000000100000000")
    assert dropped.returncode == 0, dropped.stderr
    assert held_ids(state) == []
    rejected = state / "spool" / "rejected"
    assert (rejected / "0000000100000000.eml").read_bytes() == FORGED_CLOSURE
    reason = (rejected / "0000000100000000.reason").read_text()
    assert reason.startswith("dropped from held/ by an operator\nheld: why")
    missing = bridge("--state-dir", str(state), "held", "show", "nope")
    assert missing.returncode == 2 and missing.stderr.count(b"\n") == 1

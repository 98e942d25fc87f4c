"""``bridge notify``: rules over the journal delivered to real destinations (a signed
webhook endpoint of the test's own, a postfix mailbox, Debian's ngircd), from mail sent
over SMTP through a real ``bridge serve``; what a rule matches checked against ``bridge
query`` with the same filters; and ``preview``, ``status``, ``/v1/feed`` and the rule page."""

from __future__ import annotations

import json
import mailbox
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from bridge.events import Event, Naming
from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.notify.destinations import sign_webhook
from bridge.notify.follow import period_end
from bridge.notify.irc import FloodControl
from tests import dkimkit
from tests.helpers import OFFLINE_TRUST, Server, bridge, send, wait_until
from tests.mails import bug_report
from tests.notifykit import (
    SECRET,
    IrcListener,
    Ngircd,
    Notifier,
    WebhookReceiver,
    faketime_env,
    offset_to_minute,
)
from tests.postfix import Postfix
from tests.test_trust import BTS, CLOSURE, FOLLOWUP
from tests.web import WebServer

ATOM = "{http://www.w3.org/2005/Atom}"


def write_config(path: Path, body: str, trust: str = "") -> Path:
    path.write_text(f"{OFFLINE_TRUST}{trust}\n{body}")
    return path


def rule(name: str, deliver: str, **keys: Any) -> str:
    lines = [f"[notify.rules.{name}]", f"deliver = {json.dumps(deliver)}"]
    for key, value in keys.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


# -- the parts, against references that are not the bridge's ---------------------------------


def test_the_webhook_signature_is_the_standard_webhooks_reference_vector():
    # the test vector of the Standard Webhooks specification (its libraries test with it)
    signature = sign_webhook(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_flood_control_lets_a_burst_through_then_paces_the_rest():
    now = [100.0]
    flood = FloodControl(burst=3, interval=2.0, clock=lambda: now[0])
    assert [flood.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert flood.delay() == pytest.approx(2.0)  # the fourth waits one interval
    now[0] += 2.0  # it waited
    assert flood.delay() == pytest.approx(2.0)  # and so does the fifth, after it
    now[0] += 60.0  # a quiet minute fills the bucket again, up to the burst
    assert [flood.delay() for _ in range(4)][:3] == [0.0, 0.0, 0.0]


def test_digests_fall_due_at_the_end_of_the_hour_or_the_utc_day():
    at = 1_700_000_123  # 2023-11-14 22:15:23 UTC
    assert period_end(at, 3600) == 1_700_002_800  # 23:00:00
    assert period_end(at, 86400) == 1_700_006_400  # 2023-11-15 00:00:00


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        (rule("r", "ftp://example.org"), "'notify.rules.r.deliver' must be mailto:"),
        (rule("r", "https://example.org/hook"), "'notify.rules.r.secret' must be whsec_"),
        (rule("r", "mailto:a@example.org", digest="weekly"), "must be one of none, hourly, daily"),
        (rule("r", "mailto:a@example.org", auth=["good"]), "verdicts are pass, fail, none"),
        (rule("r", "mailto:a@example.org", contains=["x"]), "When using contains, specify"),
        (rule("r", "mailto:a@example.org", bug=["12x"]), "bug must be a bug number"),
        (rule("r", "mailto:a@example.org", rate_period=0.5), "rate_period' must be from 1"),
        (rule("r", "mailto:a@example.org", colour="red"), "unknown config key 'notify.rules.r"),
    ],
)
def test_a_bad_rule_is_one_line_naming_its_key_for_every_command(tmp_path, rules, says):
    config = write_config(tmp_path / "bridge.toml", rules)
    for command in (["status"], ["notify", "status"], ["query"]):
        result = bridge("--config", str(config), "--state-dir", str(tmp_path / "s"), *command)
        err = result.stderr.decode()
        assert result.returncode != 0 and says in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


# -- over SMTP, to a webhook ----------------------------------------------------------------


def test_a_package_rule_gets_its_events_once_each_across_a_sigkill_and_no_forgery(tmp_path):
    receiver = WebhookReceiver(delay=0.15)  # slow enough to be killed mid-stream
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS)
    config = write_config(
        tmp_path / "bridge.toml",
        rule("hello", receiver.url("/hello"), package=["hello"], secret=SECRET)
        + rule(
            "closures",
            receiver.url("/closures"),
            topic=["debbugs.bug.closed"],
            auth=["pass"],
            secret=SECRET,
        )
        + rule("all-closures", receiver.url("/all"), topic=["debbugs.bug.closed"], secret=SECRET)
        + "[notify]\npoll_interval = 0.1\n",
        trust=f'dkim_keys = "{keys}"\nkeyrings = []\n',
    )
    state = tmp_path / "state"
    server = Server(state, config=config).start()
    notifier = Notifier(state, config)
    try:
        server.wait_for_smtp()
        notifier.start()  # the rules start at the journal's end: before any mail
        genuine_closure = dkimkit.sign(CLOSURE, BTS)  # roundcube's, signed by the BTS
        # the forgery of the trust tests: a follow-up whose unsigned header says "closed"
        forged_closure = dkimkit.sign(FOLLOWUP, BTS).replace(
            b"X-Debian-PR-Message: followup", b"X-Debian-PR-Message: closed"
        )
        mails = []
        for n in range(12):
            mails.append(bug_report(1_100_000 + n, package="hello"))
            mails.append(bug_report(1_200_000 + n, package="other"))
        mails[7:7] = [genuine_closure, forged_closure]
        for raw in mails:
            send(server, raw)
        hello_mails = 12 + 1  # the hello reports, and the forged closure (about hello)

        wait_until(lambda: len(receiver.events_at("/hello")) >= 4, 60, "the first deliveries")
        notifier.kill()
        first_run = len(receiver.at("/hello"))
        notifier.start()
        wait_until(
            lambda: (
                len(receiver.events_at("/hello")) == hello_mails
                and len(receiver.events_at("/all")) == 2
                and len(receiver.events_at("/closures")) == 1
            ),
            90,
            f"every delivery; log: {notifier.log_text()[-3000:]}",
        )
        time.sleep(1.0)  # a delivery too many would have arrived by now
    finally:
        notifier.stop()
        server.stop()
        receiver.close()

    with SqliteJournal(state / JOURNAL_FILE) as journal:
        journaled = list(journal.envelopes(journal.rows_after(0, limit=1000)))
    assert len(journaled) == len(mails)
    hello = {e.msg_id for e in journaled if "hello" in e.packages}
    assert len(hello) == hello_mails
    delivered = receiver.at("/hello")
    assert set(receiver.events_at("/hello")) == hello  # every one, nothing of "other"
    # at least once on the wire: a repeat (the notice in flight at the SIGKILL) carries the
    # id it carried the first time, so the receiver drops it; no event has two ids
    ids_of: dict[str, set[str]] = {}
    for webhook_id, payload in delivered:
        ids_of.setdefault(payload["data"]["event"]["msg_id"], set()).add(webhook_id)
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert len(delivered) - len(hello) <= 1, "more than the one notice in flight was repeated"
    assert first_run >= 4 and receiver.refused == []

    closures = {e.msg_id: e for e in journaled if e.topic.endswith("debbugs.bug.closed")}
    verdicts = {m: e.msg["origin"]["auth"]["verdict"] for m, e in closures.items()}
    assert sorted(verdicts.values()) == ["fail", "pass"]
    assert set(receiver.events_at("/all")) == set(closures)  # both are closures
    (passed,) = receiver.events_at("/closures").values()  # the forgery is not among them
    assert verdicts[passed["msg_id"]] == "pass"
    assert passed["msg"]["packages"] == ["roundcube"]
    # one event, two rules: two ids (an id is per event and rule)
    assert receiver.at("/closures")[0][0] != next(
        i for i, p in receiver.at("/all") if p["data"]["event"]["msg_id"] == passed["msg_id"]
    )

    status = bridge(
        "--config", str(config), "--state-dir", str(state), "notify", "status", "--json"
    )
    entries = {e["rule"]: e for e in map(json.loads, status.stdout.decode().splitlines())}
    assert entries["hello"]["events"] >= hello_mails and entries["hello"]["failed"] == 0
    assert entries["closures"]["events"] == 1 and entries["closures"]["lag"] == 0


def test_a_failing_webhook_is_retried_then_disabled_shown_and_enabled_again(tmp_path):
    receiver = WebhookReceiver()
    receiver.failing = True
    config = write_config(
        tmp_path / "bridge.toml",
        rule("hook", receiver.url("/hook"), start="beginning", secret=SECRET)
        + "[notify]\npoll_interval = 0.1\ndisable_after = 3.0\n",
    )
    state = tmp_path / "state"
    append_reports(state, 2)
    notifier = Notifier(state, config).start()
    try:
        wait_until(lambda: "is disabled" in notifier.log_text(), 30, "the rule to be disabled")
        status = bridge("--config", str(config), "--state-dir", str(state), "notify", "status")
        line = status.stdout.decode()
        assert "hook: DISABLED since" in line and "0 delivered" in line, line
        failed = int(line.split(" failed")[0].rsplit(" ", 1)[1])
        assert failed >= 2  # retried before giving up
        web = WebServer(state, config).start()
        try:
            metrics = web.get("/metrics").body.decode()
        finally:
            web.stop()
        assert 'bridge_notify_disabled{rule="hook"} 1.0' in metrics
        assert f'bridge_notify_failed_total{{rule="hook"}} {failed}.0' in metrics
        assert 'bridge_notify_lag{rule="hook"} 2.0' in metrics
        receiver.failing = False
        enabled = bridge(
            "--config", str(config), "--state-dir", str(state), "notify", "enable", "hook"
        )
        assert enabled.returncode == 0, enabled.stderr
        wait_until(lambda: len(receiver.events_at("/hook")) == 2, 30, "deliveries once enabled")
    finally:
        notifier.stop()
        receiver.close()
    assert "did not take the notice" in notifier.log_text()


def append_reports(state: Path, count: int, package: str = "hello", first_bug: int = 1_300_000):
    """*count* bug reports journaled directly (their parsing is tested elsewhere)."""
    state.mkdir(parents=True, exist_ok=True)
    with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
        events = [
            Event(
                "debbugs.bug.report",
                {
                    "summary": f"#{first_bug + n} {package}: report {n}",
                    "url": f"https://bugs.debian.org/{first_bug + n}",
                    "origin": {"auth": {"verdict": "pass"}},
                },
                dedup_key=f"report-{first_bug + n}",
                packages=(package,),
                bugs=(first_bug + n,),
            )
            for n in range(count)
        ]
        journal.append(events, "test")


# -- mail through postfix: a digest, and a rate limit -----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_hourly_digest_is_one_mail_and_a_rate_limit_holds_the_rest_in_one_notice(tmp_path):
    postfix = Postfix(bridge_port=1).start()  # the bridge's own address is not used here
    mailbox_file = postfix.mail / "nobody"
    config = write_config(
        tmp_path / "bridge.toml",
        rule("hourly", "mailto:nobody@localhost", package=["hello"], digest="hourly")
        + rule(
            "limited",
            "mailto:nobody@localhost",
            package=["other"],
            rate_limit=5,
            rate_period=60.0,
        )
        + f'[notify]\nsmtp = "127.0.0.1:{postfix.port}"\nsender = "bus@bridge-test.example"\n'
        "poll_interval = 0.2\n",
    )
    state = tmp_path / "state"
    # the notifier's hour must not end before the test asks it to: its clock starts at
    # five past (the real one once crossed the hour here, and the digest went out early)
    five_past = offset_to_minute(5)
    notifier = Notifier(state, config, env=faketime_env(five_past))

    def mails() -> list[Any]:
        postfix.flush()
        if not mailbox_file.exists():
            return []
        return [
            message_from_bytes(m.as_bytes(), policy=policy.default)
            for m in mailbox.mbox(mailbox_file)
        ]

    try:
        append_reports(state, 1, package="nothing")  # the rules start after this one
        notifier.start()
        append_reports(state, 30, package="hello", first_bug=1_400_000)
        append_reports(state, 20, package="other", first_bug=1_500_000)
        wait_until(lambda: len(mails()) >= 5, 60, f"5 mails; {postfix.log_text()[-2000:]}")
        time.sleep(3)
        at_the_limit = mails()
        wait_until(lambda: len(mails()) == 6, 90, "the held notice once the minute is over")
        notifier.stop()
        # the digest waits for the end of its hour: run the notifier again two hours later
        assert "digest begun, due at" in notifier.log_text()
        notifier.env = faketime_env(five_past + 2 * 3600)
        notifier.start()
        wait_until(lambda: len(mails()) == 7, 60, f"the digest; {notifier.log_text()[-2000:]}")
        time.sleep(2)
        delivered = mails()
    finally:
        notifier.stop()
        postfix.stop()

    assert len(at_the_limit) == 5  # the limit: the other 15 were held
    assert len(delivered) == 7
    singles = delivered[:5]
    (held,) = [m for m in delivered if "over its rate limit" in m["Subject"]]
    (digest,) = [m for m in delivered if "rule hourly" in m["Subject"]]
    assert [m["X-Debian-Bus-Rule"] for m in singles] == ["limited"] * 5
    # the first five, one mail each (the MTA delivers mail in parallel: in any order)
    assert sorted(m["Subject"] for m in singles) == [
        f"[debian-bus] #{1_500_000 + n} other: report {n}" for n in range(5)
    ]
    assert held["Subject"] == (
        "[debian-bus] 15 more events matched rule limited (over its rate limit)"
    )
    held_text = held.get_content()
    assert [f"#{1_500_000 + n} other" in held_text for n in range(20)] == [False] * 5 + [True] * 15
    assert digest["Subject"] == "[debian-bus] 30 events matched rule hourly"
    text = digest.get_content()
    assert all(f"https://bugs.debian.org/{1_400_000 + n}" in text for n in range(30))
    for message in delivered:
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["List-Id"].endswith(".notify.bridge-test.example>")
        assert message["From"] == "bus@bridge-test.example"
        assert "to stop, ask its operator to remove [notify.rules." in message.get_content()
    # a notice sent again would carry the same Message-ID: all of these differ
    assert len({m["Message-ID"] for m in delivered}) == 7


# -- IRC, against Debian's ngircd ----------------------------------------------------------


def test_an_upload_feed_rule_speaks_its_lines_in_order_on_irc_under_flood_control(tmp_path):
    ircd = Ngircd().start()
    listener = IrcListener(ircd.port, "#debian-uploads")
    config = write_config(
        tmp_path / "bridge.toml",
        rule(
            "uploads",
            f"irc://127.0.0.1:{ircd.port}/#debian-uploads",
            topic=["dak.upload.accepted"],
        )
        + '[notify]\nirc_nick = "dbus"\nirc_burst = 3\nirc_interval = 1.0\npoll_interval = 0.1\n',
    )
    state = tmp_path / "state"
    append_reports(state, 1)
    notifier = Notifier(state, config).start()
    uploads = [
        Event(
            "dak.upload.accepted",
            {
                "summary": f"pkg{n} 1.{n}-1 accepted into unstable",
                "url": f"https://tracker.debian.org/pkg/pkg{n}",
            },
            dedup_key=f"upload-{n}",
            packages=(f"pkg{n}",),
        )
        for n in range(8)
    ]
    noise = Event(
        "debbugs.bug.report", {"summary": "#1 noise: no upload"}, "noise", packages=("noise",)
    )
    try:
        with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
            journal.append(uploads[:5], "test")  # a burst of five
            journal.append([noise], "test")  # not for this rule
            journal.append(uploads[5:], "test")
        wait_until(lambda: len(listener.lines) == 8, 60, f"8 lines; {notifier.log_text()[-2000:]}")
        time.sleep(1.5)
    finally:
        notifier.stop()
        listener.close()
        ircd.stop()
    assert len(listener.lines) == 8
    assert [text for _, _, text in listener.lines] == [
        f"dak.upload.accepted: pkg{n} 1.{n}-1 accepted into unstable"
        f" https://tracker.debian.org/pkg/pkg{n}"
        for n in range(8)
    ]
    assert {nick for _, nick, _ in listener.lines} == {"dbus"}
    # three at once, then one a second: the burst was held back, not flooded
    arrivals = [when for when, _, _ in listener.lines]
    gaps = [b - a for a, b in zip(arrivals[2:], arrivals[3:], strict=False)]
    assert all(gap >= 0.8 for gap in gaps), gaps


# -- the rule against bridge query, preview, feeds --------------------------------------------


PREVIEWED = {
    "uploads-of-one": {"topic": ["dak.upload.accepted"], "package": ["xfsprogs"]},
    "closures": {"topic": ["debbugs.bug.closed"]},
    "not-bugs": {"not_topic": ["debbugs"]},
    "a-person": {"user": ["jane@example.org"], "category": ["debbugs"]},
}
QUERY_OPTIONS = {
    "topic": "--topic",
    "package": "--package",
    "not_topic": "--not-topic",
    "user": "--person",
    "category": "--topic",
}


def test_preview_counts_equal_bridge_query_with_the_same_filters(tmp_path, corpus_state):
    config = write_config(
        tmp_path / "bridge.toml",
        "".join(rule(n, "mailto:a@example.org", **f) for n, f in PREVIEWED.items()),
    )
    base = ["--config", str(config), "--state-dir", str(corpus_state)]
    checked = 0
    for name, filters in PREVIEWED.items():
        options = [o for k, vs in filters.items() for v in vs for o in (QUERY_OPTIONS[k], v)]
        found = bridge(*base, "query", "--json", "--limit", "100000", *options)
        assert found.returncode == 0, found.stderr
        expected = [json.loads(line) for line in found.stdout.decode().splitlines()]
        result = bridge(*base, "notify", "preview", name, "--json", "--first", "3")
        assert result.returncode == 0, result.stderr
        previewed = json.loads(result.stdout)
        assert previewed["total"] == len(expected), name
        assert sum(previewed["per_day"].values()) == len(expected)
        oldest = sorted(expected, key=lambda e: e["seq_id"])[:3]
        assert [e["seq_id"] for e in previewed["first"]] == [e["seq_id"] for e in oldest]
        assert all(e["why"] for e in previewed["first"])
        checked += len(expected)
    assert checked > 100  # the corpus has these events: a preview of nothing proves little
    text = bridge(*base, "notify", "preview", "uploads-of-one").stdout.decode()
    assert "because: topic" in text and "package xfsprogs" in text


def test_a_maintainer_rule_matches_the_packages_their_uploads_name(tmp_path, corpus_state):
    address = "akumar@debian.org"
    config = write_config(
        tmp_path / "bridge.toml", rule("mine", "mailto:a@example.org", maintainer=address)
    )
    base = ["--config", str(config), "--state-dir", str(corpus_state)]
    every = [json.loads(line) for line in bridge(*base, "query", "--json", "--limit", "100000")
             .stdout.decode().splitlines()]  # fmt: skip
    maintained = {
        package
        for e in every
        if ".dak.upload." in e["topic"]
        and (e["msg"].get("maintainer") or {}).get("email") == address
        for package in e["index"]["packages"]
    }
    expected = sorted(e["seq_id"] for e in every if maintained & set(e["index"]["packages"]))
    assert len(maintained) >= 2 and len(expected) >= 3
    result = bridge(*base, "notify", "preview", "mine", "--json", "--first", "1000")
    previewed = json.loads(result.stdout)
    assert [e["seq_id"] for e in previewed["first"]] == expected
    assert all(f"maintained by {address}" in " ".join(e["why"]) for e in previewed["first"])


def test_the_feed_is_atom_of_raw_and_the_rule_page_shows_the_preview(tmp_path, corpus_state):
    config = write_config(
        tmp_path / "bridge.toml",
        rule("closures", "mailto:a@example.org", topic=["debbugs.bug.closed"]),
    )
    server = WebServer(corpus_state, config).start()
    try:
        raw = server.get("/raw?topic=debbugs.bug.closed&rows_per_page=20").json()
        feed = server.get("/v1/feed?topic=debbugs.bug.closed&rows_per_page=20")
        preview_json = server.get("/v1/notify/closures/preview").json()
        page = server.get("/notify/closures")
        missing = server.get("/notify/nope")
        bad = server.get("/v1/feed?bug=twelve")
    finally:
        server.stop()
    content_type = {k.lower(): v for k, v in feed.headers.items()}["content-type"]
    assert feed.status == 200 and content_type.startswith("application/atom+xml")
    root = ET.fromstring(feed.body)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    messages = raw["raw_messages"]
    assert len(entries) == len(messages) == 20
    for entry, message in zip(entries, messages, strict=True):
        assert entry.findtext(f"{ATOM}id") == f"urn:debian-bus:{message['msg_id']}"
        assert entry.findtext(f"{ATOM}title") == message["msg"]["summary"]
        assert entry.find(f"{ATOM}link").get("href") == message["msg"]["url"]
        assert entry.find(f"{ATOM}category").get("term") == message["topic"]
    assert preview_json["total"] == raw["total"]
    assert page.status == 200
    assert f"{raw['total']} events would have been delivered" in page.body.decode()
    assert missing.status == 404 and "no rule 'nope'" in missing.json()["error"]
    assert bad.status == 400 and "bug must be a bug number" in bad.json()["error"]


def test_the_irc_rule_reconnects_when_the_server_comes_back(tmp_path):
    ircd = Ngircd().start()
    config = write_config(
        tmp_path / "bridge.toml",
        rule("uploads", f"irc://127.0.0.1:{ircd.port}/#debian-uploads", topic=["dak.upload"])
        + '[notify]\nirc_nick = "dbus"\npoll_interval = 0.1\nirc_interval = 0.1\n',
    )
    state = tmp_path / "state"
    append_reports(state, 1)
    notifier = Notifier(state, config).start()

    def upload(n: int) -> Event:
        return Event("dak.upload.accepted", {"summary": f"pkg{n} accepted"}, f"up-{n}")

    listener = IrcListener(ircd.port, "#debian-uploads")
    try:
        with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
            journal.append([upload(1)], "test")
            wait_until(lambda: len(listener.lines) == 1, 30, "the first line")
            listener.close()
            ircd.stop()  # the server goes away; the next upload cannot be said yet
            journal.append([upload(2)], "test")
            wait_until(lambda: "did not take the notice" in notifier.log_text(), 30, "a failure")
            ircd = Ngircd(port=ircd.port).start()  # back, on the same port
            listener = IrcListener(ircd.port, "#debian-uploads")
            wait_until(lambda: len(listener.lines) == 1, 60, f"{notifier.log_text()[-2000:]}")
    finally:
        notifier.stop()
        listener.close()
        ircd.stop()
    assert listener.lines[0][2] == "dak.upload.accepted: pkg2 accepted"
    assert "takes notices again" in notifier.log_text()


class Recorder:
    """A destination that records notices, and fails the next *fail* of them (the network
    boundary, stood in for, to drive a rule's clock by hand)."""

    label = "recorder"

    def __init__(self) -> None:
        self.notices: list[Any] = []
        self.fail = 0

    def deliver(self, notice: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("the destination is down")
        self.notices.append(notice)

    def idle(self) -> None:
        pass


def test_a_held_notice_that_fails_is_sent_again_as_one_notice(tmp_path):
    from bridge.config import NotifyConfig, NotifyRule
    from bridge.notify.follow import RuleFollower
    from bridge.notify.rules import read_rule

    state = tmp_path / "state"
    append_reports(state, 20, package="other")
    now = [1_000_000.0]
    rule = read_rule(
        "limited",
        NotifyRule(deliver="mailto:a@example.org", rate_limit=5, start="beginning"),
    )
    destination = Recorder()
    with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
        follower = RuleFollower(
            rule,
            journal,
            destination,
            NotifyConfig(),
            clock=lambda: now[0],  # type: ignore[arg-type]
        )
        while follower.step():
            pass
        assert [n.kind for n in destination.notices] == ["event"] * 5
        now[0] += 61  # the minute is over, and the destination is down
        destination.fail = 1
        assert follower.step() is False
        now[0] += 5  # past the retry pause
        assert follower.step() is True
        assert [n.kind for n in destination.notices] == ["event"] * 5 + ["held"]
        held = destination.notices[-1]
        assert held.count == 15 and held.title().startswith("15 more events")
        assert journal.cursor("notify.limited") == 20
        assert journal.counters()["notify.limited.failed"] == 1

"""``bridge web``'s history API against a journal built by replaying the shared corpus of
real Debian mail: a real uvicorn server, a real HTTP client, and every expected answer
taken from ``bridge query --json`` / ``bridge stats --json`` or from the envelopes
themselves, never from the web code."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bridge.journal import Criteria
from tests.helpers import ROOT, bridge
from tests.web import WebServer

Envelope = dict[str, Any]


@pytest.fixture(scope="module")
def history(corpus_state: Path) -> Iterator[tuple[WebServer, list[Envelope]]]:
    """A web server over the replayed corpus, and every envelope in seq_id order as
    ``bridge query --json`` prints them."""
    envelopes = query(corpus_state)
    assert len(envelopes) > 500
    server = WebServer(corpus_state).start()
    yield server, envelopes
    server.stop()


def query(state: Path, *args: str) -> list[Envelope]:
    """What ``bridge query --json`` finds, oldest first."""
    result = bridge(
        "--state-dir", str(state), "query", "--json", "--oldest-first", "--limit", "100000", *args
    )
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def raw(server: WebServer, **arguments: Any) -> dict[str, Any]:
    reply = server.get("/raw?" + urlencode(arguments, doseq=True))
    assert reply.status == 200, reply.body
    answer = reply.json()
    answer["raw_messages"] = [published(m) for m in answer["raw_messages"]]
    return answer


SHIPPED_TOPICS = {p.stem for p in (ROOT / "parsers" / "schemas").glob("*.json")}


def published(message: dict[str, Any]) -> dict[str, Any]:
    """*message* without its ``headers``, which must be the AMQP sink's for its envelope:
    what fedora-messaging-era datagrepper returns (``sent-at`` being its timestamp)."""
    message = dict(message)
    headers = message.pop("headers")
    topic = message["topic"].removeprefix("org.debian.dev.")
    assert headers == {
        "fedora_messaging_schema": f"debian_bus.{topic}"
        if topic in SHIPPED_TOPICS
        else "base.message",
        "fedora_messaging_severity": 20,
        "sent-at": datetime.fromtimestamp(message["timestamp"], UTC).isoformat(),
        "debian_bus_seq_id": message["seq_id"],
        "debian_bus_msg_id": message["msg_id"],
        "debian_bus_timestamp": message["timestamp"],
        "debian_bus_packages": message["index"].get("packages", []),
        "debian_bus_bugs": message["index"].get("bugs", []),
    }
    return message


def seq_ids(envelopes: list[Envelope]) -> list[int]:
    return [e["seq_id"] for e in envelopes]


def happened(envelope: Envelope) -> float:
    """The time filters read: the message's own ``timestamp``."""
    return float(envelope["timestamp"])


def test_a_backfill_is_dated_by_its_mail_and_filters_by_that_date(history):
    server, envelopes = history
    dated = 0
    for envelope in envelopes:
        date = envelope["msg"].get("origin", {}).get("date")
        if date:
            moment = datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
            assert envelope["timestamp"] == int(moment), envelope["msg_id"]
            dated += 1
    assert dated > len(envelopes) * 0.9
    # the oldest message, found by its own timestamp and by nothing else
    oldest = min(envelopes, key=happened)
    around = raw(server, start=oldest["timestamp"], end=oldest["timestamp"], rows_per_page=100)
    assert oldest["msg_id"] in {m["msg_id"] for m in around["raw_messages"]}
    assert all(m["timestamp"] == oldest["timestamp"] for m in around["raw_messages"])


def every_page(
    server: WebServer, rows_per_page: int, **arguments: Any
) -> tuple[list[Envelope], list[dict]]:
    """All raw_messages, page after page, and each reply."""
    found, replies, page = [], [], 1
    while True:
        reply = raw(server, rows_per_page=rows_per_page, page=page, **arguments)
        replies.append(reply)
        found += reply["raw_messages"]
        if page >= reply["pages"]:
            return found, replies
        page += 1


@pytest.mark.parametrize("rows_per_page", [7, 100])
def test_raw_pages_through_the_whole_history_in_either_order(history, rows_per_page):
    server, envelopes = history
    newest_first, replies = every_page(server, rows_per_page)
    assert newest_first == envelopes[::-1]  # whole envelopes, as published
    assert replies[0]["total"] == len(envelopes)
    assert replies[0]["pages"] == math.ceil(len(envelopes) / rows_per_page) == len(replies)
    assert [r["count"] for r in replies[:-1]] == [rows_per_page] * (len(replies) - 1)
    oldest_first, _ = every_page(server, rows_per_page, order="asc")
    assert oldest_first == envelopes


def test_raw_defaults_are_datagreppers(history):
    server, envelopes = history
    reply = raw(server)
    arguments = reply["arguments"]
    assert (arguments["page"], arguments["rows_per_page"], arguments["order"]) == (1, 25, "desc")
    assert arguments["start"] is arguments["end"] is arguments["delta"] is None
    assert seq_ids(reply["raw_messages"]) == seq_ids(envelopes[::-1][:25])
    beyond = raw(server, page=reply["pages"] + 1)
    assert beyond["raw_messages"] == [] and beyond["total"] == len(envelopes)


def _between(envelopes: list[Envelope], start: float, end: float) -> list[int]:
    return [e["seq_id"] for e in envelopes if start <= happened(e) <= end][::-1]


def test_every_time_argument_combination_of_datagreppers_table(history):
    server, envelopes = history
    times = sorted(happened(e) for e in envelopes)
    middle = times[len(times) // 2]
    early = times[len(times) // 4]
    week = 7 * 86400.0

    def check(arguments: dict[str, float], expect: Callable[[], tuple[float, float, float]]):
        reply = raw(server, rows_per_page=100, **arguments)
        used = [reply["arguments"][k] for k in ("start", "end", "delta")]
        for got, want in zip(used, expect(), strict=True):  # "now" moved by a second at most
            assert math.isclose(got, want, abs_tol=5), arguments
        found, _ = every_page(server, 100, **arguments)
        assert seq_ids(found) == _between(envelopes, used[0], used[1]), arguments
        return found

    # start and end: between them (delta, if given, is ignored)
    assert check({"start": early, "end": middle}, lambda: (early, middle, middle - early))
    both = {"start": early, "end": middle, "delta": 60}
    assert check(both, lambda: (early, middle, middle - early))
    # start and delta: from start until delta seconds after it
    assert check({"start": early, "delta": week}, lambda: (early, early + week, week))
    # end and delta: the delta seconds before end
    assert check({"end": middle, "delta": week}, lambda: (middle - week, middle, week))
    # end alone: the 600 seconds before it (an event of the corpus is in that window)
    assert check({"end": middle + 300}, lambda: (middle - 300, middle + 300, 600))
    # start alone: from start until now
    now = time.time()
    assert check({"start": early}, lambda: (early, now, now - early))
    # delta alone: the last delta seconds (a window reaching back to the corpus's newest mails)
    newest = times[-1]
    delta = time.time() - newest + week
    assert check({"delta": delta}, lambda: (time.time() - delta, time.time(), delta))
    # none: everything, newest first
    assert raw(server)["total"] == len(envelopes)


def test_time_arguments_may_be_iso_dates(history):
    server, envelopes = history
    times = sorted(happened(e) for e in envelopes)
    start, end = times[10], times[200]
    iso = {
        "start": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "end": datetime.fromtimestamp(end, UTC).isoformat(),
    }
    found, _ = every_page(server, 100, **iso)
    assert seq_ids(found) == _between(envelopes, start, end)


def _topic(envelope: Envelope) -> str:
    return envelope["topic"]


def _category(envelope: Envelope) -> str:
    return envelope["topic"].split(".")[3]


def test_topic_and_category_filters_and_their_negations(history):
    server, envelopes = history
    topics = sorted({_topic(e) for e in envelopes})
    closed = next(t for t in topics if t.endswith("debbugs.bug.closed"))
    accepted = next(t for t in topics if t.endswith("dak.upload.accepted"))
    cases = [
        ({"topic": closed}, lambda e: _topic(e) == closed),
        ({"topic": [closed, accepted]}, lambda e: _topic(e) in (closed, accepted)),
        ({"category": "dak"}, lambda e: _category(e) == "dak"),
        ({"not_topic": closed}, lambda e: _topic(e) != closed),
        ({"not_category": "debbugs"}, lambda e: _category(e) != "debbugs"),
        (
            {"category": "debbugs", "not_topic": [closed]},
            lambda e: _category(e) == "debbugs" and _topic(e) != closed,
        ),
    ]
    for arguments, keep in cases:
        found, _ = every_page(server, 100, **arguments)
        expected = [e for e in envelopes if keep(e)][::-1]
        assert expected and found == expected, arguments


def test_package_filters_match_bridge_query(history):
    server, envelopes = history
    state = server.state_dir
    counts: dict[str, int] = {}
    for e in envelopes:
        for package in e["index"]["packages"]:
            counts[package] = counts.get(package, 0) + 1
    busy = sorted(counts, key=lambda p: (-counts[p], p))[:2]
    for package in busy:
        found, _ = every_page(server, 100, package=package)
        assert found == query(state, "--package", package)[::-1]
    both, _ = every_page(server, 100, package=busy)
    either = {e["seq_id"] for p in busy for e in query(state, "--package", p)}
    assert sorted(seq_ids(both)) == sorted(either)
    without, _ = every_page(server, 100, not_package=busy[0])
    left_out = set(seq_ids(query(state, "--package", busy[0])))
    assert seq_ids(without) == [s for s in seq_ids(envelopes) if s not in left_out][::-1]


def test_user_filters_match_bridge_query_and_debian_logins(history):
    server, envelopes = history
    state = server.state_dir
    agents = [e["msg"]["agent"] for e in envelopes if e["msg"].get("agent")]
    emails = [a["email"] for a in agents if a.get("email")]
    busiest = max(set(emails), key=lambda m: (emails.count(m), m))
    found, _ = every_page(server, 100, user=busiest.upper())  # any case
    assert found == query(state, "--person", busiest)[::-1]
    assert found and all(busiest in json.dumps(e).lower() for e in found)
    developers = sorted({m for m in emails if m.lower().endswith("@debian.org")})
    assert developers, "the corpus has mail from Debian developers"
    login = developers[0].split("@")[0]
    by_login, _ = every_page(server, 100, user=login)
    assert by_login == query(state, "--person", developers[0])[::-1]
    others, _ = every_page(server, 100, not_user=busiest)
    assert sorted(seq_ids(others)) == sorted(set(seq_ids(envelopes)) - set(seq_ids(found)))


def test_contains_finds_text_anywhere_in_the_envelope(history):
    server, envelopes = history
    non_ascii = next(
        word
        for e in envelopes
        for word in e["msg"]["summary"].split()
        if not word.isascii() and len(word) > 3
    )
    for needle in ("gcc", "RC bug", non_ascii):
        for category in ("debbugs", "dak"):
            found, _ = every_page(server, 100, contains=needle, category=category)
            expected = [
                e
                for e in envelopes
                if _category(e) == category and needle in json.dumps(e, ensure_ascii=False)
            ][::-1]
            assert found == expected, (needle, category)
    assert every_page(server, 100, contains="gcc", category="debbugs")[0]


def test_id_returns_the_envelope_or_404(history):
    server, envelopes = history
    for envelope in (envelopes[0], envelopes[len(envelopes) // 2], envelopes[-1]):
        reply = server.get("/id?" + urlencode({"id": envelope["msg_id"]}))
        assert reply.status == 200 and published(reply.json()) == envelope
    with_meta = server.get(f"/id?id={envelopes[0]['msg_id']}&meta=summary&meta=url").json()
    assert with_meta["meta"] == {
        "summary": envelopes[0]["msg"]["summary"],
        "url": envelopes[0]["msg"]["url"],
    }
    assert server.get(f"/id?id={envelopes[0]['msg_id']}&meta=colour").status == 400
    assert server.get("/id?id=no-such-message").status == 404
    assert server.get("/id").status == 400


@pytest.mark.parametrize(
    "arguments, says",
    [
        ("rows_per_page=101", "rows_per_page must be <= 100"),
        ("page=0", "page must be > 0"),
        ("order=sideways", "order must be either"),
        ("contains=gcc", "specify either a topic or a category"),
        ("start=yesterday-ish", "start must be UNIX seconds or an ISO 8601 time"),
        ("meta=colour", "meta must be in"),
        ("callback=alert(1)", "callback must be a JavaScript function name"),
        ("grouped=true", "grouped=true is not offered"),
        ("grouped=perhaps", "grouped must be true or false"),
        ("size=huge", "size must be one of small, medium, large, extra-large"),
        ("chrome=maybe", "chrome must be true or false"),
    ],
)
def test_bad_arguments_are_a_400_saying_which(history, arguments, says):
    server, _ = history
    reply = server.get(f"/raw?{arguments}")
    assert reply.status == 400
    assert says in reply.json()["error"]


def test_jsonp_wraps_the_reply_in_the_callback(history):
    server, envelopes = history
    reply = server.get("/raw?rows_per_page=1&callback=show")
    assert reply.headers["content-type"].startswith("application/javascript")
    text = reply.body.decode()
    assert text.startswith("show(") and text.endswith(");")
    assert [published(m) for m in json.loads(text[5:-2])["raw_messages"]] == [envelopes[-1]]


@pytest.mark.parametrize("period", ["day", "month"])
def test_stats_match_bridge_stats(history, period):
    server, envelopes = history
    state = server.state_dir
    for arguments, options in (({}, []), ({"category": "dak"}, ["--topic", "dak"])):
        reply = server.get("/v1/stats?" + urlencode({"by": period, **arguments}))
        assert reply.status == 200
        result = bridge("--state-dir", str(state), "stats", "--by", period, "--json", *options)
        assert reply.json()["periods"] == json.loads(result.stdout)
    everything = server.get("/v1/stats?by=month").json()
    assert everything["total"] == len(envelopes)
    by_topic: dict[str, int] = {}
    for e in envelopes:
        topic = e["topic"].split(".", 3)[3]
        by_topic[topic] = by_topic.get(topic, 0) + 1
    assert everything["topics"] == by_topic


def test_metrics_and_health(history):
    server, envelopes = history
    metrics = server.get("/metrics")
    assert metrics.status == 200
    lines = metrics.body.decode().splitlines()
    closed = sum(1 for e in envelopes if e["topic"].endswith(".debbugs.bug.closed"))
    assert f'bridge_events_total{{topic="debbugs.bug.closed"}} {float(closed)}' in lines
    assert f"bridge_journal_last_seq_id {float(len(envelopes))}" in lines
    assert "bridge_spool_pending 0.0" in lines
    # replay-mbox journals for publishing and no bridge serve has run: all of it waits
    assert f'bridge_sink_lag{{sink="zeromq"}} {float(len(envelopes))}' in lines
    health = server.get("/healthz").json()
    assert health == {"status": "ok", "journal": "ok", "last_seq_id": len(envelopes)}
    # a backfill says nothing of whether a list subscription still delivers
    assert last_heard(metrics.body.decode()) == {}
    assert any(line.startswith('bridge_build_info{python="') for line in lines)
    assert "bridge_web_view_fresh 1.0" in lines
    assert any(line.startswith("process_cpu_seconds_total ") for line in lines)


def last_heard(metrics_text: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (kind, sample.labels[kind]): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for kind in ("list", "family")
        if family.name == f"bridge_{kind}_last_event_timestamp_seconds"
        for sample in family.samples
    }


def test_metrics_say_when_each_list_and_family_last_brought_live_mail(tmp_path):
    from bridge.events import Event, Naming
    from bridge.journal.sqlite import SqliteJournal

    state = tmp_path / "state"
    state.mkdir()
    journal = SqliteJournal(state / "journal.sqlite3", Naming())

    def event(n: int, topic: str, listed: str | None) -> Event:
        origin = {"list": f"<{listed}>"} if listed else {}
        body = {"summary": f"fact {n}", "origin": origin}
        return Event(topic, body, dedup_key=f"fact-{n}", occurred_at="2008-04-01T00:00:00Z")

    journal.append([event(1, "debbugs.bug.report", "debian-bugs-dist.lists.debian.org")], "smtp")
    journal.append([event(2, "dak.upload.accepted", None)], "smtp")
    # an archive's old mail of another list, replayed later: not a sign of life
    journal.append([event(3, "dak.upload.accepted", "old.lists.example.org")], "mbox:old",
                   backfill=True)  # fmt: skip
    envelopes = journal.find(Criteria(), newest_first=False)
    journal.close()
    live = {e.seq_id: e.timestamp for e in envelopes}
    assert envelopes[2].timestamp == 1207008000  # the backfill is dated by its mail
    server = WebServer(state).start()
    try:
        heard = last_heard(server.get("/metrics").body.decode())
    finally:
        server.stop()
    assert heard == {
        ("list", "debian-bugs-dist.lists.debian.org"): live[1],
        ("family", "debbugs"): live[1],
        ("family", "dak"): live[2],
    }
    assert live[1] > 1207008000 and live[2] >= live[1]  # journal time, not the mail's date


def test_live_streams_wake_on_postgresqls_notification_not_on_a_timer():
    """The web's one journal watcher wakes when PostgreSQL says rows were committed, as the
    sinks do: with a poll interval of a minute, a new row is seen at once."""
    import asyncio
    import threading
    import time

    from bridge.events import Event
    from bridge.web.streams import JournalWatch
    from tests.helpers import open_journal_at, postgres_schema

    url, drop = postgres_schema()
    reader, writer = open_journal_at(url), open_journal_at(url)
    try:
        lock = threading.Lock()

        async def run(read):
            def locked():
                with lock:  # one connection, one call at a time (as the web's pool does)
                    return read(reader)

            return await asyncio.to_thread(locked)

        def append_later() -> None:
            time.sleep(1.0)
            with writer.batch() as batch:
                batch.append([Event("bridge.probe", {"summary": "x"}, dedup_key="k")], "log")

        async def wait_for_row() -> tuple[int, float]:
            watch = JournalWatch(run, poll=60.0)
            await watch.newest()
            threading.Thread(target=append_later, daemon=True).start()
            started = time.monotonic()
            newest = await watch.beyond(0, timeout=20.0)
            return newest, time.monotonic() - started

        newest, waited = asyncio.run(wait_for_row())
        assert newest == 1
        assert waited < 10.0, f"{waited:.1f} s: the watcher waited for its timer"
    finally:
        reader.close()
        writer.close()
        drop()


def test_every_topic_bridge_parsers_lists_has_its_schema_on_the_web(history):
    server, _ = history
    listed = bridge("parsers").stdout.decode().splitlines()
    topics = sorted(
        t for line in listed if "\tok\t" in line for t in line.split("\t")[4].split(",")
    )
    assert "security.advisory" in topics  # a plugin's topic too
    index = server.get("/v1/schemas").json()["topics"]
    assert sorted(index) == topics
    for topic in ("debbugs.bug.report", "org.debian.dev.dak.upload.accepted"):
        reply = server.get(f"/v1/schemas/{topic}")
        assert reply.status == 200
        event_topic = topic.removeprefix("org.debian.dev.")
        shipped = ROOT / "parsers" / "schemas" / f"{event_topic}.json"
        assert reply.json() == json.loads(shipped.read_text(encoding="utf-8"))
        assert index[event_topic]["schema"] == f"/v1/schemas/{event_topic}"
    missing = server.get("/v1/schemas/no.such.topic")
    assert missing.status == 404 and "no installed parser declares" in missing.json()["error"]


ASYNCAPI_SPEC = ROOT / "tests" / "specs" / "asyncapi-3.0.0.json"
ASYNCAPI_SPEC_SHA256 = "1786a007ac00344a8f529e5a6fc5db786b0be6757e0b94a8b95a8a6a52b7fe9a"


def test_the_asyncapi_document_is_valid_and_names_every_topic_with_schema_and_example(history):
    import hashlib

    import jsonschema

    server, envelopes = history
    spec_bytes = ASYNCAPI_SPEC.read_bytes()
    assert hashlib.sha256(spec_bytes).hexdigest() == ASYNCAPI_SPEC_SHA256
    reply = server.get("/v1/asyncapi.json")
    assert reply.status == 200
    document = reply.json()
    validator = jsonschema.Draft7Validator(json.loads(spec_bytes))
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert problems == []
    # a document that breaks the specification is caught (the validator is not vacuous)
    broken = dict(document, channels={"x": {"address": 3}})
    assert not validator.is_valid(broken)

    listed = bridge("parsers").stdout.decode().splitlines()
    topics = sorted(
        t for line in listed if "\tok\t" in line for t in line.split("\t")[4].split(",")
    )
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {f"org.debian.dev.{topic}" for topic in topics}
    newest: dict[str, dict] = {}
    for envelope in envelopes:  # oldest first: the last of each topic wins
        newest[envelope["topic"].removeprefix("org.debian.dev.")] = envelope["msg"]
    assert len(newest) >= 5
    messages = document["components"]["messages"]
    for topic in topics:
        message = messages[topic]
        shipped = ROOT / "parsers" / "schemas" / f"{topic}.json"
        if shipped.exists():
            assert message["payload"]["schema"] == json.loads(shipped.read_text("utf-8"))
        channel = document["channels"][topic]
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "amq.topic"
        assert channel["bindings"]["amqp"]["is"] == "routingKey"
        if topic in newest:
            example = message["examples"][0]["payload"]
            assert example == newest[topic]
            jsonschema.Draft202012Validator(message["payload"]["schema"]).validate(example)
        else:
            assert "examples" not in message
    assert document["servers"]["zeromq"]["host"] == "127.0.0.1:9940"


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_gets_html_cards_as_datagrepper_renders_them(history):
    import re

    server, envelopes = history
    newest = envelopes[::-1][:3]

    def cards(reply) -> list[tuple[str, int]]:
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
        found = re.findall(
            r'<article class="card ([a-z-]+)" data-seq-id="(\d+)"', reply.body.decode()
        )
        return [(size, int(seq_id)) for size, seq_id in found]

    page = server.get("/raw?rows_per_page=3", {"Accept": BROWSER_ACCEPT})
    assert cards(page) == [("large", e["seq_id"]) for e in newest]
    text = page.body.decode()
    assert text.startswith("<!doctype html>") and 'rel="next"' in text
    assert newest[0]["msg"]["summary"] in text.replace("&#x27;", "'").replace("&quot;", '"')
    small = server.get("/raw?rows_per_page=3&size=small&chrome=false", {"Accept": BROWSER_ACCEPT})
    assert cards(small) == [("small", e["seq_id"]) for e in newest]
    assert not small.body.startswith(b"<!doctype") and b"<time" not in small.body
    whole = server.get("/raw?rows_per_page=1&size=extra-large", {"Accept": BROWSER_ACCEPT})
    assert b"<pre>" in whole.body
    one = server.get(f"/id?id={newest[1]['msg_id']}", {"Accept": BROWSER_ACCEPT})
    assert cards(one) == [("large", newest[1]["seq_id"])]
    # scripts get JSON, as from datagrepper: asked for, or with no preference (*/*)
    for accept in ("application/json", "*/*", ""):
        reply = server.get("/raw?rows_per_page=1", {"Accept": accept} if accept else {})
        assert reply.headers["content-type"].startswith("application/json"), accept


def test_a_datagrepper_script_asking_for_the_last_day_gets_mail_that_just_arrived(tmp_path):
    """Real bug mail dated months ago arrives now: ``delta=86400`` finds it, each message's
    ``timestamp`` is when it arrived, and a window around that timestamp finds it too."""
    import urllib.request

    from tests.helpers import Server, send

    mails = sorted((ROOT / "fixtures" / "debbugs").glob("*.eml"))[:6]
    # how many events they make, as their fixtures say (an acknowledgement makes none)
    expected = sum(
        len(made) if isinstance(made, list) else 0
        for made in (json.loads(m.with_suffix(".json").read_text("utf-8")) for m in mails)
    )
    state = tmp_path / "state"
    server = Server(state).start()
    web = WebServer(state).start()
    try:
        server.wait_for_smtp()
        sent_at = time.time()
        for mail in mails:
            assert send(server, mail.read_bytes()) == {}
        journaled = len(wait_for_events(state, expected))

        def fetch(**arguments: Any) -> dict[str, Any]:  # as a datagrepper script does it
            address = f"{web.base}/raw?{urlencode(arguments)}"
            with urllib.request.urlopen(address, timeout=10) as answer:
                return json.load(answer)

        messages, page = [], 1
        while True:
            reply = fetch(delta=86400, rows_per_page=100, page=page)
            messages += reply["raw_messages"]
            if page >= reply["pages"]:
                break
            page += 1
        assert len(messages) == reply["total"] == journaled
        for message in messages:
            assert sent_at - 1 <= message["timestamp"] <= time.time() + 1
            dated = message["msg"]["origin"]["date"]
            assert (
                datetime.fromisoformat(dated.replace("Z", "+00:00")).timestamp() < sent_at - 86400
            )
            around = fetch(start=message["timestamp"], end=message["timestamp"], rows_per_page=100)
            assert message["msg_id"] in {m["msg_id"] for m in around["raw_messages"]}
        # the mail's own date finds nothing: the filter reads the same time the reply shows
        oldest = min(messages, key=lambda m: m["msg"]["origin"]["date"])["msg"]["origin"]["date"]
        assert fetch(start=oldest, delta=60)["total"] == 0
    finally:
        web.stop()
        server.stop()


def wait_for_events(state: Path, count: int) -> list[Envelope]:
    """The journal's envelopes once it holds *count* of them."""
    from tests.helpers import wait_until

    wait_until(lambda: len(query(state)) >= count, 20, f"{count} events to be journaled")
    found = query(state)
    assert len(found) == count
    return found


def test_a_plugins_topic_carries_the_headers_the_amqp_sink_gives_it(tmp_path):
    """The schema package has classes for the bridge's own topics only: a plugin's event is
    ``base.message`` on the broker, and so in /raw's headers."""
    from bridge.events import Event, Naming
    from bridge.journal.sqlite import SqliteJournal

    state = tmp_path / "state"
    state.mkdir()
    journal = SqliteJournal(state / "journal.sqlite3", Naming())
    journal.append([Event("security.advisory", {"summary": "DSA-1"}, dedup_key="1")], "log")
    journal.close()
    server = WebServer(state).start()
    try:
        (message,) = server.get("/raw").json()["raw_messages"]
    finally:
        server.stop()
    assert message["headers"]["fedora_messaging_schema"] == "base.message"
    assert published(message)["msg"] == {"summary": "DSA-1"}

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
    return reply.json()


def seq_ids(envelopes: list[Envelope]) -> list[int]:
    return [e["seq_id"] for e in envelopes]


def happened(envelope: Envelope) -> float:
    """When the fact happened: the mail's date the parser recorded, else when journaled."""
    date = envelope["msg"].get("origin", {}).get("date")
    if date:
        return datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()
    return float(envelope["timestamp"])


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
        assert reply.status == 200 and reply.json() == envelope
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
    assert json.loads(text[5:-2])["raw_messages"] == [envelopes[-1]]


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
    # when each list and topic family was last heard from: the newest journal time of its
    # events (what an operator alerts on when a subscription lapses)
    newest: dict[tuple[str, str], int] = {}
    for e in envelopes:
        family = e["topic"].split(".")[3]
        listed = (e["msg"].get("origin") or {}).get("list")
        for key in [("family", family)] + ([("list", listed.strip("<>"))] if listed else []):
            newest[key] = max(newest.get(key, 0), e["timestamp"])
    assert {k for k, _ in newest} == {"family", "list"}
    from prometheus_client.parser import text_string_to_metric_families

    heard = {
        (kind, sample.labels[kind]): sample.value
        for family in text_string_to_metric_families(metrics.body.decode())
        for kind in ("list", "family")
        if family.name == f"bridge_{kind}_last_event_timestamp_seconds"
        for sample in family.samples
    }
    assert heard == newest
    assert any(line.startswith('bridge_build_info{python="') for line in lines)
    assert "bridge_web_view_fresh 1.0" in lines
    assert any(line.startswith("process_cpu_seconds_total ") for line in lines)


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

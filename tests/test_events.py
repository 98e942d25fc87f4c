from __future__ import annotations

import json
import re

from bridge.events import Envelope, Naming, dumps, frames, full_topic, new_msg_id


def test_topic_is_prefix_environment_and_event_topic():
    assert (
        full_topic("org.debian", "dev", "debbugs.bug.report") == "org.debian.dev.debbugs.bug.report"
    )
    naming = Naming("org.debian", "prod")
    assert naming.topic("dak.upload.accepted") == "org.debian.prod.dak.upload.accepted"


def test_a_user_topic_filter_may_be_full_or_event_relative():
    naming = Naming()
    assert naming.bus_prefix("debbugs") == "org.debian.dev.debbugs"
    assert naming.bus_prefix("org.debian.dev.dak") == "org.debian.dev.dak"
    assert naming.bus_prefix("") == "org.debian.dev"


def test_wire_json_is_sorted_compact_and_ascii():
    text = dumps({"b": "é", "a": [1, 2]})
    assert text == '{"a":[1,2],"b":"\\u00e9"}'


def test_msg_id_is_year_dash_a_time_ordered_uuid():
    from datetime import UTC, datetime, timedelta

    first = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    ids = [new_msg_id(first + timedelta(milliseconds=n)) for n in range(0, 5000, 7)]
    for msg_id in ids:
        assert re.fullmatch(
            r"2024-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", msg_id
        )
    assert ids == sorted(ids)  # later ids sort after earlier ones
    assert len(set(ids)) == len(ids)
    millis = int(ids[0][5:].replace("-", "")[:12], 16)
    assert millis == int(first.timestamp() * 1000)


def test_envelope_round_trips_through_two_frames():
    index = {"packages": ["hello"], "bugs": [7]}
    envelope = Envelope(
        "org.debian.dev.x", {"summary": "ü"}, 1700000000, "2023-abc", 3, "bridge", 42, index
    )
    topic, body = frames(envelope.topic, envelope.to_json())
    assert topic == b"org.debian.dev.x"
    data = json.loads(body)
    fedmsg = {"topic", "msg", "timestamp", "msg_id", "i", "username"}
    assert set(data) == fedmsg | {"seq_id", "index"}  # what the bridge adds for consumers
    assert (envelope.packages, envelope.bugs) == (["hello"], [7])
    assert Envelope.from_json(body) == envelope
    body.decode("ascii")

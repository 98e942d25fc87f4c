"""Event bodies are made journal-safe field by field, or refused with the field and why."""

from __future__ import annotations

import math

import pytest

from bridge.bodies import EventRefused, normalised
from bridge.events import Event


def test_lone_surrogates_become_replacement_characters_in_values_keys_and_dedup_keys():
    event = normalised(Event("t.x", {"a\udc80": ["x\ud800y", {"k": "\udfff"}]}, "key\ud83d"))
    assert event.body == {"a\ufffd": ["x\ufffdy", {"k": "\ufffd"}]}
    assert event.dedup_key == "key\ufffd"


def test_tuples_become_lists_and_plain_values_pass_unchanged():
    body = {"n": 2**63 - 1, "m": -(2**63), "f": 1.5, "b": True, "none": None, "t": (1, 2)}
    assert normalised(Event("t.x", body)).body == {**body, "t": [1, 2]}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"bug": 2**63}, "body.bug: integer 9223372036854775808 does not fit in 64 bits"),
        ({"closes": [1, -(2**63) - 1]}, "body.closes[1]: integer"),
        ({"big": 10**5000}, "integer of 16610 bits"),
        ({"x": math.nan}, "body.x: nan is not a finite number"),
        ({"x": math.inf}, "body.x: inf is not a finite number"),
        ({"x": b"bytes"}, "body.x: bytes is not a JSON value"),
        ({"x": {1, 2}}, "body.x: set is not a JSON value"),
        ({1: "x"}, "body: key 1 is not a string"),
        ({"x": "y" * (1 << 20)}, "over the limit"),
    ],
)
def test_values_the_journal_cannot_hold_refuse_the_event_naming_the_field(body, why):
    with pytest.raises(EventRefused) as refused:
        normalised(Event("t.x", body))
    assert why in str(refused.value)


def test_nesting_beyond_the_limit_is_refused():
    body: dict = {}
    inner = body
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(EventRefused, match="nested deeper than 32 levels"):
        normalised(Event("t.x", body))


@pytest.mark.parametrize("topic", ["", "a..b", "a b", ".a", "a.", "débbugs.x", 7])
def test_a_topic_must_be_dot_separated_words(topic):
    with pytest.raises(EventRefused, match="topic"):
        normalised(Event(topic, {}))

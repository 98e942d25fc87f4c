"""Event bodies are made journal-safe field by field, or refused with the field and why."""

from __future__ import annotations

import math

import pytest

from bridge.events import Event
from bridge.pipeline.bodies import EventRefused, normalised


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
        ({"a": [{"b": [0, {2: 0}]}]}, "body.a[0].b[1]: key 2 is not a string"),
        ({"a": [[], [None, math.nan]]}, "body.a[1][1]: nan is not a finite number"),
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


@pytest.mark.parametrize(
    ("index", "why"),
    [
        ({"packages": "hello"}, "index packages must be a tuple, not str"),
        ({"bugs": ("1",)}, "index bugs must hold only int values"),
        ({"bugs": (True,)}, "index bugs must hold only int values"),
        ({"bugs": (2**64,)}, "index.bugs: integer 18446744073709551616 does not fit in 64 bits"),
        ({"people": (None,)}, "index people must hold only str values"),
        ({"occurred_at": 1700000000}, "index occurred_at must be an ISO 8601 string"),
    ],
)
def test_index_fields_the_journal_cannot_hold_refuse_the_event(index, why):
    with pytest.raises(EventRefused) as refused:
        normalised(Event("t.x", {}, **index))
    assert why in str(refused.value)


def test_index_fields_come_back_as_tuples_with_text_made_safe():
    event = normalised(Event("t.x", {}, packages=["a\udc80"], bugs=[7], people=["x"]))
    assert (event.packages, event.bugs, event.people) == (("a\ufffd",), (7,), ("x",))

"""The event contract, version 2: one type per field name, caps, summaries, and control
transcripts fully accounted for, checked on the schemas, the fixtures and the real corpus."""

from __future__ import annotations

import email
import email.header
import email.policy
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.pipeline import Pipeline
from bridge.sdk import BODY_CAP, SUMMARY_CAP, summary_line
from parsers.control import REPLY_BUDGET
from parsers.dak import DakParser
from parsers.debbugs import DebbugsParser
from parsers.transcript import NOOP_VERBS
from tests.helpers import FIXTURES, ROOT

SCHEMAS = ROOT / "parsers" / "schemas"
PIPELINE = Pipeline([DebbugsParser(), DakParser()])
JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}


def schema_field_types(schema: dict[str, Any], found: dict[str, set[str]]) -> None:
    """Every property name in *schema* (nested ones too) with its non-null JSON types."""
    for name, spec in (schema.get("properties") or {}).items():
        types = spec.get("type") or _type_of_const(spec)
        types = [types] if isinstance(types, str) else list(types)
        found.setdefault(name, set()).update(t for t in types if t != "null")
        schema_field_types(spec, found)
        if isinstance(spec.get("items"), dict):
            schema_field_types(spec["items"], found)


def _type_of_const(spec: dict[str, Any]) -> list[str]:
    values = [spec["const"]] if "const" in spec else spec.get("enum", [])
    return sorted({JSON_TYPES[type(v)] for v in values if v is not None})


def value_field_types(value: Any, found: dict[str, set[str]], inside: str = "") -> None:
    """Every key in a body (nested ones too) with the JSON types of its non-null values;
    the keys of ``fields`` (deb822 names) are data, not field names."""
    if isinstance(value, dict):
        for name, item in value.items():
            if inside != "fields" and item is not None:
                found.setdefault(name, set()).add(JSON_TYPES[type(item)])
            value_field_types(item, found, name)
    elif isinstance(value, list):
        for item in value:
            value_field_types(item, found, inside)


def test_no_field_name_has_two_types_in_the_schemas():
    found: dict[str, set[str]] = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert schema["version"] == 3, path
        schema_field_types(schema, found)
    mixed = {name: types for name, types in found.items() if len(types) > 1}
    assert mixed == {}
    assert found["source"] == {"string"} and found["sources"] == {"array"}
    assert found["nmu"] == {"boolean"} and found["auth"] == {"object"}


def corpus_events(corpus: Path) -> Iterator[tuple[Path, Any]]:
    for path in sorted(corpus.glob("mails/*/*.eml")):
        outcome = PIPELINE.process(path.read_bytes())
        assert not outcome.failures, f"{path}: {outcome.reason}"
        for event in outcome.events:
            yield path, event


def fixture_events() -> Iterator[tuple[Path, Any]]:
    for path in sorted(FIXTURES.glob("*/*.eml")):
        for event in PIPELINE.process(path.read_bytes()).events:
            yield path, event


def test_no_field_name_has_two_types_in_real_events(corpus: Path):
    found: dict[str, set[str]] = {}
    topics: Counter[str] = Counter()
    for _, event in [*corpus_events(corpus), *fixture_events()]:
        topics[event.topic] += 1
        assert event.body["schema_version"] == 3
        value_field_types(event.body, found)
    assert {name: types for name, types in found.items() if len(types) > 1} == {}
    assert len(topics) >= 9  # every topic but one is seen (the corpus has no removal mail)


def test_per_topic_counts_on_the_corpus(corpus: Path):
    counts = Counter(event.topic for _, event in corpus_events(corpus))
    # The corpus tests of each parser check every one of these events against the mail's
    # own headers. Version 2 counted 36 receipts: two of them are the queue saying it
    # deleted an upload it could not process for 48 hours (dak-other/005 and 013).
    assert counts == {
        "debbugs.bug.followup": 208,
        "debbugs.bug.report": 125,
        "debbugs.bug.closed": 120,
        "debbugs.bug.control": 25,
        "dak.upload.accepted": 93,
        "dak.upload.received": 34,
        "dak.upload.discarded": 2,
    }
    discarded = [p.name for p, e in corpus_events(corpus) if e.topic == "dak.upload.discarded"]
    assert discarded == ["005.eml", "013.eml"]


def test_summaries_are_one_short_line_without_a_repeated_word(corpus: Path):
    for path, event in [*corpus_events(corpus), *fixture_events()]:
        summary = event.body["summary"]
        assert "\n" not in summary and 0 < len(summary) <= SUMMARY_CAP, (path, summary)
        words = [w.strip(".,;:!?()[]'\"").lower() for w in summary.split()]
        repeated = [a for a, b in zip(words, words[1:], strict=False) if a.isalpha() and a == b]
        assert repeated == [], (path, summary)


def echoed_commands(raw: bytes) -> list[str]:
    """The ``>`` lines of a transcript up to its signature, read without the parser: each
    is a command debbugs echoed; nothing after ``thanks`` and its kin was run."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    lines = []
    for line in text.split("\n"):
        if line.rstrip() == "--":
            break
        if line.startswith(">"):
            lines.append(line[1:].strip())
            if line[1:].split()[:1] and line[1:].split()[0].lower() in ("thanks", "quit", "stop"):
                break
    return lines


def test_every_command_of_every_corpus_transcript_is_accounted_for(corpus: Path):
    transcripts = commands = 0
    for path, event in corpus_events(corpus):
        if event.topic != "debbugs.bug.control":
            continue
        raw = path.read_bytes()
        echoed = echoed_commands(raw)
        listed = event.body["commands"]
        assert [c["verb"] for c in listed] == [
            "#" if e.startswith("#") else (e.split() or [""])[0].lower() for e in echoed
        ], path
        for command in listed:
            status = command["status"]
            if status == "applied":
                assert command["effects"], (path, command)
            elif status == "failed":
                assert command["error"], (path, command)
            elif status == "noop":
                assert command["verb"] in NOOP_VERBS, (path, command)
            else:
                assert status == "unchanged", (path, command)
        errors = re.search(r"with (\d+) errors?\)", event.body["subject"])
        failed = sum(1 for c in listed if c["status"] == "failed")
        assert failed == (int(errors.group(1)) if errors else 0), path
        transcripts += 1
        commands += len(echoed)
    assert transcripts == 25 and commands > 900


def test_a_number_inside_a_new_title_is_not_a_bug():
    raw = (FIXTURES / "debbugs" / "control-every-verb.eml").read_bytes()
    (event,) = PIPELINE.process(raw).events
    retitle = event.body["commands"][1]
    assert retitle["args"][1].endswith("failed with error code 8")
    assert 8 not in retitle["bugs"] and 8 not in event.body["bugs"]
    assert "#8" not in event.body["summary"]


def test_a_capped_field_is_marked_truncated():
    report = (FIXTURES / "debbugs" / "report.eml").read_bytes()
    head, _, _ = report.partition(b"\n\n")
    long = head + b"\n\nPackage: hello\n\n" + b"x" * (BODY_CAP + 10) + b"\n"
    (event,) = PIPELINE.process(long).events
    assert len(event.body["body"]) == BODY_CAP and event.body["truncated"] == ["body"]
    (event,) = PIPELINE.process(report).events
    assert event.body["truncated"] == []


def test_a_transcript_keeps_every_command_but_caps_its_replies():
    raw = (FIXTURES / "debbugs" / "control-transcript.eml").read_bytes()
    head = raw.split(b"\n\n", 1)[0].replace(b"quoted-printable", b"8bit")
    bugs = range(1_000_000, 1_000_400)
    title = "a title of some length, as debbugs repeats it above every answer " * 2
    lines = ["Processing commands for control@bugs.debian.org:", ""]
    for bug in bugs:
        lines += [f"> tags {bug} + patch", f"Bug #{bug} [hello] {title}", "Added tag(s) patch."]
    (event,) = PIPELINE.process(head + b"\n\n" + "\n".join(lines).encode()).events
    commands = event.body["commands"]
    assert [c["bugs"] for c in commands] == [[b] for b in bugs]
    assert all(c["status"] == "applied" for c in commands)
    assert sum(len(line) for c in commands for line in c["reply"]) <= REPLY_BUDGET
    assert commands[-1]["reply"] == [] and event.body["truncated"] == ["commands.reply"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("against hello: hello: segfaults", "against hello: segfaults"),
        ("a\nsummary  over\tlines", "a summary over lines"),
        ("#1 tags #1 fixed", "#1 tags #1 fixed"),
    ],
)
def test_summary_line(text: str, expected: str):
    assert summary_line(text) == expected


def test_a_long_summary_is_cut_at_a_word_and_ellipsised():
    line = summary_line("word " * 100)  # every word the same: one is kept
    assert line == "word"
    long = summary_line(" ".join(f"w{i}" for i in range(100)))
    assert len(long) <= SUMMARY_CAP and long.endswith("…")
    assert long[:-1].split()[-1] in {f"w{i}" for i in range(100)}


def answered_commands(raw: bytes) -> list[tuple[str, list[str]]]:
    """Each command debbugs echoed with the lines it answered, read without the parser."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    commands: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        if line.rstrip() == "--":
            break
        if line.startswith(">"):
            commands.append((line[1:].strip(), []))
        elif commands and line.strip():
            commands[-1][1].append(_rfc2047(line.strip()))
    return commands


def _rfc2047(line: str) -> str:
    """A line with the encoded names debbugs copies from headers decoded."""
    return re.sub(
        r"=\?[^?\s]+\?[bqBQ]\?[^?\s]*\?=",
        lambda m: str(email.header.make_header(email.header.decode_header(m[0]))),
        line,
    )


def _listed(text: str) -> list[str]:
    return [v for v in re.split(r",\s+(?:and\s+)?|\s+and\s+", text.strip().rstrip(".")) if v]


def answer_counts(answer: list[str]) -> Counter[tuple[str, str]]:
    """How many changes of each (field, op) the answer's own words report: the versions and
    tags its clauses list, its closings and reopenings."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in answer:
        if line in ("Marked Bug as done",) or line.startswith("Bug closed, send any further"):
            counts["state", "done"] += 1
        if line.startswith("Bug reopened") or line.rstrip(".").endswith(" and reopened"):
            counts["state", "open"] += 1
        for clause in line.rstrip(".").removesuffix(" and reopened").split("; "):
            for pattern, key in (
                (
                    r"^(?:No longer|no longer) marked as found in versions? (.+)$",
                    ("found", "remove"),
                ),
                (
                    r"^(?:No longer|no longer) marked as fixed in versions? (.+)$",
                    ("fixed", "remove"),
                ),
                (r"^[Mm]arked as found in versions? (.+)$", ("found", "add")),
                (r"^[Mm]arked as fixed in versions? (.+)$", ("fixed", "add")),
                (r"^[Aa]dded tag\(s\) (.+)$", ("tags", "add")),
                (r"^[Rr]emoved tag\(s\) (.+)$", ("tags", "remove")),
            ):
                match = re.match(pattern, clause)
                if match:
                    counts[key] += len(_listed(match.group(1)))
    return counts


COUNTED = {("state", "done"), ("found", "add"), ("found", "remove"), ("fixed", "add"),
           ("fixed", "remove"), ("tags", "add"), ("tags", "remove")}  # fmt: skip
# Fields whose values the BTS writes out in its answer.
SPELLED = {"severity", "tags", "found", "fixed", "package", "forwarded", "owner", "submitter",
           "title", "affects", "blocked_by", "merged_with"}  # fmt: skip


def check_effects_against_answers(path: Path, raw: bytes, commands: list[dict[str, Any]]) -> int:
    """Every effect taken from an answer agrees with the answer's own words; returns how
    many reopenings the answers report."""
    reopenings = 0
    for (words, answer), command in zip(answered_commands(raw), commands, strict=True):
        if command["effects_from"] != "answer":
            continue
        text = "\n".join(answer)
        made = Counter((e["field"], e["op"] if e["field"] != "state" else e["value"])
                       for e in command["effects"])  # fmt: skip
        said = answer_counts(answer)
        where = (path.name, words)
        for key in COUNTED:
            assert made[key] == said[key], (where, key, made[key], said[key])
        assert made["state", "open"] >= said["state", "open"], where
        assert (made["state", "open"] > 0) == (said["state", "open"] > 0), where
        if "not doing anything" in text or "doing nothing" in text:
            declined = [line for line in answer if "doing" in line]
            assert len(declined) == 1 and not [
                e for e in command["effects"] if e["field"] == "state"
            ], where
        for effect in command["effects"]:
            if effect["field"] in SPELLED and effect["value"] is not None:
                assert effect["value"] in text, (where, effect)
        reopenings += said["state", "open"]
    return reopenings


def test_every_corpus_transcript_effect_is_what_the_bts_answered(corpus: Path):
    transcripts = 0
    for path, event in corpus_events(corpus):
        if event.topic == "debbugs.bug.control":
            check_effects_against_answers(path, path.read_bytes(), event.body["commands"])
            transcripts += 1
    assert transcripts == 25


def test_the_fixture_transcripts_report_what_the_bts_answered_reopenings_included():
    reopenings = 0
    for path, event in fixture_events():
        if event.topic == "debbugs.bug.control":
            reopenings += check_effects_against_answers(
                path, path.read_bytes(), event.body["commands"]
            )
    assert reopenings == 2  # control-as-applied: 1090002 and 1090003
